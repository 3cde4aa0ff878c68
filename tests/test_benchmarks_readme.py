"""The README's Results tables are replaced between their markers by the benchmark scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_ext.benchmarks.readme import README, update_readme_section


def test_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:speed:start -->\nold\n<!-- results:speed:end -->\ntail\n")
    assert update_readme_section("speed", "| a | b |\n|---|---|\n| 1 | 2 |\n", readme)
    text = readme.read_text()
    assert "old" not in text and "| 1 | 2 |" in text
    assert text.startswith("intro\n") and text.endswith("tail\n")
    assert update_readme_section("speed", "second", readme) and "| 1 | 2 |" not in readme.read_text()


def test_missing_or_broken_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    assert not update_readme_section("speed", "x", readme)  # no README
    readme.write_text("no markers\n")
    assert not update_readme_section("speed", "x", readme) and readme.read_text() == "no markers\n"
    readme.write_text("<!-- results:speed:end -->\n<!-- results:speed:start -->\n")
    with pytest.raises(ValueError, match="comes before"):
        update_readme_section("speed", "x", readme)


def test_repository_readme_has_every_results_section() -> None:
    text = README.read_text()
    for name in ("quality", "speed", "stages"):
        assert text.count(f"<!-- results:{name}:start -->") == 1 and text.count(f"<!-- results:{name}:end -->") == 1


def _run_quality_script(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Exit status of ``scripts/benchmark_quality.py`` run as ``__main__`` with ``argv``."""
    import runpy
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_quality.py"
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    return exit_info.value.code


def test_quality_table_from_existing_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmark_quality.py all --from-reports`` combines the per-method JSON reports without training."""
    import json

    methods = ("coin", "points", "em", "spoco")
    for k, m in enumerate(methods):
        summary = {"data": f"synthetic {m}", "budget": "points", "metric": "aji", "ours": 0.5 + k / 10,
                   "upper_bound": 0.8, "ratio": (0.5 + k / 10) / 0.8, "paper_ratio": 0.9}
        (tmp_path / f"quality_{m}.json").write_text(json.dumps(
            {"method": m, "summary": summary, "targets": {"t": k % 2 == 0}, "markdown": f"table {m}", "quick": True}))
    argv = ["all", "--from-reports", "--out", str(tmp_path), "--no-readme"]
    assert _run_quality_script(argv, monkeypatch) == 0
    table = (tmp_path / "quality.md").read_text().splitlines()
    assert len(table) == 2 + len(methods)
    assert table[2].startswith("| coin | synthetic coin | points | aji | 0.500 | 0.800 | 0.625 | 0.900 |")
    (tmp_path / "quality_em.json").unlink()
    assert _run_quality_script(argv, monkeypatch) == 2  # argparse error: a report is missing


def test_every_bundle_doc_has_a_quality_section_filled_from_reports() -> None:
    root = README.parent
    for bundle in ("coin_histopathology", "point_fluorescence", "em_mito_wda", "spoco_sparse"):
        text = (root / "bundles" / bundle / "docs" / "README.md").read_text()
        assert text.count("<!-- results:quality:start -->") == 1 and text.count("<!-- results:quality:end -->") == 1
        assert "PLACEHOLDER" not in text
