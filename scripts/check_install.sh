#!/usr/bin/env bash
# The project installs as a user would install it: `pip install .` into a fresh venv, then, from another
# folder, the console scripts answer --help and the README's engine example runs. Used by .ci/run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY="${PYTHON:-$ROOT/.venv/bin/python}"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --disable-pip-version-check -q "$ROOT" 2>&1 | grep -v '^WARNING: Location' || true
cd "$WORK"
for cmd in tq-engine tq-lab tq-benchmark; do
  "$WORK/venv/bin/$cmd" --help >/dev/null
done
# the README's engine example, as written (between the engine-example markers)
sed -n '/<!-- engine-example -->/,/<!-- \/engine-example -->/p' "$ROOT/README.md" | sed '1,2d;$d' | sed '$d' > example.py
"$WORK/venv/bin/python" example.py
echo "installed in a fresh venv: console scripts answer --help, the README's engine example runs"
