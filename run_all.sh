#!/usr/bin/env bash
# Sweep a grid (default experiments/grid.json, about 10 minutes on 2 cores) and write its report.
# Usage: ./run_all.sh [GRID]   e.g. ./run_all.sh experiments/quick.json  (under a minute)
# Rerunning resumes the sweep (trials already ok are kept). Exit 0 when every trial was ok, 1 when some
# failed (the report is still written), 2 for a bad grid.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
GRID="${1:-experiments/grid.json}"
NAME="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$GRID" 2>/dev/null || true)"
if [ -z "$NAME" ]; then
  python -m lab sweep "$GRID"   # prints the one-line reason and exits 2
  exit 2
fi
OUT="data/sweeps/$NAME"
status=0
python -m lab sweep "$GRID" --out "$OUT" || status=$?
if [ "$status" -eq 2 ]; then
  exit 2
fi
python -m lab report "$OUT" >/dev/null
echo "report: $OUT/report.md"
if [ "$status" -ne 0 ]; then
  echo "some trials failed (see $OUT/trials.csv); the report leaves them out" >&2
  exit 1
fi
