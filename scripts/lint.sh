#!/usr/bin/env bash
# Lint and type checks (ruff on the whole tree, mypy on tqengine and tqcontract as pyproject.toml says),
# with the developer tools of requirements-dev.txt installed into .venv. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
STAMP="$VENV/.requirements-dev.sha256"
WANT="$(sha256sum requirements-dev.txt | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing requirements-dev.txt into .venv" >&2
  python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
  echo "$WANT" > "$STAMP"
fi
ruff check .
mypy
