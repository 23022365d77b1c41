"""Provenance of a measurement: which code (the git commit, and a digest of uncommitted changes) and which
machine and interpreter produced it. One owner for the labels the sweep's trial records, trials.csv and the
benchmark's JSON files carry, so a result can always be told from one of other code or another machine."""
import hashlib
import subprocess

from runners import spawn

ROOT = spawn.ROOT


def git_commit(repo=ROOT):
    """(commit or None, dirty flag or None) of the project checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, stdin=subprocess.DEVNULL)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
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


def uncommitted_digest(repo=ROOT):
    """The first 12 hex digits of the sha256 of `git diff HEAD` (tracked files' uncommitted changes) in `repo`,
    or None when git cannot say."""
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--no-ext-diff", "--no-color", "--binary"], cwd=repo,
                              capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if diff.returncode != 0:
        return None
    return hashlib.sha256(diff.stdout).hexdigest()[:12]


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
