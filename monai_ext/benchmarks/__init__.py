# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Quality and speed benchmarks (run through scripts/benchmark_quality.py and scripts/benchmark_speed.py).

A quality benchmark is a module ``monai_ext.benchmarks.quality_<method>`` exposing
``run(out_dir: pathlib.Path, quick: bool = False, seed: int = 0) -> dict`` that returns::

    {
      "method": "coin",
      "rows": [  # one per configuration in the report table
        {"method": "COIN", "data": "synthetic H&E (held-out, 8 tiles)", "budget": "no labels",
         "metrics": {"aji": 0.61, "pq": 0.55, "dice": 0.80}},
        ...
      ],
      "summary": {"ours": 0.61, "upper_bound": 0.70, "ratio": 0.87, "paper_ratio": 0.85, "metric": "aji",
                  "budget": "no labels", "data": "..."},
      "targets": {"<target in words>": true/false, ...},
      "markdown": "<the method's own report tables>",
      "seconds": 123.4,
    }

``quick=True`` is the reduced version run in CI (a few minutes on 2 CPU cores).
"""
