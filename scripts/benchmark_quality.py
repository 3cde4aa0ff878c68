#!/usr/bin/env python
"""Quality benchmarks of the bundles on held-out synthetic data (fixed seeds).

Usage: python scripts/benchmark_quality.py {coin,points,em,spoco,all} [--quick] [--out reports] [--seed 0]

Writes reports/quality_<method>.json and .md, and for ``all`` one combined table reports/quality.md:
method, data, weak-label budget, our score, supervised upper bound, ratio, the paper's own ratio.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

METHODS = ("coin", "points", "em", "spoco")


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
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = METHODS if args.method == "all" else (args.method,)
    results = [run_one(m, out, args.quick, args.seed) for m in methods]
    table = combined_table(results)
    if args.method == "all":
        (out / "quality.md").write_text(table)
    print(table)
    for r in results:
        for target, ok in r.get("targets", {}).items():
            print(f"[{'PASS' if ok else 'MISS'}] {r.get('method')}: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
