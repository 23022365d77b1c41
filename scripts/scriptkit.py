"""What the measurement scripts here share (ab_overhead.py, gil_budget.py, opcount.py): an argument parser
whose errors are one line on stderr with exit code 2, running one measurement in a fresh Python process
whose last line of stdout is its result as JSON, and the start and end of such a child's program. Imported by the
scripts as `scriptkit` (the scripts folder is first on sys.path when one of them runs); the code a child runs
stands alone, so a child can import an older checkout (ab_overhead.py, opcount.py) without this module."""
import argparse
import json
import subprocess
import sys

# The start of a child program's run, once it has imported os, tempfile, make_tasks and ensure_objects and read
# `tasks_n` and `scratch`: its scratch folder `work`, then inside `try:` its `tasks` (tiny sources, seed 1)
# with their source objects under work/store. MEASURE_AND_PRINT closes the `try:`.
SCRATCH_AND_TASKS = """work = tempfile.mkdtemp(prefix="tq-child-", dir=scratch)
try:
    tasks = make_tasks(tasks_n, seed=1, object_bytes=0)
    ensure_objects(tasks, os.path.join(work, "store"))
"""

# The end of a child program that has made `work` (its scratch folder), `adapter` (not yet started), `tasks`
# and `clients` inside `try:`: one closed-loop run (lab.overhead.measure), its result printed as JSON (with
# the child's EXTRA dict, if it made one), the scratch folder removed whatever happens. Text, not code of
# this module: the child stands alone.
MEASURE_AND_PRINT = """    adapter.start()
    try:
        result = measure(adapter, tasks, clients, 600.0)
    finally:
        adapter.stop()
    print(json.dumps({**result, **globals().get("EXTRA", {})}))
finally:
    shutil.rmtree(work, ignore_errors=True)
"""


class Parser(argparse.ArgumentParser):
    """argparse with `<script>: error: <message>` as one line on stderr and exit code 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def run_child(code, argv, what, timeout, **popen):
    """Run `code` (python -c) with `argv` in this interpreter and return the JSON of its last stdout line;
    RuntimeError naming `what` (and the child's last line of stderr) when it exits non-zero, prints no JSON or
    runs past `timeout` seconds (it is killed then). `popen`: cwd, env."""
    try:
        proc = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                              timeout=timeout, **popen)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish within {timeout} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} failed: {tail}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"{what} printed no result") from None
