"""Provenance of a measurement: which code (the git commit, and a digest of uncommitted changes, new untracked
Python sources included) and which
machine and interpreter produced it. One owner for the labels the sweep's trial records, trials.csv and the
benchmark's JSON files carry, so a result can always be told from one of other code or another machine."""
import hashlib
import os
import subprocess

from runners import spawn

ROOT = spawn.ROOT


def git_commit(repo=ROOT):
    """(commit or None, dirty flag or None) of the project checkout; dirty counts uncommitted changes to tracked
    files and untracked, not ignored Python sources."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, stdin=subprocess.DEVNULL)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        if status.returncode != 0:
            return head.stdout.strip() or None, None
        untracked = _untracked_sources(repo)
        dirty = bool(status.stdout.strip()) or (None if untracked is None else bool(untracked))
        return head.stdout.strip() or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def code_label(commit, dirty, changes=None):
    """What a trial record and trials.csv say of the code that measured a trial: the commit, `-dirty` added
    when the checkout had uncommitted changes, with `.<digest>` of those changes when known (two different
    sets of edits on one commit are then two labels); None outside a git checkout."""
    if commit is None:
        return None
    if not dirty:
        return commit
    return commit + "-dirty" + (f".{changes}" if changes else "")


def _untracked_sources(repo):
    """Paths (relative, sorted) of the untracked, not ignored Python sources in `repo`: code that runs but that
    `git diff` does not show (a new module not yet added). None when git cannot say."""
    try:
        listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z", "--", "*.py"],
                                cwd=repo, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None
    return sorted(name for name in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if name)


def _file_digest(path):
    """sha256 hex of a file's bytes, read in chunks; a marker when it cannot be read (gone, unreadable)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as source:
            for chunk in iter(lambda: source.read(1 << 16), b""):
                digest.update(chunk)
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"
    return digest.hexdigest()


def uncommitted_digest(repo=ROOT):
    """The first 12 hex digits of a sha256 over `git diff HEAD` (tracked files' uncommitted changes) and the
    path and content of each untracked Python source in `repo`, or None when git cannot say."""
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--no-ext-diff", "--no-color", "--binary"], cwd=repo,
                              capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    untracked = _untracked_sources(repo)
    if diff.returncode != 0 or untracked is None:
        return None
    digest = hashlib.sha256(diff.stdout)
    for name in untracked:
        digest.update(b"\0untracked\0" + name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(_file_digest(os.path.join(repo, name)).encode())
    return digest.hexdigest()[:12]


def setup_label(machine, trial_python):
    """Where a trial was measured, as a trial record and trials.csv say it: the CPU model and count and the
    trial interpreter, e.g. `AMD EPYC, 2 CPUs; CPython 3.11.7`."""
    cpu = machine.get("cpu_model") or machine.get("machine") or "unknown CPU"
    return (f"{cpu}, {machine.get('cpu_count') or '?'} CPUs; {trial_python.get('implementation') or 'Python'} "
            f"{trial_python.get('python_version') or '?'}")


def code_now(repo=ROOT):
    """code_label() of the checkout as it is now: {"git_commit": ..., "git_dirty": ..., "code": label}."""
    commit, dirty = git_commit(repo)
    return {"git_commit": commit, "git_dirty": dirty,
            "code": code_label(commit, dirty, uncommitted_digest(repo) if dirty else None)}
