#!/usr/bin/env python3
"""Baseline vs engine, as the user named it: `python benchmark.py --help`.

A thin entry point: everything lives in lab/benchmark.py (installed as `tq-lab benchmark`... see README).
"""
import sys

from lab.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
