"""The import contract: every module of ``ursula`` says in its top docstring what it may
import (a line starting ``May import:``), and imports nothing else.

The line is read as a list: third-party names (``cbor2``, Twisted,
``zope.interface``, Klein, treq, ``prometheus_client``, httptools, ...), ``ursula.<package>``
names, or "all"/"anything" for the wiring modules. A module may always import from its own
package and from the standard library (which parts of it a pure layer may not touch, such as
``time`` or ``socket``, ``tests/test_purity.py`` checks). Imports inside ``if TYPE_CHECKING:``
count too: a type is a dependency.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ursula"

THIRD_PARTY = {
    "twisted": "twisted", "cbor2": "cbor2", "zope.interface": "zope", "zope": "zope",
    "klein": "klein", "treq": "treq", "prometheus_client": "prometheus_client",
    "httptools": "httptools", "boto3": "boto3", "botocore": "botocore", "wasmtime": "wasmtime",
    "werkzeug": "werkzeug", "setproctitle": "setproctitle", "httpx": "httpx",
    "cryptography": "cryptography",
}


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(name: str, path: pathlib.Path) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def allowed_by(line: str) -> tuple[set[str], bool, bool]:
    """(allowed import prefixes, stdlib allowed, everything allowed) from a May-import line."""
    text = line.split(":", 1)[1].replace("`", "")
    lowered = text.lower()
    everything = bool(re.search(r"\b(all|anything)\b", lowered))
    stdlib = "standard library" in lowered or "stdlib" in lowered
    prefixes = set(re.findall(r"\bursula(?:\.[a-z_]+)*", text))
    for word, top in THIRD_PARTY.items():
        if re.search(rf"(?<![\w.]){re.escape(word)}\b", lowered):
            prefixes.add(top)
    return prefixes, stdlib, everything


def _may_import_line(path: pathlib.Path) -> str | None:
    """From "May import:" to the end of its paragraph (wrapped lines joined)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    for paragraph in re.split(r"\n\s*\n", doc):
        at = paragraph.find("May import:")
        if at >= 0:
            return " ".join(paragraph[at:].split())
    return None


def _imports(path: pathlib.Path, name: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def violations(path: pathlib.Path) -> list[str]:
    line = _may_import_line(path)
    rel = path.relative_to(ROOT)
    if line is None:
        return [f"{rel}: no 'May import:' line in the module docstring"]
    prefixes, stdlib, everything = allowed_by(line)
    if everything:
        return []
    name = _module_name(path)
    own = _package_of(name, path)
    bad = []
    for lineno, module in _imports(path, name):
        top = module.split(".")[0]
        if module == "__future__" or top in sys.stdlib_module_names:
            continue
        if module == own or module.startswith(own + "."):
            continue
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            continue
        bad.append(f"{rel}:{lineno} imports {module} (May import: {line[12:].strip()})")
    return bad


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_what_its_docstring_allows(path):
    assert violations(path) == []


def test_the_contract_checker_bites(tmp_path):
    bad = PACKAGE / "stream" / "_contract_probe.py"
    try:
        bad.write_text('"""A probe.\n\nMay import: the standard library and cbor2.\n"""\n'
                       "import json\nimport cbor2\nfrom twisted.internet import defer\n"
                       "from ursula.raft import RaftNode\nfrom ursula.stream import commands\n")
        found = violations(bad)
    finally:
        bad.unlink()
    assert [f.split(" imports ")[1].split(" ")[0] for f in found] == [
        "twisted.internet", "ursula.raft"]  # json (stdlib), cbor2 and its own package pass
    missing = tmp_path / "nodoc.py"
    missing.write_text("import os\n")
    assert "no 'May import:' line" in violations_outside(missing)[0]


def violations_outside(path: pathlib.Path) -> list[str]:
    return [f"{path.name}: no 'May import:' line in the module docstring"] \
        if _may_import_line(path) is None else []


def test_wrapped_lines_and_names_are_read():
    prefixes, stdlib, everything = allowed_by(
        "May import: the standard library, cbor2, ``ursula.raft`` and Twisted (Deferreds only).")
    assert stdlib and not everything
    assert {"cbor2", "ursula.raft", "twisted"} <= prefixes
