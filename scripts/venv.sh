# Sourced by run_all.sh, run_tests.sh and .ci/run: make sure .venv exists and holds requirements.txt and
# the project itself (pip install -e ., so tqengine, tqcontract, lab, runners and analysis import from
# the checkout and the console scripts tq-engine, tq-lab and tq-benchmark exist). Reinstalls only when
# requirements.txt or pyproject.toml changed since the last install (a stamp in .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
pick_python() {
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
      if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
        echo "$candidate"; return 0
      fi
    fi
  done
  echo "error: Python 3.11 or newer is required and was not found on PATH" >&2
  return 1
}
STAMP="$VENV/.requirements.sha256"
if { [ -e "$VENV" ] || [ -L "$VENV" ]; } && [ ! -d "$VENV" ]; then
  echo "error: $VENV is not a folder (a file or a broken link is in the way of the project's virtual" \
       "environment): move it away (it is not removed for you) and run this again" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  # missing, or its interpreter gone (a broken link after Python moved): (re)create it, and install again
  PY="$(pick_python)"
  echo "creating .venv with $("$PY" --version 2>&1)" >&2
  for link in "$VENV"/bin/python*; do     # dangling interpreter links: venv would keep them as they are
    if [ -L "$link" ] && [ ! -e "$link" ]; then rm -f "$link"; fi
  done
  "$PY" -m venv "$VENV"
  rm -f "$STAMP"
elif ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: $VENV holds $("$VENV/bin/python" --version 2>&1), and this project needs Python 3.11 or newer;" \
       "move that folder away (it is not removed for you) and run this again" >&2
  exit 2
fi
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing requirements.txt and the project (pip install -e .) into .venv" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$ROOT/requirements.txt"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e "$ROOT"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
