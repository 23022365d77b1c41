#!/usr/bin/env bash
# Create .venv if missing, install requirements.txt, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec python -m pytest -rA "$@"
