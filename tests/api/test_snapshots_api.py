"""Snapshots, retention, bootstrap and attributes over HTTP (the data plane, on the
single-process core and on a Raft cluster of one), and with a cold tier: the snapshot blob is
stored as its own object, retention releases the chunks below the floor, bootstrap reads a
snapshot from the cold tier."""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
import treq
from api_helpers import call, header

from ursula.protocol.offsets import render_offset

JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The parts of a multipart/mixed body: (content type, bytes)."""
    boundary = re.search(r"boundary=(\S+)", content_type).group(1).encode()
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for raw in body.split(b"--" + boundary)[1:-1]:
        assert raw.startswith(b"\r\n") and raw.endswith(b"\r\n")
        head, _, payload = raw[2:-2].partition(b"\r\n\r\n")
        ctype = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))[b"content-type"]
        parts.append((ctype.decode(), payload))
    return parts


@pytest_twisted.inlineCallbacks
def make_json(node, name, records):
    url = node.url + "/v1/stream/" + name
    response, _ = yield call("PUT", url, b"", JSON)
    assert response.code == 201
    ends = []
    for record in records:
        response, _ = yield call("POST", url, json.dumps(record).encode(), JSON)
        assert response.code == 204
        ends.append(header(response, "Stream-Next-Offset"))
    return url, ends


@pytest_twisted.inlineCallbacks
def test_publish_read_and_redirect_to_the_latest_snapshot(node):
    url, ends = yield make_json(node, "snap-1", [{"n": i} for i in range(4)])
    response, body = yield call("GET", url + "/snapshot")
    assert response.code == 404
    response, _ = yield call("PUT", url + "/snapshot/" + ends[1], b'{"sum":1}', JSON)
    assert response.code == 204
    digest = header(response, "Stream-Snapshot-Digest")
    assert header(response, "Stream-Snapshot-Offset") == ends[1] and len(digest) == 64
    response, body = yield call("GET", url + "/snapshot/" + ends[1])
    assert response.code == 200 and body == b'{"sum":1}'
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "Stream-Next-Offset") == ends[1]
    assert header(response, "Stream-Up-To-Date") is None
    # the latest: a 307 to its URL (followed by treq; then without following)
    response, body = yield call("GET", url + "/snapshot")
    assert response.code == 200 and body == b'{"sum":1}'
    response = yield treq.get(url + "/snapshot", allow_redirects=False, persistent=False)
    yield response.content()
    assert response.code == 307
    assert header(response, "Location").endswith("/v1/stream/snap-1/snapshot/" + ends[1])
    # HEAD shows it
    response, _ = yield call("HEAD", url)
    assert header(response, "Stream-Snapshot-Offset") == ends[1]
    assert header(response, "Stream-Snapshot-Digest") == digest
    assert header(response, "Stream-Retained-Offset") == render_offset(0)
    # another offset: 404
    response, body = yield call("GET", url + "/snapshot/" + ends[0])
    assert response.code == 404


@pytest_twisted.inlineCallbacks
def test_publish_rules(node):
    url, ends = yield make_json(node, "snap-rules", [{"n": i} for i in range(3)])
    response, body = yield call("PUT", url + "/snapshot/" + render_offset(3), b"x", JSON)
    assert response.code == 400 and b"record boundary" in body
    response, body = yield call("PUT", url + "/snapshot/" + render_offset(10_000), b"x", JSON)
    assert response.code == 409 and b"beyond" in body
    response, body = yield call("PUT", url + "/snapshot/not-an-offset", b"x", JSON)
    assert response.code == 400
    response, _ = yield call("PUT", url + "/snapshot/" + ends[1], b"a", JSON)
    assert response.code == 204
    digest = header(response, "Stream-Snapshot-Digest")
    # the same again: a no-op; another blob at the same offset: 409
    response, _ = yield call("PUT", url + "/snapshot/" + ends[1], b"a", JSON)
    assert response.code == 204 and header(response, "Stream-Snapshot-Digest") == digest
    response, body = yield call("PUT", url + "/snapshot/" + ends[1], b"b", JSON)
    assert response.code == 409 and b"different snapshot" in body
    # older than the current one: 409 naming it
    response, body = yield call("PUT", url + "/snapshot/" + ends[0], b"b", JSON)
    assert response.code == 409 and header(response, "Stream-Snapshot-Offset") == ends[1]
    # conditional publish
    response, body = yield call("PUT", url + "/snapshot/" + ends[2], b"c",
                                {**JSON, "Stream-Snapshot-Match": "0" * 64})
    assert response.code == 409 and b"Stream-Snapshot-Match" in body
    response, body = yield call("PUT", url + "/snapshot/" + ends[2], b"c",
                                {**JSON, "Stream-Snapshot-Match": " "})
    assert response.code == 400
    response, _ = yield call("PUT", url + "/snapshot/" + ends[2], b"c",
                             {**JSON, "Stream-Snapshot-Match": digest})
    assert response.code == 204
    response, _ = yield call("PUT", node.url + "/v1/stream/missing/snapshot/" + ends[0], b"c")
    assert response.code == 404
    response, _ = yield call("DELETE", url + "/snapshot/" + ends[2])
    assert response.code == 405


@pytest_twisted.inlineCallbacks
def test_retention_makes_old_offsets_gone_and_bootstrap_recovers(node):
    records = [{"n": i} for i in range(6)]
    url, ends = yield make_json(node, "snap-ret", records)
    response, body = yield call("PUT", url + "/retention/" + ends[1])
    assert response.code == 409 and b"snapshot first" in body
    response, _ = yield call("PUT", url + "/snapshot/" + ends[2], b'{"upto":3}', JSON)
    assert response.code == 204
    response, body = yield call("PUT", url + "/retention/" + ends[3])
    assert response.code == 409 and b"latest snapshot" in body
    response, _ = yield call("PUT", url + "/retention/" + ends[2])
    assert response.code == 204 and header(response, "Stream-Retained-Offset") == ends[2]
    response, body = yield call("PUT", url + "/retention/" + ends[1])
    assert response.code == 409 and b"forward" in body
    response, _ = yield call("PUT", url + "/retention/" + ends[2])
    assert response.code == 204  # the same floor: a no-op
    # reads below the floor: 410 with the first retained offset
    for offset in ("-1", ends[0]):
        response, body = yield call("GET", url + "?offset=" + offset)
        assert response.code == 410, body
        assert header(response, "Stream-Next-Offset") == ends[2]
    response, _ = yield call("GET", url + "?offset=" + ends[0] + "&live=long-poll")
    assert response.code == 410 and header(response, "Stream-Next-Offset") == ends[2]
    response, body = yield call("GET", url + "?offset=" + ends[2])
    assert response.code == 200 and json.loads(body) == records[3:]
    response, _ = yield call("GET", url + "/snapshot/" + ends[0])
    assert response.code == 410
    response, _ = yield call("PUT", url + "/snapshot/" + ends[0], b"x", JSON)
    assert response.code == 410
    # bootstrap: the snapshot, then one part per retained record
    response, body = yield call("GET", url + "/bootstrap")
    assert response.code == 200
    assert header(response, "Stream-Snapshot-Offset") == ends[2]
    assert header(response, "Stream-Next-Offset") == ends[-1]
    assert header(response, "Stream-Up-To-Date") == "true"
    parts = parse_multipart(header(response, "Content-Type"), body)
    assert parts[0] == ("application/json", b'{"upto":3}')
    assert [json.loads(p) for _, p in parts[1:]] == records[3:]
    assert all(t == "application/json" for t, _ in parts[1:])
    response, _ = yield call("GET", url + "/bootstrap?live=sse")
    assert response.code == 400


@pytest_twisted.inlineCallbacks
def test_bootstrap_without_a_snapshot_and_of_a_byte_stream(node):
    url = node.url + "/v1/stream/boot-bytes"
    response, _ = yield call("PUT", url, b"", TEXT)
    for piece in (b"ab", b"--", b"xyz"):
        yield call("POST", url, piece, TEXT)
    response, body = yield call("GET", url + "/bootstrap")
    assert response.code == 200
    assert header(response, "Stream-Snapshot-Offset") == "-1"
    parts = parse_multipart(header(response, "Content-Type"), body)
    assert parts == [("application/octet-stream", b""), ("text/plain", b"ab"),
                     ("text/plain", b"--"), ("text/plain", b"xyz")]
    yield call("PUT", url + "/snapshot/" + render_offset(4), b"AB--", TEXT)
    response, _ = yield call("PUT", url + "/retention/" + render_offset(3))
    assert response.code == 400  # inside an append
    response, _ = yield call("PUT", url + "/retention/" + render_offset(4))
    assert response.code == 204
    response, body = yield call("GET", url + "/bootstrap")
    parts = parse_multipart(header(response, "Content-Type"), body)
    assert parts == [("text/plain", b"AB--"), ("text/plain", b"xyz")]
    response, _ = yield call("GET", node.url + "/v1/stream/nope/bootstrap")
    assert response.code == 404


@pytest_twisted.inlineCallbacks
def test_attrs(node):
    url = node.url + "/photos/album-1"
    response, _ = yield call("PUT", url, b"", {**TEXT, "Stream-Attrs": '{"title": "A"}'})
    assert response.code == 201
    response, body = yield call("GET", url + "/attrs")
    assert response.code == 200 and json.loads(body) == {"title": "A"}
    response, _ = yield call("PUT", url, b"", {**TEXT, "Stream-Attrs": '{"title":"A"}'})
    assert response.code == 200  # the same attributes: idempotent
    response, _ = yield call("PUT", url, b"", {**TEXT, "Stream-Attrs": '{"title":"B"}'})
    assert response.code == 409
    response, _ = yield call("PUT", url + "/attrs", b'{"metadata":{"k":1}}', JSON)
    assert response.code == 204
    response, body = yield call("GET", url + "/attrs")
    assert json.loads(body) == {"metadata": {"k": 1}}
    for bad, ctype in ((b"[1]", JSON), (b"{", JSON), (b"{}", TEXT),
                       (json.dumps({"x": "y" * 20_000}).encode(), JSON)):
        response, body = yield call("PUT", url + "/attrs", bad, ctype)
        assert response.code == 400, bad
    response, _ = yield call("PUT", url + "/attrs", b"{}", JSON)
    response, body = yield call("GET", url + "/attrs")
    assert body == b"{}"
    response, _ = yield call("PUT", node.url + "/photos/x", b"", {"Stream-Attrs": "nope"})
    assert response.code == 400
    response, _ = yield call("PUT", url + "/attrs/x", b"", TEXT)
    assert response.code == 404


@pytest_twisted.inlineCallbacks
def test_names_ending_in_an_extension_are_reserved(node):
    response, _ = yield call("PUT", node.url + "/v1/stream/a%2Fsnapshot", b"", TEXT)
    # percent-decoded: the snapshot route of stream "a", which has no PUT without an offset
    assert response.code == 405
    response, body = yield call("PUT", node.url + "/v1/stream/b", b"",
                                {**TEXT, "Stream-Forked-From": "/v1/stream/a/bootstrap"})
    assert response.code == 400 and b"reserved" in body


@pytest.fixture
def cold_node(tmp_path):
    from tests.cold.test_cold_e2e import ColdNode
    from ursula.cold import MemoryColdStore
    node = ColdNode(tmp_path, MemoryColdStore())
    yield node
    pytest_twisted.blockon(node.stop())


@pytest_twisted.inlineCallbacks
def test_cold_tier_holds_the_snapshot_and_retention_collects_chunks(cold_node):
    from tests.cold.test_cold_e2e import _sleep
    node = cold_node
    url = node.url + "/v1/stream/cold-snap"
    yield call("PUT", url, b"", TEXT)
    piece = b"x" * 4096
    for _ in range(40):  # 160 KiB: over the 64 KiB hot threshold
        response, _ = yield call("POST", url, piece, TEXT)
        assert response.code == 204
    for _ in range(100):
        if node.core.stats()["cold_bytes"]:
            break
        yield _sleep(0.02)
    chunks_before = [k for k in node.store.objects if k.endswith(".chunk")]
    assert chunks_before
    floor = render_offset(30 * 4096)
    response, _ = yield call("PUT", url + "/snapshot/" + floor, b"S" * 1000, TEXT)
    assert response.code == 204
    machine = next(g.machine for g in node.core.groups.values() if g.machine.streams)
    stream = next(iter(machine.streams.values()))
    for _ in range(100):
        if stream.snapshot.key is not None:
            break
        yield _sleep(0.02)
    assert stream.snapshot.blob is None and stream.snapshot.key in node.store.objects
    response, _ = yield call("PUT", url + "/retention/" + floor)
    assert response.code == 204
    for _ in range(100):
        left = [k for k in node.store.objects if k.endswith(".chunk")]
        if not machine.cold_garbage and len(left) < len(chunks_before):
            break
        yield _sleep(0.02)
    assert all(c[1] > 30 * 4096 or c[1] > stream.base for c in stream.chunks)
    left = {k for k in node.store.objects if k.endswith(".chunk")}
    assert left < set(chunks_before) or not chunks_before
    response, body = yield call("GET", url + "/bootstrap")
    parts = parse_multipart(header(response, "Content-Type"), body)
    assert parts[0] == ("text/plain", b"S" * 1000)
    assert b"".join(p for _, p in parts[1:]) == piece * 10
    response, body = yield call("GET", url + "/snapshot/" + floor)
    assert response.code == 200 and body == b"S" * 1000
    response, _ = yield call("GET", url + "?offset=" + render_offset(0))
    assert response.code == 410
    # a newer snapshot replaces the object; the old one is collected
    old_key = stream.snapshot.key
    response, _ = yield call("PUT", url + "/snapshot/" + render_offset(40 * 4096), b"T", TEXT)
    assert response.code == 204
    for _ in range(100):
        if old_key not in node.store.objects and stream.snapshot.key is not None:
            break
        yield _sleep(0.02)
    assert old_key not in node.store.objects
    # deleting the stream collects the snapshot object too
    new_key = stream.snapshot.key
    response, _ = yield call("DELETE", url)
    for _ in range(100):
        if new_key not in node.store.objects:
            break
        yield _sleep(0.02)
    assert new_key not in node.store.objects


@pytest_twisted.inlineCallbacks
def test_the_attrs_limit_is_a_config_key(node_factory):
    node = node_factory(limits={"max_attrs_bytes": 64})
    url = node.url + "/photos/small"
    small, big = json.dumps({"t": "x" * 40}).encode(), json.dumps({"t": "x" * 80}).encode()
    response, _ = yield call("PUT", url, b"", {**TEXT, "Stream-Attrs": big.decode()})
    assert response.code == 400
    response, _ = yield call("PUT", url, b"", {**TEXT, "Stream-Attrs": small.decode()})
    assert response.code == 201
    response, body = yield call("PUT", url + "/attrs", big, JSON)
    assert response.code == 400 and b"limits.max_attrs_bytes" in body
    response, _ = yield call("PUT", url + "/attrs", small, JSON)
    assert response.code == 204
