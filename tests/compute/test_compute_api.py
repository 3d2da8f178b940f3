"""The compute extension over HTTP: the admin plane's module registry (bad modules are 4xx
with the reason), binding, the materialised state, per-record failures (counted, logged, a
metric; the stream goes on), automatic compaction (410, then bootstrap recovers), and the
State Protocol end to end: 10,000 change messages, checked in Python and with
``@durable-streams/state``'s ``MaterializedState`` in Node."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
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
    call,
    canonical,
    client_state,
    header,
    materialise,
    node_materialise,
    parse_multipart,
    state_messages,
)
from twisted.logger import globalLogPublisher

from ursula.protocol.offsets import render_offset
from ursula.stream.compute import module_digest, state_digest

JSON = {"Content-Type": "application/json"}
BYTES = {"Content-Type": "application/octet-stream"}


@pytest_twisted.inlineCallbacks
def register(node, module_id, body):
    response, answer = yield call("PUT", f"{node.admin_url}/__ursula/compute/modules/{module_id}",
                                  body)
    return response.code, answer


@pytest_twisted.inlineCallbacks
def bind(url, module_id, **policy):
    response, body = yield call("PUT", url + "/compute",
                                json.dumps({"module": module_id, **policy}).encode(), JSON)
    return response, body


@pytest_twisted.inlineCallbacks
def test_registry_checks_modules_and_refuses_bad_ones_with_the_reason(node):
    code, body = yield register(node, "state", STATE_WAT)
    assert code == 201
    info = json.loads(body)
    assert info["id"] == "state" and info["source"] == "wat" and info["abi"] == 1
    response, body = yield call("GET", f"{node.admin_url}/__ursula/compute/modules")
    assert [m["id"] for m in json.loads(body)["modules"]] == ["state"]
    assert json.loads(body)["modules"][0]["digest"] == info["digest"]
    bad = {
        "imports": (WITH_IMPORT, "may import nothing"),
        "notwasm": (NOT_WASM, "not a WebAssembly module"),
        "noreduce": (NO_REDUCE, "must export the function 'reduce'"),
        "wrongtype": (WRONG_TYPE, "export 'reduce' must have the type"),
        "wrongabi": (WRONG_ABI, "ABI version 7"),
        "hugememory": (HUGE_MEMORY, "does not start within the limits"),
        "badwat": (b"(module (func $x (result i32)))", "not a valid WebAssembly module"),
        "empty": (b"", "empty"),
    }
    for module_id, (data, reason) in bad.items():
        code, body = yield register(node, module_id, data)
        assert code == 400, (module_id, body)
        assert reason in body.decode() and body.count(b"\n") == 1, (module_id, body)
    code, body = yield register(node, "bad/id", COUNTER_WAT)
    assert code == 404  # not a route: ids have no slash
    code, body = yield register(node, "-bad", COUNTER_WAT)
    assert code == 400 and b"bad module id" in body
    response, body = yield call("GET", f"{node.admin_url}/__ursula/compute/modules")
    assert [m["id"] for m in json.loads(body)["modules"]] == ["state"]  # none of them kept
    response, _ = yield call("DELETE", f"{node.admin_url}/__ursula/compute/modules/state")
    assert response.code == 204
    response, _ = yield call("GET", f"{node.admin_url}/__ursula/compute/modules/state")
    assert response.code == 404


@pytest_twisted.inlineCallbacks
def test_bind_describe_state_and_unbind_on_a_byte_stream(node):
    code, body = yield register(node, "counter", COUNTER_WAT)
    digest = json.loads(body)["digest"]
    url = node.url + "/v1/stream/counted"
    response, _ = yield call("PUT", url, b"", BYTES)
    assert response.code == 201
    response, body = yield call("POST", url, b"before", BYTES)  # history is reduced on bind
    response, body = yield bind(url, "counter", every_records=0, digest=digest)
    assert response.code == 201, body
    described = json.loads(body)
    assert described["module"] == "counter" and described["digest"] == digest
    assert described["records"] == 1 and described["offset"] == render_offset(6)
    assert described["limits"] == {"fuel": 5_000_000, "memory_pages": 256,
                                   "max_output_bytes": 1 << 20}
    response, body = yield bind(url, "counter", every_records=0)  # the same: a no-op
    assert response.code == 200
    response, body = yield bind(url, "counter", every_records=5)  # another policy
    assert response.code == 409 and b"another compute binding" in body
    for chunk in (b"abc", b"x" * 100):
        response, _ = yield call("POST", url, chunk, BYTES)
        assert response.code == 204
    response, body = yield call("GET", url + "/compute/state?render")
    assert response.code == 200 and json.loads(body) == {"appends": 3, "bytes": 109}
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "Stream-Compute-Offset") == render_offset(109)
    response, raw = yield call("GET", url + "/compute/state")
    assert header(response, "Content-Type") == "application/octet-stream"
    assert raw == (3).to_bytes(8, "little") + (109).to_bytes(8, "little")
    assert header(response, "Stream-Compute-Digest") == state_digest(raw)
    response, body = yield call("GET", url + "/compute")
    assert json.loads(body)["state_digest"] == state_digest(raw)
    response, _ = yield call("DELETE", url + "/compute")
    assert response.code == 204
    response, body = yield call("GET", url + "/compute")
    assert response.code == 404 and b"no compute module is bound" in body
    response, body = yield call("GET", url + "/compute/state")
    assert response.code == 404
    response, _ = yield call("DELETE", url + "/compute")
    assert response.code == 404


@pytest_twisted.inlineCallbacks
def test_bad_bindings_are_4xx(node):
    yield register(node, "counter", COUNTER_WAT)
    url = node.url + "/v1/stream/b"
    yield call("PUT", url, b"", BYTES)
    cases = [
        (b"not json", 400, "JSON object"),
        (b"[1]", 400, "JSON object"),
        (b'{"module": "counter", "colour": 1}', 400, "unknown binding keys"),
        (b'{}', 400, "module"),
        (b'{"module": "nope"}', 404, "no module 'nope' is registered"),
        (b'{"module": "counter", "digest": "00"}', 409, "has digest"),
        (b'{"module": "counter", "every_records": -1}', 400, "non-negative"),
        (b'{"module": "counter", "every_bytes": "9"}', 400, "non-negative"),
    ]
    for body, status, reason in cases:
        response, answer = yield call("PUT", url + "/compute", body, JSON)
        assert response.code == status, (body, answer)
        assert reason in answer.decode(), (body, answer)
    response, answer = yield call("PUT", node.url + "/v1/stream/missing/compute",
                                  b'{"module": "counter"}', JSON)
    assert response.code == 404
    response, answer = yield call("POST", url + "/compute", b"{}", JSON)
    assert response.code == 405


@pytest_twisted.inlineCallbacks
def test_failing_records_are_skipped_counted_and_the_stream_goes_on(node):
    code, body = yield register(node, "mischief", MISCHIEF)
    assert code == 201, body
    url = node.url + "/v1/stream/m"
    yield call("PUT", url, b"", BYTES)
    response, body = yield bind(url, "mischief", every_records=0)
    assert response.code == 201, body
    kinds = {b"trap": "trap", b"loop": "fuel", b"grow": "memory", b"big": "output",
             b"out": "abi", b"no": "rejected"}
    response, _ = yield call("POST", url, b"good", BYTES)
    assert response.code == 204
    logged = []

    def observe(event):
        if str(event.get("log_format", "")).startswith("compute: module"):
            logged.append(event["kind"])
    globalLogPublisher.addObserver(observe)
    try:
        for record, kind in kinds.items():
            response, _ = yield call("POST", url, record, BYTES)
            assert response.code == 204  # the append succeeds
            response, body = yield call("GET", url + "/compute")
            described = json.loads(body)
            assert described["last_error"]["kind"] == kind, (record, described)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert logged == list(kinds.values())  # each failure is logged (the first of its kind)
    response, raw = yield call("GET", url + "/compute/state")
    assert raw == b"good"  # every failed record was skipped
    response, _ = yield call("POST", url, b"last", BYTES)
    response, raw = yield call("GET", url + "/compute/state")
    assert raw == b"last"
    described = json.loads((yield call("GET", url + "/compute"))[1])
    assert described["errors"] == 6 and described["records"] == 2
    assert described["error_kinds"] == {"abi": 1, "fuel": 1, "memory": 1, "output": 1,
                                        "rejected": 1, "trap": 1}
    response, body = yield call("GET", url)  # the stream holds every append
    assert body == b"good" + b"".join(kinds) + b"last"
    response, metrics = yield call("GET", node.admin_url + "/__ursula/metrics")
    text = metrics.decode()
    assert 'ursula_compute_errors_total{kind="fuel"} 1.0' in text
    assert 'ursula_compute_errors_total{kind="trap"} 1.0' in text


@pytest_twisted.inlineCallbacks
def test_compaction_publishes_the_state_and_retains_a_reader_recovers(node):
    yield register(node, "counter", COUNTER_WAT)
    url = node.url + "/v1/stream/compacted"
    yield call("PUT", url, b"", BYTES)
    response, body = yield bind(url, "counter", every_records=3)
    assert response.code == 201
    for i in range(7):
        yield call("POST", url, b"%d" % i, BYTES)
    response, body = yield call("GET", url + "?offset=" + render_offset(0))
    assert response.code == 410
    assert header(response, "Stream-Next-Offset") == render_offset(6)
    response, body = yield call("GET", url + "/bootstrap")
    assert response.code == 200
    parts = parse_multipart(header(response, "Content-Type"), body)
    assert json.loads(parts[0][1]) == {"appends": 6, "bytes": 6}
    assert [p[1] for p in parts[1:]] == [b"6"]
    assert header(response, "Stream-Snapshot-Offset") == render_offset(6)
    described = json.loads((yield call("GET", url + "/compute"))[1])
    assert described["snapshots"] == 2 and described["since_records"] == 1


@pytest.mark.parametrize("batch", [25])
@pytest_twisted.inlineCallbacks
def test_state_protocol_end_to_end_10000_messages(node, batch):
    code, body = yield register(node, "state", STATE_WAT)
    assert code == 201
    digest = json.loads(body)["digest"]
    assert digest == module_digest(json.loads(body) and (
        __import__("wasmtime").wat2wasm(STATE_WAT.decode())))
    url = node.url + "/v1/stream/doc"
    response, _ = yield call("PUT", url, b"", JSON)
    assert response.code == 201
    response, body = yield bind(url, "state", every_records=1500, digest=digest)
    assert response.code == 201, body
    messages = state_messages(10_000)
    assert sum(1 for m in messages if m["headers"].get("control") == "reset") == 1
    assert {m["headers"].get("operation") for m in messages} == {"insert", "update", "delete",
                                                                   None}
    for start in range(0, len(messages), batch):
        response, _ = yield call("POST", url, json.dumps(messages[start:start + batch]).encode(),
                                 JSON)
        assert response.code == 204
    described = json.loads((yield call("GET", url + "/compute"))[1])
    assert described["records"] == 10_000 and described["errors"] == 0
    assert described["snapshots"] == 6  # at 1500, 3000, ... 9000 records
    # an old offset is gone; the bootstrap recovers
    response, _ = yield call("GET", url + "?offset=" + render_offset(0))
    assert response.code == 410
    response, body = yield call("GET", url + "/bootstrap")
    parts = parse_multipart(header(response, "Content-Type"), body)
    assert header(response, "Stream-Up-To-Date") == "true"
    snapshot = json.loads(parts[0][1])
    assert snapshot[0] == {"headers": {"control": "snapshot-start"}}
    assert snapshot[-1] == {"headers": {"control": "snapshot-end"}}
    assert all(m["headers"] == {"operation": "insert"} for m in snapshot[1:-1])
    assert len(parts) - 1 == 10_000 - 9000  # the updates after the last compaction
    recovered = client_state(parts)
    expected = materialise(messages)
    assert len(expected) > 100
    assert canonical(materialise(recovered)) == canonical(expected)
    # the server's own view of the state renders the same entities
    response, rendered = yield call("GET", url + "/compute/state?render")
    assert canonical(materialise(json.loads(rendered))) == canonical(expected)
    # and so does @durable-streams/state's MaterializedState, for both histories
    checked = node_materialise({"bootstrap": recovered, "replay": messages})
    as_python = {name: {(t, k): v for t, k, v in json.loads(text)}
                 for name, text in checked.items()}  # (JSON numbers: 34.0 == 34)
    assert as_python["bootstrap"] == as_python["replay"] == expected


@pytest_twisted.inlineCallbacks
def test_a_node_with_compute_disabled_refuses_bindings(node_factory):
    node = node_factory(compute={"enabled": False})
    yield register(node, "counter", COUNTER_WAT)
    url = node.url + "/v1/stream/off"
    yield call("PUT", url, b"", BYTES)
    response, body = yield bind(url, "counter")
    assert response.code == 409 and b"disabled" in body
