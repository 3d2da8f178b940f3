"""The compute extension inside the pure state machine: binding rules, reduction at apply,
skipped records, automatic compaction, the snapshot image; and a property: replicas that apply
the same log, crashing (restored from their last state-machine snapshot, then replaying the
log since) and snapshotting at random points, hold identical materialised state, equal to a
replica that never crashed and to the Python model of the State Protocol."""

from __future__ import annotations

import json

from compute_helpers import COUNTER_WAT, MISCHIEF, STATE_WAT, materialise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ursula.compute import ComputeLimits, WasmReducer, load_module
from ursula.stream import StreamMachine
from ursula.stream import commands as C
from ursula.stream.compute import state_digest

NOW = 1_000
JSON = "application/json"
BYTES = "application/octet-stream"
_MODULES = {}


def module(data: bytes):
    if data not in _MODULES:
        _MODULES[data] = load_module("m", data, ComputeLimits(), 1 << 20)
    return _MODULES[data]


def bind(name: str, data: bytes, every_records: int = 0, fuel: int = 1_000_000,
         every_bytes: int = 0) -> C.BindCompute:
    info = module(data)
    return C.BindCompute("_", name, "m", info.digest, info.binary, fuel, 32, 1 << 20,
                         every_records, every_bytes)


def machine() -> StreamMachine:
    return StreamMachine(reducer=WasmReducer())


def test_bind_rules():
    m = machine()
    assert m.apply(bind("none", COUNTER_WAT), NOW).error == "not_found"
    m.apply(C.CreateStream("_", "s", BYTES), NOW)
    wrong = C.BindCompute("_", "s", "m", "00" * 32, module(COUNTER_WAT).binary, 10, 1, 64)
    assert m.apply(wrong, NOW).error == "compute_digest_mismatch"
    assert StreamMachine().apply(bind("s", COUNTER_WAT), NOW).error == "not_found"
    m2 = StreamMachine()  # no reducer
    m2.apply(C.CreateStream("_", "s", BYTES), NOW)
    assert m2.apply(bind("s", COUNTER_WAT), NOW).error == "compute_unavailable"
    assert m.apply(bind("s", COUNTER_WAT), NOW).created
    assert m.apply(bind("s", COUNTER_WAT), NOW).duplicate
    assert m.apply(bind("s", COUNTER_WAT, every_records=2), NOW).error == "compute_bound"
    assert m.apply(C.UnbindCompute("_", "s"), NOW).error is None
    assert m.apply(C.UnbindCompute("_", "s"), NOW).error == "compute_not_bound"
    # a stream compacted by hand has lost its history: no binding
    m.apply(C.Append("_", "s", BYTES, b"abc"), NOW)
    m.apply(C.PublishSnapshot("_", "s", 3, JSON, b"{}"), NOW)
    m.apply(C.AdvanceRetention("_", "s", 3), NOW)
    assert m.apply(bind("s", COUNTER_WAT), NOW).error == "compute_history"


def test_records_reduce_at_apply_failures_are_skipped_and_compaction_retains():
    m = machine()
    m.apply(C.CreateStream("_", "m", BYTES), NOW)
    m.apply(C.Append("_", "m", BYTES, b"one"), NOW)
    assert m.apply(bind("m", MISCHIEF, every_records=3, fuel=50_000), NOW).created
    binding = m.streams[("_", "m")].compute
    assert binding.state == b"one" and binding.records == 1  # the history, at bind
    outcome = m.apply(C.AppendBatch("_", "m", BYTES, (b"trap", b"two", b"loop")), NOW)
    assert [r.error for r in outcome.results] == [None, None, None]  # appends all succeed
    assert binding.state == b"two" and binding.errors == 2
    assert binding.error_kinds == {"trap": 1, "fuel": 1}
    assert binding.last_error == [m.streams[("_", "m")].tail, "fuel"]
    # the third record since the binding ("two", in the middle of the batch) made the policy
    # (3) publish the state there and retain up to it (the echo module renders the state)
    stream = m.streams[("_", "m")]
    assert stream.snapshot.auto and stream.snapshot.blob == b"two"
    assert stream.retained == stream.snapshot.offset == len(b"onetraptwo")
    assert binding.snapshots == 1 and binding.since_records == 1
    # the image carries the binding, its module and its state
    again = StreamMachine.restore(m.snapshot(), reducer=WasmReducer())
    copy = again.streams[("_", "m")].compute
    assert copy.to_wire() == binding.to_wire()
    again.apply(C.Append("_", "m", BYTES, b"three"), NOW)
    assert copy.state == b"three"
    view = again.view("_", "m", "compute", 0, NOW)
    assert view.compute_state == b"three"
    assert view.compute["state_digest"] == state_digest(b"three")
    assert again.view("_", "m", "compute-render", 0, NOW).compute_state == b"three"


