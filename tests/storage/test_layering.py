"""ursula.storage imports only what DESIGN.md §3 allows: Twisted only in the committer."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALLOWED_URSULA = ("ursula.raft", "ursula.storage")


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_only_the_committer_imports_twisted():
    for path in sorted((ROOT / "ursula" / "storage").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "ursula":
                assert name.startswith(ALLOWED_URSULA), (path.name, name)
            if top == "twisted":
                assert path.name == "committer.py", (path.name, name)


def test_importing_the_journal_loads_no_twisted():
    code = ("import sys, ursula.storage, ursula.storage.journal, ursula.storage.records\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'twisted')\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
