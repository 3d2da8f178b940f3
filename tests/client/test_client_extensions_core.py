"""The protocol core of the snapshot / retention / bootstrap / attrs extension, without I/O:
the multipart parser (well-formed and malformed bodies), bootstrap answers, the error mapping
(410 below the floor is ``Retained``; the 409s of publish and retention), requests, and the
follower's recovery by bootstrap."""

from __future__ import annotations

import pytest

import ursula_client as uc
from ursula_client.core import extensions as ext
from ursula_client.core import multipart
from ursula_client.core.follow import FollowState
from ursula_client.core.http import Response
from ursula_client.core.ops import StreamRef, read_request

REF = StreamRef("s")
BOUNDARY = "ursula-bootstrap-0123456789abcdef"
CTYPE = f"multipart/mixed; boundary={BOUNDARY}"
O1 = "0000000000000000_0000000000000010"
O2 = "0000000000000000_0000000000000020"


def body(*parts: tuple[str, bytes], boundary: str = BOUNDARY) -> bytes:
    b = boundary.encode()
    out = b"".join(b"--" + b + b"\r\ncontent-type: " + t.encode() + b"\r\n\r\n" + p + b"\r\n"
                   for t, p in parts)
    return out + b"--" + b + b"--\r\n"


def boot_response(parts, snapshot_offset=O1, **headers) -> Response:
    h = {"content-type": CTYPE, "stream-snapshot-offset": snapshot_offset,
         "stream-next-offset": O2, "stream-retained-offset": O1}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return Response(200, h, body(*parts))


# -- multipart ------------------------------------------------------------------------------

def test_multipart_parts_in_order_with_their_headers():
    parts = multipart.parse(CTYPE, body(("application/json", b'{"s":1}'),
                                        ("text/plain", b""), ("text/plain", b"a\r\nb--c")))
    assert [(p.content_type, p.body) for p in parts] == [
        ("application/json", b'{"s":1}'), ("text/plain", b""), ("text/plain", b"a\r\nb--c")]


def test_multipart_quoted_boundary_preamble_epilogue_and_headerless_part():
    raw = (b"preamble\r\n--b q\r\n\r\nno headers\r\n--b q\r\nX-A:  1 \r\n"
           b"content-type: a/b\r\n\r\nx\r\n--b q--\r\nepilogue")
    parts = multipart.parse('multipart/mixed; charset=x; boundary="b q"', raw)
    assert parts[0].headers == {} and parts[0].body == b"no headers"
    assert parts[0].content_type == "text/plain"  # RFC 2046's default
    assert parts[1].headers == {"x-a": "1", "content-type": "a/b"} and parts[1].body == b"x"


def test_multipart_with_no_parts():
    assert multipart.parse("multipart/mixed; boundary=z", b"--z--\r\n") == []


@pytest.mark.parametrize("content_type, raw, message", [
    ("application/json", b"[]", "not a multipart/mixed"),
    (None, b"", "not a multipart/mixed"),
    ("multipart/mixed", b"--z--\r\n", "without a boundary"),
    ("multipart/mixed; boundary=z", b"no delimiter here", "no boundary delimiter"),
    ("multipart/mixed; boundary=z", b"--z\r\ncontent-type: a/b\r\n\r\ncut off", "truncated"),
    ("multipart/mixed; boundary=z", b"--z\r\ncontent-type: a/b\r\n\r\nx\r\n--z", "line end"),
    ("multipart/mixed; boundary=z", b"--zjunk\r\n\r\nx\r\n--z--", "line end"),
    ("multipart/mixed; boundary=z", b"--z\r\ncontent-type a/b\r\n\r\nx\r\n--z--",
     "malformed header"),
    ("multipart/mixed; boundary=z", b"--z\r\ncontent-type: a/b\r\nx\r\n--z--", "no blank line"),
])
def test_malformed_multipart_is_a_clear_error(content_type, raw, message):
    with pytest.raises(uc.MalformedResponse, match=message):
        multipart.parse(content_type, raw)


# -- bootstrap ------------------------------------------------------------------------------

