#!/usr/bin/env python
"""Speed of every bundle (training step, inference images/s, peak memory) against Cellpose and HoVerNet.

Usage: python scripts/benchmark_speed.py [all | coin points em spoco] [--out reports] [--no-peers]
Writes reports/speed.json and reports/speed.md. Also: python -m monai_ext benchmark speed.
"""

import sys

from monai_ext.benchmarks.speed import main

if __name__ == "__main__":
    sys.exit(main())