def test_a_json_stream_reduces_each_message():
    m = machine()
    m.apply(C.CreateStream("_", "doc", JSON), NOW)
    m.apply(bind("doc", STATE_WAT), NOW)
    batch = [{"type": "t", "key": str(i), "value": i, "headers": {"operation": "insert"}}
             for i in range(5)]
    m.apply(C.Append("_", "doc", JSON, json.dumps(batch).encode()), NOW)
    m.apply(C.Append("_", "doc", JSON, b'{"type":"t","key":"2","headers":{"operation":'
                                       b'"delete"}}'), NOW)
    m.apply(C.Append("_", "doc", JSON, b'{"not":"state protocol"}'), NOW)
    binding = m.streams[("_", "doc")].compute
    assert binding.records == 6 and binding.error_kinds == {"rejected": 1}
    rendered = json.loads(m.view("_", "doc", "compute-render", 0, NOW).compute_state)
    assert materialise(rendered) == {("t", str(i)): i for i in (0, 1, 3, 4)}


# -- the property ----------------------------------------------------------------------------

messages = st.one_of(
    st.builds(lambda t, k, v, op: {"type": t, "key": k, "value": v,
                                   "headers": {"operation": op}},
              st.sampled_from(["a", "b"]), st.sampled_from(["1", "2", "3", "4"]),
              st.one_of(st.integers(-9, 9), st.text("xyz\"\\", max_size=3),
                        st.lists(st.integers(0, 3), max_size=2)),
              st.sampled_from(["insert", "update", "upsert"])),
    st.builds(lambda t, k: {"type": t, "key": k, "headers": {"operation": "delete"}},
              st.sampled_from(["a", "b"]), st.sampled_from(["1", "2", "3", "4"])),
    st.just({"headers": {"control": "reset"}}),
    st.just({"headers": {"operation": "frobnicate"}, "type": "a", "key": "1"}),  # rejected
)
steps = st.lists(st.one_of(
    st.tuples(st.just("append"), st.lists(messages, min_size=1, max_size=4)),
    st.tuples(st.just("bytes"), st.sampled_from([b"trap", b"loop", b"ok", b"grow", b"no"])),
    st.tuples(st.just("crash"), st.integers(0, 2)),
    st.tuples(st.just("snapshot"), st.integers(0, 2)),
), min_size=1, max_size=40)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(1, 7))
def test_replicas_agree_across_crashes_and_snapshots(plan, every):
    log = [C.CreateStream("_", "doc", JSON), bind("doc", STATE_WAT, every_records=every),
           C.CreateStream("_", "raw", BYTES), bind("raw", MISCHIEF, every_bytes=6, fuel=20_000)]
    for kind, arg in plan:
        if kind == "append":
            log.append(C.Append("_", "doc", JSON, json.dumps(arg).encode()))
        elif kind == "bytes":
            log.append(C.Append("_", "raw", BYTES, arg))
        else:
            log.append((kind, arg))
    commands = [c for c in log if not isinstance(c, tuple)]
    # each replica: its machine, its last snapshot (image, how many commands it covers)
    replicas = [[machine(), None, 0, 0] for _ in range(3)]  # machine, image, covered, applied
    for entry in log:
        if isinstance(entry, tuple):
            kind, which = entry
            replica = replicas[which]
            if kind == "snapshot":
                replica[1], replica[2] = replica[0].snapshot(), replica[3]
            else:  # crash: back to the snapshot (or empty), then replay the log since
                replica[0] = (StreamMachine.restore(replica[1], reducer=WasmReducer())
                              if replica[1] is not None else machine())
                for command in commands[replica[2]:replica[3]]:
                    replica[0].apply(command, NOW)
            continue
        for replica in replicas:
            replica[0].apply(entry, NOW)
            replica[3] += 1
    reference = machine()
    for command in commands:
        reference.apply(command, NOW)
    images = {r[0].snapshot() for r in replicas}
    assert images == {reference.snapshot()}  # identical state machines, compute included
    doc = reference.streams[("_", "doc")].compute
    applied = [m for c in commands if isinstance(c, C.Append) and c.stream == "doc"
               for m in json.loads(c.body) if isinstance(json.loads(c.body), list)]
    rendered = json.loads(reference.view("_", "doc", "compute-render", 0, NOW).compute_state)
    assert materialise(rendered) == materialise(
        [m for m in applied if m["headers"].get("operation") != "frobnicate"])
    assert doc.records + doc.errors == len(applied)