def test_bootstrap_of_a_json_stream_decodes_each_record():
    request = ext.bootstrap_request(REF)
    assert request.method == "GET" and request.target == "/v1/stream/s/bootstrap"
    response = boot_response([("application/json", b'{"sum":3}'),
                              ("application/json", b'{"n":3}'), ("application/json", b"[1,2]")],
                             stream_snapshot_digest="ab" * 32, stream_up_to_date="true")
    boot = ext.parse_bootstrap(response, request)
    assert boot.snapshot == uc.Snapshot(O1, "ab" * 32, "application/json", b'{"sum":3}')
    assert boot.snapshot.value == {"sum": 3}
    assert boot.updates == [{"n": 3}, [1, 2]] and boot.json_mode
    assert boot.next_offset == O2 and boot.up_to_date and not boot.closed
    assert boot.retained_offset == O1 and boot.offset == O1
    batch = boot.as_batch()
    assert batch.records == [{"n": 3}, [1, 2]] and batch.data == b'[{"n":3},[1,2]]'
    assert batch.offset == O1 and batch.next_offset == O2 and batch.snapshot is boot.snapshot


def test_bootstrap_without_a_snapshot_of_a_byte_stream():
    response = boot_response([("application/octet-stream", b""), ("text/plain", b"ab"),
                              ("text/plain", b"--")], snapshot_offset="-1",
                             stream_closed="true", stream_up_to_date="true")
    boot = ext.parse_bootstrap(response, ext.bootstrap_request(REF))
    assert boot.snapshot is None and boot.offset is None
    assert boot.updates == [b"ab", b"--"] and not boot.json_mode and boot.closed
    assert boot.as_batch().data == b"ab--" and boot.as_batch().offset == "-1"


def test_bootstrap_without_records_takes_the_callers_json_mode():
    response = boot_response([("application/json", b"{}")])
    assert ext.parse_bootstrap(response, ext.bootstrap_request(REF), True).as_batch().records \
        == []


@pytest.mark.parametrize("parts, headers, message", [
    ([], {}, "without its snapshot part"),
    ([("a/b", b"x")], {"snapshot_offset": "-1"}, "not empty"),
    ([("a/b", b""), ("application/json", b"1"), ("text/plain", b"x")], {}, "mixes"),
    ([("a/b", b""), ("application/json", b"{nope")], {}, "not JSON"),
    ([("a/b", b""), ("application/json", b"1,2")], {}, "more than one"),
])
def test_malformed_bootstraps(parts, headers, message):
    with pytest.raises(uc.MalformedResponse, match=message):
        ext.parse_bootstrap(boot_response(parts, **headers), ext.bootstrap_request(REF))


def test_bootstrap_without_next_offset_is_malformed():
    response = Response(200, {"content-type": CTYPE, "stream-snapshot-offset": "-1"},
                        body(("a/b", b"")))
    with pytest.raises(uc.MalformedResponse, match="no stream-next-offset header"):
        ext.parse_bootstrap(response, ext.bootstrap_request(REF))


# -- errors and requests --------------------------------------------------------------------

def test_410_below_the_floor_is_retained_and_a_deleted_stream_is_only_gone():
    request = read_request(REF, "-1")
    retained = Response(410, {"stream-next-offset": O1}, b"offset is below the floor\n")
    with pytest.raises(uc.Retained) as caught:
        ext.expect(retained, request, (200,))
    assert caught.value.retained_offset == O1 and isinstance(caught.value, uc.StreamGone)
    assert "bootstrap" in str(caught.value) and O1 in str(caught.value)
    with pytest.raises(uc.StreamGone) as gone:
        ext.expect(Response(410, {}, b"stream was deleted\n"), request, (200,))
    assert not isinstance(gone.value, uc.Retained)


