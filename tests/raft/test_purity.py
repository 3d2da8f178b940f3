"""ursula.raft stays pure: stdlib and cbor2 only, no clock, no global randomness, and every
module says at the top what lives there and what it may import."""

import ast
import pathlib

import pytest

import ursula.raft

PKG = pathlib.Path(ursula.raft.__file__).parent
MODULES = sorted(PKG.glob("*.py"))
ALLOWED = {"__future__", "collections", "dataclasses", "enum", "operator", "random", "typing",
           "cbor2"}
FORBIDDEN_CALLS = {"time", "monotonic", "perf_counter", "random", "randint", "choice", "now"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_are_stdlib_and_cbor2_only(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in ALLOWED or name.startswith("ursula.raft"), f"{path.name}: {name}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_clock_or_global_random(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in ("time", "datetime"):
                pytest.fail(f"{path.name}: uses {node.value.id}.{node.attr}")
            if node.value.id == "random" and node.attr in FORBIDDEN_CALLS:
                pytest.fail(f"{path.name}: global random.{node.attr}")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_docstring_states_what_it_may_import(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and "May import" in doc, path.name
