"""The client's protocol core on its own (no server, no event loop): requests, answers, errors,
SSE parsing, the follower's offsets, the retry policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ursula_client as uc
from ursula_client.core import framing, ops
from ursula_client.core.errors import error_for
from ursula_client.core.follow import FollowState
from ursula_client.core.http import Endpoints, Request, Response, with_query
from ursula_client.core.retry import NotSent, RetryPolicy, should_retry
from ursula_client.core.sse import EventParser, StreamEvents

OFF = "0000000000000000_00000000000000{:02d}"


# -- requests -------------------------------------------------------------------------------

def test_stream_paths_in_both_layouts():
    assert ops.StreamRef("chat/room-1").path == "/v1/stream/chat/room-1"
    assert ops.StreamRef("a b").path == "/v1/stream/a%20b"
    # the server decodes each path segment once: "%" goes as %25
    assert ops.StreamRef("100%").path == "/v1/stream/100%25"
    assert ops.StreamRef("album-1", "photos").path == "/photos/album-1"
    assert ops.StreamRef("x", "_default").path == "/v1/stream/x"
    assert ops.StreamRef("é", "photos").header_path == "/photos/%C3%A9"
    with pytest.raises(ValueError):
        ops.StreamRef("a/b", "photos")
    with pytest.raises(ValueError):
        ops.StreamRef("")


def test_create_request_headers():
    source = ops.StreamRef("src/one")
    request = ops.create_request(ops.StreamRef("f"), None, ttl_seconds=60, closed=True,
                                 fork_from=source, fork_offset=OFF.format(5),
                                 fork_sub_offset=2, body=b"init")
    assert request.method == "PUT" and request.body == b"init"
    assert request.header("Stream-TTL") == "60" and request.header("stream-closed") == "true"
    assert request.header("stream-forked-from") == "/v1/stream/src/one"
    assert request.header("stream-fork-offset") == OFF.format(5)
    assert request.header("stream-fork-sub-offset") == "2"
    assert request.header("content-type") is None  # a fork inherits its source's
    with pytest.raises(ValueError):
        ops.create_request(ops.StreamRef("f"), ttl_seconds=1, expires_at="2099-01-01T00:00:00Z")
    with pytest.raises(ValueError):
        ops.create_request(ops.StreamRef("f"), fork_offset=OFF.format(1))
    with pytest.raises(ValueError):
        ops.create_request(ops.StreamRef("f"), ttl_seconds=-1)


def test_append_request_headers_and_if_match():
    ref = ops.StreamRef("s")
    plain = ops.append_request(ref, b"x", "text/plain", stream_seq="007")
    assert plain.header("content-type") == "text/plain" and plain.header("stream-seq") == "007"
    producer = ops.append_request(ref, b"x", "text/plain", producer=("p", 3, 9))
    assert [producer.header(h) for h in ("producer-id", "producer-epoch", "producer-seq")] == [
        "p", "3", "9"]
    conditional = ops.append_request(ref, b"x", "text/plain", if_match=OFF.format(7))
    assert conditional.header("if-match") == f'"{OFF.format(7)}"'
    close_only = ops.append_request(ref, b"", "text/plain", close=True)
    assert close_only.header("content-type") is None and close_only.header("stream-closed")
    with pytest.raises(ValueError):
        ops.append_request(ref, b"", "text/plain")
    with pytest.raises(ValueError):  # the server refuses the combination (400)
        ops.append_request(ref, b"x", "text/plain", producer=("p", 0, 0), if_match=OFF.format(1))
    with pytest.raises(ValueError):
        ops.append_request(ref, b"x", "text/plain", if_match="a,b")


def test_precondition_failed_carries_the_current_tail():
    request = ops.append_request(ops.StreamRef("s"), b"x", "text/plain", if_match=OFF.format(3))
    answer = Response(412, {"etag": f'"{OFF.format(9)}"', "stream-next-offset": OFF.format(9)},
                      b"If-Match does not match the stream's tail\n")
    with pytest.raises(uc.PreconditionFailed) as caught:
        ops.parse_append(answer, request)
    assert caught.value.current_tail == OFF.format(9) and caught.value.status == 412
    ok = ops.parse_append(Response(204, {"stream-next-offset": OFF.format(10),
                                         "etag": f'"{OFF.format(10)}"'}), request)
    assert ok.etag == OFF.format(10) == ok.next_offset


def test_read_requests_order_their_query_and_quote_nothing_else():
    ref = ops.StreamRef("s")
    assert ops.read_request(ref).target == "/v1/stream/s?offset=-1"
    live = ops.read_request(ref, OFF.format(3), live="long-poll", cursor="42")
    assert live.target == f"/v1/stream/s?cursor=42&live=long-poll&offset={OFF.format(3)}"
    sse = ops.read_request(ref, "now", live="sse")
    assert sse.streaming and sse.header("accept") == "text/event-stream"
    with pytest.raises(ValueError):
        ops.read_request(ref, "../etc")
    with pytest.raises(ValueError):
        ops.read_request(ref, live="websocket")
    assert with_query("/p", {"b": "2", "a": None}) == "/p?b=2"


def test_append_batch_framing_round_trips():
    frames = [b"", b"a", bytes(range(256)) * 3]
    assert framing.decode_frames(framing.encode_frames(frames)) == frames
    with pytest.raises(ValueError):
        framing.decode_frames(b"\x00\x00\x00\x05abc")
    request = ops.append_batch_request(ops.StreamRef("s", "bk"), [b"a", b"bc"], "text/plain")
    assert request.target == "/bk/s/append-batch"
    assert request.body == b"\x00\x00\x00\x01a\x00\x00\x00\x02bc"


# -- answers and errors ---------------------------------------------------------------------

@pytest.mark.parametrize("status,headers,expected", [
    (400, {}, uc.BadRequest), (401, {}, uc.Unauthorized), (404, {}, uc.StreamNotFound),
    (409, {}, uc.Conflict), (409, {"stream-closed": "true"}, uc.StreamClosed),
    (409, {"producer-expected-seq": "3", "producer-received-seq": "5"}, uc.SequenceGap),
    (403, {"producer-epoch": "4"}, uc.ProducerFenced), (403, {}, uc.Forbidden),
    (410, {}, uc.StreamGone), (412, {}, uc.PreconditionFailed),
    (413, {}, uc.PayloadTooLarge), (429, {}, uc.TooManyRequests),
    (503, {"retry-after": "1"}, uc.Unavailable), (500, {}, uc.ServerError),
    (418, {}, uc.HTTPError),
])
def test_error_for_each_status(status, headers, expected):
    error = error_for(status, headers, b"one line\nsecond", "POST", "/v1/stream/s")
    assert type(error) is expected and error.status == status and error.reason == "one line"
    assert "POST /v1/stream/s" in str(error)
    if expected is uc.SequenceGap:
        assert (error.expected_seq, error.received_seq) == (3, 5)
    if expected is uc.ProducerFenced:
        assert error.current_epoch == 4
    if expected is uc.Unavailable:
        assert error.retry_after == 1.0


def test_conflict_on_create_is_stream_exists():
    request = ops.create_request(ops.StreamRef("s"), "text/plain")
    with pytest.raises(uc.StreamExists):
        ops.parse_create(Response(409, {}, b"stream exists with a different configuration"),
                         request)


def test_subscription_errors_carry_their_code():
    error = error_for(409, {}, b'{"error":{"code":"ALREADY_CLAIMED","message":"held"},'
                      b'"current_holder":"w1"}', subscription=True)
    assert isinstance(error, uc.SubscriptionError) and error.code == "ALREADY_CLAIMED"
    assert error.body["current_holder"] == "w1" and error.reason == "held"


def test_head_and_read_parsing():
    request = ops.head_request(ops.StreamRef("s"))
    info = ops.parse_head(Response(200, {"content-type": "application/json",
                                         "stream-next-offset": OFF.format(4),
                                         "stream-closed": "true", "stream-ttl": "60",
                                         "ursula-stream-bytes": "4"}), request)
    assert info.json and info.closed and info.ttl_seconds == 60 and info.size_bytes == 4
    read = ops.read_request(ops.StreamRef("s"))
    batch = ops.parse_read(Response(200, {"content-type": "application/json",
                                          "stream-next-offset": OFF.format(8),
                                          "stream-up-to-date": "true"}, b'[{"a":1},2]'),
                           read, "-1")
    assert batch.records == [{"a": 1}, 2] and batch.up_to_date and not batch.closed
    assert ops.parse_read(Response(304, {}), read, "-1") is None
    text = ops.parse_read(Response(200, {"content-type": "text/plain",
                                         "stream-next-offset": OFF.format(2)}, b"hi"), read, "-1")
    with pytest.raises(TypeError):
        _ = text.records


# -- SSE --------------------------------------------------------------------------------------

WIRE = (b"event: data\ndata:[{\"a\":1}]\n\n"
        b": a comment\n\n"
        b"event: control\r\ndata:{\"streamNextOffset\":\"" + OFF.format(7).encode() +
        b"\",\"streamCursor\":\"12\",\"upToDate\":true}\r\n\r\n"
        b"event: data\rdata:[2,\rdata:3]\r\r"
        b"event: control\ndata:{\"streamNextOffset\":\"" + OFF.format(9).encode() +
        b"\",\"upToDate\":true,\"streamClosed\":true}\n\n")


@given(st.lists(st.integers(0, len(WIRE)), max_size=12))
def test_sse_parsing_does_not_depend_on_how_bytes_arrive(cuts):
    events = StreamEvents("-1", json_mode=True, base64_mode=False)
    points = sorted(set(cuts)) + [len(WIRE)]
    batches, start = [], 0
    for point in points:
        batches.extend(events.feed(WIRE[start:point]))
        start = point
    assert [(b.offset, b.next_offset, b.records, b.cursor, b.closed) for b in batches] == [
        ("-1", OFF.format(7), [{"a": 1}], "12", False),
        (OFF.format(7), OFF.format(9), [2, 3], None, True)]
    assert events.closed


def test_sse_lines_fields_and_spaces():
    parser = EventParser()
    events = parser.feed(b"event: data\ndata:  two spaces\ndata:x\nid: 5\nretry: 10\n\n"
                         b"data:no event name\n\n\n\n")
    assert [(e.event, e.data, e.id) for e in events] == [
        ("data", " two spaces\nx", "5"), ("message", "no event name", "5")]


def test_sse_data_without_its_control_event_is_not_released():
    events = StreamEvents("-1", json_mode=False, base64_mode=True)
    assert events.feed(b"event: data\ndata:AAH/\n\n") == []  # the connection drops here
    fresh = StreamEvents("-1", json_mode=False, base64_mode=True)
    batches = fresh.feed(b"event: data\ndata:AA\ndata:H/\n\nevent: control\n"
                         b"data:{\"streamNextOffset\":\"" + OFF.format(3).encode() + b"\"}\n\n")
    assert [b.data for b in batches] == [b"\x00\x01\xff"]


# -- follower ---------------------------------------------------------------------------------

def test_follow_state_moves_with_each_answer():
    state = FollowState(ops.StreamRef("s"), "-1")
    first = state.next_request()
    assert "live=long-poll" in first.target and "offset=-1" in first.target
    state.on_response(Response(200, {"content-type": "application/json",
                                     "stream-next-offset": OFF.format(5),
                                     "stream-cursor": "100"}, b"[1]"), first)
    assert state.json_mode and state.offset == OFF.format(5) and not state.done
    second = state.next_request()
    assert f"offset={OFF.format(5)}" in second.target and "cursor=100" in second.target
    timeout = state.on_response(Response(204, {"stream-next-offset": OFF.format(5),
                                               "stream-cursor": "101",
                                               "stream-up-to-date": "true"}), second)
    assert timeout.data == b"" and timeout.json_mode and state.cursor == "101"
    state.on_response(Response(204, {"stream-next-offset": OFF.format(5),
                                     "stream-closed": "true"}), state.next_request())
    assert state.done
    with pytest.raises(uc.StreamNotFound):
        state.on_response(Response(404, {}, b"stream not found"), second)
    assert FollowState.retryable(uc.Unavailable(503))
    assert FollowState.retryable(NotSent("refused"))
    assert FollowState.retryable(uc.TransportError("reset"))
    assert not FollowState.retryable(uc.StreamNotFound(404))
    assert FollowState(ops.StreamRef("s"), live="sse").needs_head


# -- retry policy and endpoints ---------------------------------------------------------------

def test_retry_policy():
    import random
    policy = RetryPolicy(initial_delay=0.1, max_delay=1.0, jitter=0.0, max_attempts=5,
                         deadline=None)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert policy.delay(1, retry_after=0.5) == 0.5 and policy.delay(1, retry_after=9) == 1.0
    assert policy.gives_up(5, 0) and not policy.gives_up(4, 1e9)
    jittered = RetryPolicy(initial_delay=1.0, jitter=0.2)
    rng = random.Random(1)
    assert all(0.8 <= jittered.delay(1, rng=rng) <= 1.2 for _ in range(100))
    assert RetryPolicy(deadline=3).gives_up(1, 3.0)


def test_what_is_retried():
    get = ops.read_request(ops.StreamRef("s"))
    post = ops.append_request(ops.StreamRef("s"), b"x", "text/plain")
    producer = ops.append_request(ops.StreamRef("s"), b"x", "text/plain", producer=("p", 0, 0))
    unavailable = uc.Unavailable(503)
    assert should_retry(get, unavailable) and should_retry(producer, unavailable)
    assert not should_retry(post, unavailable)  # may have been applied: at most once
    assert should_retry(post, NotSent("refused"))  # never left the client
    assert not should_retry(get, uc.StreamNotFound(404))
    assert should_retry(get, uc.TooManyRequests(429))


def test_endpoints_move_on_after_a_failure():
    endpoints = Endpoints(["http://a/", "http://b", "http://c"])
    assert endpoints.current() == "http://a"
    endpoints.failed("http://a")
    endpoints.failed("http://a")  # a second report of the same failure does not skip b
    assert endpoints.current() == "http://b"
    assert endpoints.url_for(Request("GET", "/x")) == "http://b/x"
    endpoints.failed("http://b")
    endpoints.failed("http://c")
    assert endpoints.current() == "http://a"
    with pytest.raises(ValueError):
        Endpoints([])


def test_json_record_encoding():
    from ursula_client.core.types import decode_json_body, encode_json_records
    body = encode_json_records([{"a": "é"}, [1, 2], "s"])
    assert json.loads(body) == [{"a": "é"}, [1, 2], "s"]
    assert decode_json_body(b"") == [] and decode_json_body(b"[1]") == [1]
    with pytest.raises(ValueError):
        decode_json_body(b"{}")