def test_publish_request_and_its_conflicts():
    data, ctype = ext.encode_snapshot({"sum": 1})
    assert (data, ctype) == (b'{"sum":1}', "application/json")
    assert ext.encode_snapshot("é") == ("é".encode(), "text/plain; charset=utf-8")
    assert ext.encode_snapshot(b"\x00", "a/b") == (b"\x00", "a/b")
    request = ext.publish_snapshot_request(REF, O1, data, ctype, match="d" * 64)
    assert request.method == "PUT" and request.target == f"/v1/stream/s/snapshot/{O1}"
    assert request.header("stream-snapshot-match") == "d" * 64 and request.body == data
    ok = Response(204, {"stream-snapshot-offset": O1, "stream-snapshot-digest": "e" * 64})
    assert ext.parse_publish_snapshot(ok, request) == uc.Snapshot(O1, "e" * 64, ctype, data)
    older = Response(409, {"stream-snapshot-offset": O2}, b"a newer snapshot is published\n")
    with pytest.raises(uc.SnapshotConflict) as caught:
        ext.parse_publish_snapshot(older, request)
    assert caught.value.snapshot_offset == O2
    assert not isinstance(caught.value, uc.SnapshotMatchFailed)
    failed = Response(409, {}, b"Stream-Snapshot-Match is not the digest of the current\n")
    with pytest.raises(uc.SnapshotMatchFailed):
        ext.parse_publish_snapshot(failed, request)
    with pytest.raises(uc.BadRequest):
        ext.parse_publish_snapshot(Response(400, {}, b"not a record boundary\n"), request)
    with pytest.raises(uc.Retained):
        ext.parse_publish_snapshot(Response(410, {"stream-next-offset": O2}), request)
    for bad in ("-1", "now", "a/b"):
        with pytest.raises(ValueError):
            ext.publish_snapshot_request(REF, bad, b"", "a/b")
    with pytest.raises(ValueError):
        ext.publish_snapshot_request(REF, O1, b"", "a/b", match=" ")


def test_digest_is_the_servers_framing():
    assert ext.snapshot_digest("a/b", b"xy") == __import__("hashlib").sha256(
        b"\x03\x00\x00\x00\x00\x00\x00\x00a/bxy").hexdigest()


def test_retention_snapshot_reads_and_attrs():
    request = ext.retention_request(StreamRef("x", "bkt"), O1)
    assert request.method == "PUT" and request.target == f"/bkt/x/retention/{O1}"
    assert ext.parse_retention(Response(204, {"stream-retained-offset": O1}), request) == O1
    with pytest.raises(uc.RetentionConflict):
        ext.parse_retention(Response(409, {}, b"publish a snapshot first\n"), request)
    latest = ext.latest_snapshot_request(REF)
    assert ext.parse_latest_snapshot(Response(307, {"stream-snapshot-offset": O1}), latest) == O1
    assert ext.parse_latest_snapshot(Response(404), latest) is None
    read = ext.snapshot_request(REF, O1)
    snap = ext.parse_snapshot(Response(200, {"stream-snapshot-offset": O1,
                                             "content-type": "text/plain",
                                             "stream-up-to-date": "true"}, b"hi"), read)
    assert snap.text == "hi" and snap.up_to_date and snap.digest is None
    with pytest.raises(uc.Retained):
        ext.parse_snapshot(Response(410, {"stream-next-offset": O2}), read)
    put = ext.set_attrs_request(REF, {"b": 1, "a": "é"})
    assert put.body == b'{"a":"\\u00e9","b":1}' and put.header("content-type") == \
        "application/json"
    get = ext.get_attrs_request(REF)
    assert ext.parse_get_attrs(Response(200, {}, b'{"a":1}'), get) == {"a": 1}
    with pytest.raises(uc.MalformedResponse):
        ext.parse_get_attrs(Response(200, {}, b"[1]"), get)
    with pytest.raises(TypeError):
        ext.set_attrs_request(REF, [("a", 1)])


# -- the follower ---------------------------------------------------------------------------

def test_follow_state_recovers_from_retained_by_bootstrap():
    raising = FollowState(REF, "-1")
    error = uc.Retained(410, "", {"stream-next-offset": O1})
    assert not raising.recovers(error)
    state = FollowState(REF, "-1", on_retained="bootstrap", json_mode=None)
    state.cursor = "c1"
    assert state.recovers(error) and not state.recovers(uc.StreamGone(410))
    boot = ext.parse_bootstrap(boot_response([("application/json", b'{"s":1}'),
                                              ("application/json", b"7")]),
                               ext.bootstrap_request(REF))
    batch = state.on_bootstrap(boot)
    assert batch.snapshot.value == {"s": 1} and batch.records == [7]
    assert state.offset == O2 and state.bootstraps == 1 and state.cursor is None
    assert state.json_mode is True and not state.done
    assert state.next_request().target == f"/v1/stream/s?live=long-poll&offset={O2}"
    with pytest.raises(ValueError):
        FollowState(REF, on_retained="skip")
