#!/usr/bin/env python
"""Per-stage inference time of every bundle (loading, network, each post-processing transform).

Usage: python scripts/benchmark_stages.py [all | coin points em spoco] [--threads 1] [--profile N] [--compare old.json]
Writes reports/stages.json and reports/stages.md.
"""

import sys

from monai_ext.benchmarks.stages import main

if __name__ == "__main__":
    sys.exit(main())
