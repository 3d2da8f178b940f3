"""The client's import rules: every module of ``ursula_client`` says in its docstring what it
may import (``May import:``) and imports nothing else; the package never imports the server
(``ursula``); and everything but ``ursula_client.twisted`` works without Twisted or treq."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "ursula_client"
THIRD_PARTY = {"httpx": "httpx", "twisted": "twisted", "treq": "treq", "zope.interface": "zope"}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def allowed(path: pathlib.Path) -> tuple[set[str], str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    line = next((" ".join(p[p.find("May import:"):].split())
                 for p in re.split(r"\n\s*\n", doc) if "May import:" in p), None)
    assert line is not None, f"{path.name}: no 'May import:' line in the module docstring"
    text = line.replace("`", "")
    prefixes = set(re.findall(r"\bursula_client(?:\.[a-z_]+)*", text))
    for word, top in THIRD_PARTY.items():
        if re.search(rf"(?<![\w.]){word}\b", text.lower()):
            prefixes.add(top)
    return prefixes, line


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    name = module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[:len(name.split(".")) - node.level
                                        + (1 if path.name == "__init__.py" else 0)]
                found.append((node.lineno, ".".join(base + [node.module or ""]).strip(".")))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def violations(path: pathlib.Path) -> list[str]:
    prefixes, line = allowed(path)
    own = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else module_name(path)
    bad = []
    for lineno, module in imports(path):
        top = module.split(".")[0]
        if module == "__future__" or top in sys.stdlib_module_names and top != "ursula":
            continue
        if module.startswith(own + ".") and own != "ursula_client":
            continue
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            continue
        bad.append(f"{path.name}:{lineno} imports {module} ({line})")
    return bad


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_what_its_docstring_allows(path):
    assert violations(path) == []


def test_the_checker_bites(tmp_path):
    probe = PACKAGE / "core" / "_probe.py"
    try:
        probe.write_text('"""A probe.\n\nMay import: the standard library and '
                         '``ursula_client.core`` modules.\n"""\nimport json\nimport httpx\n'
                         "from ursula.protocol import offsets\n"
                         "from ursula_client.core import ops\nfrom ursula_client import aio\n")
        found = [v.split(" imports ")[1].split(" ")[0] for v in violations(probe)]
    finally:
        probe.unlink()
    assert found == ["httpx", "ursula.protocol", "ursula_client"]


def test_the_core_is_pure_and_only_the_twisted_front_end_needs_twisted():
    script = (
        "import sys\n"
        "for blocked in ('twisted', 'treq', 'ursula'):\n"
        "    sys.modules[blocked] = None\n"
        "import ursula_client, ursula_client.aio, ursula_client.sync\n"
        "import ursula_client.core.producer, ursula_client.core.follow, "
        "ursula_client.core.subscriptions\n"
        "try:\n"
        "    import ursula_client.twisted\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('the Twisted front end imported without Twisted')\n"
        "sys.modules.pop('httpx', None)\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_core_needs_no_httpx_either():
    script = ("import sys\nsys.modules['httpx'] = None\nsys.modules['twisted'] = None\n"
              "import ursula_client, ursula_client._engine, ursula_client.core.ops\n"
              "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_py_typed_ships():
    assert (PACKAGE / "py.typed").exists()
    import configparser
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    packages = set(parser["options"]["packages"].split())
    assert {"ursula_client", "ursula_client.core"} <= packages
    assert "py.typed" in parser["options.package_data"]["ursula_client"]
    assert "httpx" in parser["options.extras_require"]["client"]


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")) +
                         [PACKAGE / "_engine.py"], ids=lambda p: p.name)
def test_the_core_and_engine_have_no_clock_sockets_or_loop(path):
    """The clock, timers and I/O come from the front ends (``Runtime``, ``Transport``)."""
    forbidden = {"time", "socket", "select", "selectors", "asyncio", "threading", "ssl",
                 "http", "urllib.request", "datetime"}
    found = {m for _, m in imports(path) if m in forbidden or m.split(".")[0] in
             {"time", "socket", "asyncio", "threading"}}
    assert found == set()
