"""``ursula.compute``: the ABI checks of a module, and the clean per-call failures of
``WasmReducer`` (each of a kind, counted, reported; never an exception of another type)."""

from __future__ import annotations

import pytest
from compute_helpers import (
    COUNTER_WAT,
    HUGE_MEMORY,
    MISCHIEF,
    NO_REDUCE,
    NOT_WASM,
    STATE_WAT,
    WITH_IMPORT,
    WRONG_ABI,
    WRONG_TYPE,
)

from ursula.compute import ComputeLimits, ModuleError, ModuleRegistry, WasmReducer, load_module
from ursula.compute.registry import parse_module_list
from ursula.stream.compute import Binding, ReduceFailed

LIMITS = ComputeLimits()


def binding(data: bytes, fuel: int = 1_000_000, pages: int = 16, output: int = 1 << 16):
    info = load_module("m", data, ComputeLimits(fuel, pages, output), 1 << 20)
    return Binding("m", info.digest, info.binary, fuel, pages, output, 0, 0, "application/json")


@pytest.mark.parametrize("data, reason", [
    (WITH_IMPORT, "may import nothing"),
    (NOT_WASM, "not a WebAssembly module"),
    (b"\0asm\x01\0\0\0garbage", "not a valid WebAssembly module"),
    (NO_REDUCE, "must export the function 'reduce'"),
    (WRONG_TYPE, "must have the type (i32, i32, i32, i32) -> i64"),
    (WRONG_ABI, "speaks ABI version 7"),
    (HUGE_MEMORY, "does not start within the limits"),
    (b"(module (memory 1))", "export its linear memory"),
    (b"", "empty"),
])
def test_bad_modules_are_refused_with_a_one_line_reason(data, reason):
    with pytest.raises(ModuleError) as raised:
        load_module("bad", data, LIMITS, 1 << 20)
    assert reason in str(raised.value)
    assert "\n" not in str(raised.value)


def test_module_size_limit():
    with pytest.raises(ModuleError, match="max_module_bytes"):
        load_module("big", STATE_WAT, LIMITS, 1024)


def test_wat_and_its_binary_are_the_same_module():
    text = load_module("a", COUNTER_WAT, LIMITS, 1 << 20)
    binary = load_module("b", text.binary, LIMITS, 1 << 20)
    assert text.digest == binary.digest and (text.source, binary.source) == ("wat", "wasm")


@pytest.mark.parametrize("record, kind", [
    (b"trap", "trap"), (b"loop", "fuel"), (b"grow", "memory"), (b"big", "output"),
    (b"out", "abi"), (b"no", "rejected"),
])
def test_each_failure_is_a_clean_error_of_its_kind_and_repeats_identically(record, kind):
    seen = []
    reducer = WasmReducer(on_error=lambda k, reason, b: seen.append((k, reason)))
    bound = binding(MISCHIEF, pages=64)
    assert reducer.reduce(bound, b"", b"fine") == b"fine"
    failures = []
    for _ in range(2):  # a fresh instance each call: the same failure every time
        with pytest.raises(ReduceFailed) as raised:
            reducer.reduce(bound, b"state", record)
        failures.append((raised.value.kind, raised.value.reason))
    assert failures[0] == failures[1] and failures[0][0] == kind
    assert seen == failures
    assert reducer.stats() == {"calls": 3, "errors": {kind: 2}}
    assert reducer.reduce(bound, b"", b"after") == b"after"  # the reducer goes on


def test_fuel_is_the_bindings_budget():
    tight = binding(STATE_WAT, fuel=2_000)
    roomy = binding(STATE_WAT, fuel=1_000_000)
    record = (b'{"type":"t","key":"k","value":' + b"[" + b"1," * 2000 + b"1]"
              + b',"headers":{"operation":"insert"}}')
    reducer = WasmReducer()
    with pytest.raises(ReduceFailed) as raised:
        reducer.reduce(tight, b"", record)
    assert raised.value.kind == "fuel"
    assert reducer.reduce(roomy, b"", record).endswith(b"1]")


def test_the_counter_module():
    bound = binding(COUNTER_WAT)
    reducer = WasmReducer()
    state = b""
    for record in (b"a", b"", b"xyz" * 100):
        state = reducer.reduce(bound, state, record)
    assert reducer.render(bound, state) == b'{"appends":3,"bytes":301}'
    assert reducer.render(bound, b"") == b'{"appends":0,"bytes":0}'


def test_registry_files_and_config_list(tmp_path):
    (tmp_path / "c.wat").write_bytes(COUNTER_WAT)
    registry = ModuleRegistry(str(tmp_path / "reg"))
    [info] = registry.load_files(parse_module_list(f"counter = {tmp_path / 'c.wat'}"))
    assert registry.get("counter").digest == info.digest
    again = ModuleRegistry(str(tmp_path / "reg"))  # another process of the node
    assert [m.module_id for m in again.list()] == ["counter"]
    with pytest.raises(ModuleError, match="cannot read"):
        registry.load_files([("x", str(tmp_path / "missing.wat"))])
    (tmp_path / "bad.wat").write_bytes(WITH_IMPORT)
    with pytest.raises(ModuleError, match="module 'bad'.*may import nothing"):
        registry.load_files([("bad", str(tmp_path / "bad.wat"))])
    with pytest.raises(ModuleError, match="expected 'id = path'"):
        parse_module_list("just-a-path")
    assert registry.remove("counter") and registry.get("counter") is None


def test_a_host_side_error_is_a_trap_not_an_exception():
    seen = []
    reducer = WasmReducer(on_error=lambda kind, reason, b: seen.append(kind))
    with pytest.raises(ReduceFailed) as raised:
        reducer.reduce(binding(COUNTER_WAT), None, b"x")  # not bytes: a TypeError inside
    assert raised.value.kind == "trap" and "host error" in raised.value.reason
    assert seen == ["trap"]


def test_the_node_logs_failures_sparingly():
    from ursula.core.compute import _should_log, make_reducer
    assert [n for n in range(1, 2100) if _should_log(n)] == [1, 2, 4, 8, 16, 32, 64, 128, 256,
                                                             512, 1000, 1024, 2000, 2048]
    assert make_reducer(False) is None
    reducer = make_reducer(True)
    with pytest.raises(ReduceFailed):
        reducer.reduce(binding(MISCHIEF), b"", b"trap")
    assert reducer.stats()["errors"] == {"trap": 1}


def test_compiled_modules_are_cached_up_to_the_limit_and_recompiled_after():
    reducer = WasmReducer(module_cache=2)
    counter, state, mischief = binding(COUNTER_WAT), binding(STATE_WAT), binding(MISCHIEF)
    for _ in range(2):
        assert reducer.render(counter, b"") == b'{"appends":0,"bytes":0}'
        assert reducer.reduce(mischief, b"", b"ok") == b"ok"
        assert reducer.render(state, b"").startswith(b"[")
        assert len(reducer._modules) == 2
