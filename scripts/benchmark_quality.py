#!/usr/bin/env python
"""Quality benchmarks of the bundles on held-out synthetic data (fixed seeds).

Usage: python scripts/benchmark_quality.py {coin,points,em,spoco,all} [--quick] [--out reports] [--seed 0] [--from-reports]

Writes reports/quality_<method>.json and .md, and for ``all`` one combined table reports/quality.md (also put into the
README's Results):
method, data, weak-label budget, our score, supervised upper bound, ratio, the paper's own ratio.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from monai_ext.benchmarks.readme import README, update_readme_section
from monai_ext.data.sample import canonical_bundle

METHODS = ("coin", "points", "em", "spoco")
#: each method's bundle documentation, whose "Measured" section gets the method's report
BUNDLE_DOCS = {m: Path(__file__).resolve().parents[1] / "bundles" / canonical_bundle(m) / "docs" / "README.md"
               for m in METHODS}


def run_one(method: str, out: Path, quick: bool, seed: int) -> dict:
    module = importlib.import_module(f"monai_ext.benchmarks.quality_{method}")
    start = time.time()
    result = module.run(out / f"work_{method}", quick=quick, seed=seed)
    result.setdefault("seconds", time.time() - start)
    result["quick"] = quick
    (out / f"quality_{method}.json").write_text(json.dumps(result, indent=2, default=float))
    (out / f"quality_{method}.md").write_text(result.get("markdown", ""))
    return result


def combined_table(results: list[dict]) -> str:
    lines = [
        "| method | data | weak-label budget | metric | ours | supervised upper bound | ratio | paper's ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.get("summary", {})
        fmt = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else str(v if v is not None else "-")  # noqa: E731
        lines.append(
            f"| {r.get('method')} | {s.get('data', '-')} | {s.get('budget', '-')} | {s.get('metric', '-')} | "
            f"{fmt(s.get('ours'))} | {fmt(s.get('upper_bound'))} | {fmt(s.get('ratio'))} | {fmt(s.get('paper_ratio'))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method", choices=(*METHODS, "all"))
    ap.add_argument("--quick", action="store_true", help="reduced version (as run in CI)")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-reports", action="store_true",
                    help="only combine the existing reports/quality_<method>.json into the table (no training)")
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="do not update the README's Results")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = METHODS if args.method == "all" else (args.method,)
    if args.from_reports:  # combine the latest per-method reports without re-running them
        missing = [m for m in methods if not (out / f"quality_{m}.json").is_file()]
        if missing:
            ap.error(f"no report for {missing} in {out}: run them first")
        results = [json.loads((out / f"quality_{m}.json").read_text()) for m in methods]
        args.quick = any(r.get("quick") for r in results)
    else:
        results = [run_one(m, out, args.quick, args.seed) for m in methods]
    table = combined_table(results)
    if args.method == "all":
        (out / "quality.md").write_text(table)
        kinds = {m: ("reduced (CI)" if r.get("quick") else "full") + f", {r.get('seconds', 0) / 60:.1f} min"
                 for m, r in zip(methods, results)}
        header = "Benchmark versions: " + "; ".join(f"{m} {k}" for m, k in kinds.items()) + "."
        per_method = "\n".join(f"#### {r.get('method')}\n\n{r.get('markdown', '').strip()}\n" for r in results)
        if args.readme and update_readme_section("quality", f"{header}\n\n{table}\n{per_method}"):
            print(f"README results updated ({README})")
    if args.readme:
        for m, r in zip(methods, results):
            kind = "reduced CI version (`--quick`)" if r.get("quick") else "full version"
            body = f"Latest {kind}, {r.get('seconds', 0) / 60:.1f} min:\n\n{r.get('markdown', '').strip()}"
            if update_readme_section("quality", body, BUNDLE_DOCS[m]):
                print(f"bundle documentation updated ({BUNDLE_DOCS[m]})")
    print(table)
    for r in results:
        for target, ok in r.get("targets", {}).items():
            print(f"[{'PASS' if ok else 'MISS'}] {r.get('method')}: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
