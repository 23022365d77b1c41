"""Run one trial in a fresh interpreter: argument list (no shell), minimal recorded environment,
its own process group, a hard timeout that kills the whole group. Shared by the lab sweep and benchmark.py.
"""
import json
import os
import signal
import subprocess
import time

from runners.project import ROOT, default_python

ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "TQ_SCRATCH_DIR")


def trial_env(extra=None):
    """The minimal environment a trial runs with (recorded in the results)."""
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    env.update({"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": ROOT,
                "PYTHONUNBUFFERED": "1"})
    if extra:
        env.update(extra)
    return env


def spawn_trial(params, python=None, timeout_s=300.0, env=None, module="runners.trial"):
    """Run `python -m runners.trial '<params json>'`; return a dict:
    {"status": "ok"|"timeout"|"error", "result": metrics dict or None, "returncode", "stderr_tail",
     "wall_s", "argv", "env"}.
    """
    python = python or default_python()
    env = trial_env() if env is None else env
    argv = [python, "-m", module, json.dumps(params, sort_keys=True)]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    except BaseException:  # Ctrl-C / SIGTERM in the caller: the trial's group must not outlive it
        _kill_group(proc)
        proc.wait()
        raise
    wall = time.perf_counter() - started
    tail = err.decode("utf-8", "replace")[-2000:]
    outcome = {"status": "ok", "result": None, "returncode": proc.returncode, "stderr_tail": tail,
               "wall_s": round(wall, 3), "argv": argv[:3] + ["<params>"], "env": env}
    if timed_out:
        outcome["status"] = "timeout"
        return outcome
    if proc.returncode != 0:
        outcome["status"] = "error"
        return outcome
    try:
        outcome["result"] = json.loads(out.decode("utf-8"))
    except ValueError:
        outcome["status"] = "error"
        outcome["stderr_tail"] = (tail + "\n[trial printed no valid JSON on stdout]")[-2000:]
    return outcome


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
