#!/usr/bin/env python3
"""The engine's command line, as the user named it: `python task_queue_optimized.py --help`.

A thin entry point: everything lives in lab/engine_cli.py (installed as the `tq-engine` command).
"""
import sys

from lab.engine_cli import main

if __name__ == "__main__":
    sys.exit(main())
