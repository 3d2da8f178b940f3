"""The pure layers import nothing from Twisted and read no clock.

``ursula.protocol``, ``ursula.stream``, ``ursula.raft`` and ``ursula.replica`` are checked twice:
statically (their
imports and calls, from the source) and dynamically (importing them pulls in no Twisted module).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PURE_PACKAGES = ["protocol", "stream", "raft", "replica"]
FORBIDDEN_MODULES = {"twisted", "time", "asyncio", "socket", "threading", "select", "klein",
                     "treq", "selectors", "subprocess"}
FORBIDDEN_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
                   ("date", "today"), ("time", "time"), ("time", "monotonic"),
                   ("os", "urandom"), ("random", "random"), ("random", "randint"),
                   ("random", "choice"), ("random", "seed")}


def _modules():
    for package in PURE_PACKAGES:
        directory = ROOT / "ursula" / package
        if directory.exists():
            yield from sorted(directory.rglob("*.py"))


def _violations(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{path.name}:{node.lineno} imports {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in FORBIDDEN_CALLS:
                found.append(f"{path.name}:{node.lineno} calls {owner.id}.{node.func.attr}()")
    return found


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_has_no_io_or_clock(path):
    assert _violations(path) == []


def test_checker_bites(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom twisted.internet import reactor\n"
                   "from datetime import datetime\nx = datetime.now()\n")
    assert len(_violations(bad)) == 3


def test_importing_pure_packages_loads_no_twisted():
    code = ("import sys, ursula.protocol, ursula.stream, ursula.replica\n"
            "try:\n    import ursula.raft\nexcept ImportError:\n    pass\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'klein'))\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
