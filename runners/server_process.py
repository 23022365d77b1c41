"""The lab's HTTP object server (lab/objects_server.py) as a child process, for trials and tests.

`start_server_process(root, ...)` runs `python -m lab.objects_cli serve` on the project's interpreter and
waits for its `listening on http://HOST:PORT` line; `ServerProcess` stops (SIGTERM, then SIGKILL) or kills
it. The server is started by argument list, never imported: the harness sits below the lab's CLIs.
Objects live on the server at <root>/<bucket>/<key> (`bucket_root`).

A token goes to the child in its environment (TQ_STORE_TOKEN), never on its command line (where `ps`
shows it); without one, a TQ_STORE_TOKEN of the parent's environment is not passed on, so the server
needs no token unless asked to (`ServerProcess.token` is what a client must send, or "").
"""
import os
import re
import selectors
import signal
import subprocess
import tempfile
import time

from tqengine.objects.http import DEFAULT_BUCKET

from .project import ROOT as REPO_ROOT
from .project import default_python

_LISTENING = re.compile(rb"listening on (http://(\S+):(\d+))")


class ServerProcess:
    """A running `objects serve` child: `.url`, `.port`, `.pid`, `.stop()`; a context manager."""

    def __init__(self, proc, url, port, stderr_file, token=""):
        self.proc = proc
        self.token = token
        self.url = url
        self.port = port
        self.pid = proc.pid
        self._stderr = stderr_file

    def stop(self, timeout=5.0):
        """SIGTERM, wait up to `timeout`, then SIGKILL; return the exit code."""
        proc = self.proc
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                proc.wait(timeout=timeout)
        self._close_files()
        return proc.returncode

    def kill(self, timeout=5.0):
        """SIGKILL at once (a crash, for tests); return the exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=timeout)
        self._close_files()
        return self.proc.returncode

    def stderr_text(self):
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def _close_files(self):
        for f in (self.proc.stdout, self._stderr):
            try:
                f.close()
            except (OSError, AttributeError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def server_argv(root, latency_ms=0.0, error_rate=0.0, seed=0, python=None, host="127.0.0.1", port=0,
                allowed_hosts=(), max_connections=None):
    """The argument list that starts the server. It runs `-m lab.objects_cli serve` (the same code as
    `python -m lab objects serve`) so that the server does not depend on every other `python -m lab`
    subcommand module importing cleanly. (A token is passed in the environment: start_server_process.)"""
    argv = [python or default_python(), "-m", "lab.objects_cli", "serve", "--root", os.fspath(root),
            "--host", host, "--port", str(int(port)), "--latency-ms", repr(float(latency_ms)),
            "--error-rate", repr(float(error_rate)), "--seed", str(seed), "--exit-with-parent"]
    for name in allowed_hosts:
        argv += ["--allow-host", name]
    if max_connections is not None:
        argv += ["--max-connections", str(int(max_connections))]
    return argv


def start_server_process(root, latency_ms=0.0, error_rate=0.0, seed=0, python=None, host="127.0.0.1",
                         port=0, startup_timeout=15.0, token="", allowed_hosts=(), max_connections=None):
    """Start the object server as a child process and wait (up to startup_timeout) for its port line.
    With `token`, the server answers only requests that carry `Authorization: Bearer <token>`."""
    argv = server_argv(root, latency_ms, error_rate, seed, python, host, port, allowed_hosts, max_connections)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TQ_STORE_TOKEN", None)
    if token:
        env["TQ_STORE_TOKEN"] = token
    stderr_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr_file)
    deadline = time.monotonic() + startup_timeout
    buffered = b""
    match = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while match is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"object server printed no port within {startup_timeout}s")
                if not sel.select(timeout=left):
                    continue
                data = os.read(proc.stdout.fileno(), 4096)
                if not data:
                    proc.wait(timeout=5)
                    raise RuntimeError(f"object server exited with {proc.returncode} before listening")
                buffered += data
                if b"\n" in buffered:
                    match = _LISTENING.search(buffered.split(b"\n", 1)[0])
                    if match is None:
                        raise RuntimeError(f"unexpected first line from the object server: {buffered[:200]!r}")
    except BaseException as exc:
        server = ServerProcess(proc, None, None, stderr_file)
        server.stop(timeout=2.0)
        tail = server.stderr_text()[-1500:]
        if isinstance(exc, (TimeoutError, RuntimeError)):
            raise RuntimeError(f"{exc}; argv={argv}; stderr: {tail}") from None
        raise
    return ServerProcess(proc, match.group(1).decode(), int(match.group(3)), stderr_file, token=token or "")


def bucket_root(server_root, bucket=DEFAULT_BUCKET):
    """The directory where a server started on `server_root` keeps the objects of `bucket`."""
    return os.path.join(server_root, bucket)
