"""Where the project lives and which interpreter runs its child processes (trials, the object server)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_python():
    """The project's .venv interpreter when it exists, else the running one."""
    for candidate in (os.path.join(ROOT, ".venv", "bin", "python"),
                      os.path.join(ROOT, ".venv", "Scripts", "python.exe")):
        if os.path.exists(candidate):
            return candidate
    return sys.executable
