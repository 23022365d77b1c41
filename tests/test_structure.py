"""The layers of docs/ARCHITECTURE.md, checked on the code's own imports: arrows point down only.

entry points -> lab -> runners -> tqengine -> tqcontract; analysis -> tqcontract; input_new (the baseline)
imports nothing of the project. Every import statement is read, including those inside functions.
"""
import ast
import os
import re

import pytest

from tests.conftest import ROOT

PACKAGES = ("tqcontract", "tqengine", "runners", "lab", "analysis", "input_new")
# what each package may import of the project (besides itself)
ALLOWED = {
    "tqcontract": set(),
    "tqengine": {"tqcontract"},
    "analysis": {"tqcontract"},
    "runners": {"tqengine", "tqcontract", "input_new"},
    "lab": {"runners", "tqengine", "tqcontract", "analysis"},
    "input_new": set(),
}


def _modules(package):
    for folder, _dirs, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, ROOT), path


def _project_imports(path, package):
    """(line, imported top-level project package) for every import in the file; relative imports stay
    inside their package, so they are the package itself."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package] if node.level else [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                yield node.lineno, top


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = [f"{rel}:{line} imports {top}" for rel, path in _modules(package)
             for line, top in _project_imports(path, package)
             if top != package and top not in ALLOWED[package]]
    assert not wrong, "imports against the layers of docs/ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_the_entry_points_stay_thin_and_patch_no_sys_path():
    for name in ("task_queue_optimized.py", "benchmark.py"):
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            text = f.read()
        assert "sys.path" not in text, name
        assert len(text.splitlines()) < 20, f"{name} is an entry point: its code belongs in lab/"


@pytest.mark.timeout(60)
def test_the_lab_command_line_builds_its_parser_without_the_http_client_the_report_or_the_engine():
    """`python -m lab` imports every subcommand's module to build its parser: those must not pull in
    requests (the token check of `objects serve` took 70 ms of it), the report and its charts, or the engine
    and Pillow (the engine's settings, tqengine.config, load alone: the package exports load on first use,
    which took 29 ms of a 0.1 s start); the command that needs them imports them."""
    import subprocess
    import sys
    probe = ("import sys; from lab.__main__ import build_parser; build_parser(); "
             "print(sorted(m for m in ('requests', 'urllib3', 'analysis.report', 'analysis.charts', "
             "'tqengine.pool', 'tqengine.processor', 'PIL') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.timeout(60)
def test_the_scripts_refuse_a_venv_of_an_older_python_and_leave_it_alone(tmp_path):
    """A .venv made with Python 3.9 was used as it was: pip installed into it and the tests failed on 3.11
    syntax far from the cause. Now scripts/venv.sh stops with one line naming the version, exit 2, before
    installing anything, and removes nothing (the folder may be the user's)."""
    import shutil
    import subprocess
    for name in ("scripts/venv.sh", "requirements.txt", "pyproject.toml"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    fake = tmp_path / ".venv" / "bin" / "python"
    os.makedirs(fake.parent)
    fake.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python 3.9.18"; exit 0; fi\n'
                    'echo "$@" >> "$(dirname "$0")/calls"; exit 1\n')
    fake.chmod(0o755)
    proc = subprocess.run(["bash", "-c", "source scripts/venv.sh"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 2, proc.stderr
    assert "holds Python 3.9.18" in proc.stderr and "needs Python 3.11" in proc.stderr
    calls = (fake.parent / "calls").read_text() if (fake.parent / "calls").exists() else ""
    assert "pip" not in calls and fake.exists()


@pytest.mark.timeout(60)
def test_the_scripts_refuse_a_venv_path_that_is_not_a_folder_and_leave_it_alone(tmp_path):
    """A file named .venv (a user's) made `python -m venv` fail with "Unable to create directory", which names
    no cause and no way out. Now scripts/venv.sh says what is in the way and how to go on, exit 2, and the
    file is left as it was."""
    import shutil
    import subprocess
    for name in ("scripts/venv.sh", "requirements.txt", "pyproject.toml"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    (tmp_path / ".venv").write_text("my notes\n")
    proc = subprocess.run(["bash", "-c", "source scripts/venv.sh"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a folder" in lines[0] and "move it away" in lines[0], proc.stderr
    assert (tmp_path / ".venv").read_text() == "my notes\n"


def test_the_windows_script_makes_the_same_refusals_as_the_bash_one():
    """run_tests.ps1 cannot run here (no PowerShell), so this reads it: it lagged behind scripts/venv.sh, went
    on past a .venv that is not a folder and past a failed `python -m venv`, and said "Python not found" as a
    PowerShell error record. Each refusal of venv.sh has its counterpart, as one line on stderr with its exit."""
    with open(os.path.join(ROOT, "run_tests.ps1"), encoding="utf-8") as script:
        text = script.read()
    assert "-not $venvItem.PSIsContainer" in text and "is not a folder" in text     # a file named .venv
    assert "older than 3.11" in text                                                   # an old Python's .venv
    assert "not found on PATH" in text and "Write-Error" not in text                   # no Python at all
    assert "could not create .venv" in text                                            # venv itself failed
    for refusal in ("is not a folder", "older than 3.11", "not found on PATH", "could not create .venv"):
        at = text.index(refusal)
        assert "[Console]::Error.WriteLine(" in text[text.rfind("\n", 0, text.rfind("\n", 0, at)):at], refusal
        assert re.search(r"exit [12]\b", text[at:at + 200]), refusal
