#!/usr/bin/env bash
# Sweep a grid (default experiments/grid.json, about 10 minutes on 2 cores) and write its report.
# Usage: ./run_all.sh [GRID] [--out DIR]   e.g. ./run_all.sh experiments/quick.json  (under a minute)
# GRID is read relative to the folder you run this from, else to the project. Results go to
# data/sweeps/<the grid's name>/ unless --out says otherwise. Rerunning resumes the sweep (trials already
# ok are kept); Ctrl-C stops it and the next run resumes. Exit 0 when every trial was ok, 1 when some
# failed or the sweep was interrupted (a report of what finished is still written), 2 for a bad grid.
set -euo pipefail
GRID="experiments/grid.json"
OUT=""
if [ $# -gt 0 ] && [ "$1" != "--out" ]; then
  GRID="$1"
  shift
fi
if [ $# -gt 0 ]; then
  if [ "$1" = "--out" ] && [ $# -eq 2 ]; then
    OUT="$2"
  else
    echo "usage: ./run_all.sh [GRID] [--out DIR]" >&2
    exit 2
  fi
fi
# paths the user typed are relative to where they typed them
if [ -e "$GRID" ]; then GRID="$(cd "$(dirname "$GRID")" && pwd)/$(basename "$GRID")"; fi
if [ -n "$OUT" ]; then
  mkdir -p "$(dirname "$OUT")" 2>/dev/null || true
  OUT="$(cd "$(dirname "$OUT")" 2>/dev/null && pwd || dirname "$OUT")/$(basename "$OUT")"
fi
cd "$(dirname "$0")"
source scripts/venv.sh
NAME="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$GRID" 2>/dev/null || true)"
if [ -z "$NAME" ]; then
  python -m lab sweep "$GRID"   # prints the one-line reason and exits 2
  exit 2
fi
OUT="${OUT:-data/sweeps/$NAME}"
interrupted=0
trap 'interrupted=1' INT TERM HUP
status=0
python -m lab sweep "$GRID" --out "$OUT" || status=$?
trap - INT TERM HUP
if [ "$status" -eq 2 ]; then
  exit 2
fi
if [ -f "$OUT/sweep.json" ]; then
  python -m lab report "$OUT" >/dev/null
  echo "report: $OUT/report.md"
fi
if [ "$interrupted" -eq 1 ]; then
  echo "interrupted: run the same command again to resume" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "some trials failed (see $OUT/trials.csv); the report leaves them out" >&2
  exit 1
fi
