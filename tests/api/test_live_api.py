"""Live reads over real HTTP: long-poll wake-up and timeout, SSE framing, the reader limit."""

from __future__ import annotations

import json

import pytest_twisted
from api_helpers import call, header
from twisted.internet import defer, task


def _sleep(seconds):
    from twisted.internet import reactor
    return task.deferLater(reactor, seconds, lambda: None)


def _events(body: bytes):
    events = []
    for block in body.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        kind = lines[0].removeprefix("event: ")
        data = "\n".join(line[len("data:"):] for line in lines[1:])
        events.append((kind, data))
    return events


@pytest_twisted.inlineCallbacks
def test_long_poll_wakes_on_append(node):
    url = node.url + "/v1/stream/lp"
    response, _ = yield call("PUT", url, None, {"Content-Type": "text/plain"})
    tail = header(response, "Stream-Next-Offset")
    waiting = call("GET", url + f"?offset={tail}&live=long-poll")
    yield _sleep(0.05)
    assert node.core.live_readers == 1
    yield call("POST", url, b"news", {"Content-Type": "text/plain"})
    response, body = yield waiting
    assert response.code == 200 and body == b"news"
    assert header(response, "Stream-Cursor").isdigit()
    assert node.core.live_readers == 0


@pytest_twisted.inlineCallbacks
def test_long_poll_times_out_with_204(node):
    url = node.url + "/v1/stream/lp-timeout"
    yield call("PUT", url, b"x", {"Content-Type": "text/plain"})
    response, body = yield call("GET", url + "?offset=now&live=long-poll")
    assert response.code == 204 and body == b""
    assert header(response, "Stream-Up-To-Date") == "true"
    assert header(response, "Stream-Next-Offset") == "0000000000000000_0000000000000001"
    assert node.core.live_readers == 0


@pytest_twisted.inlineCallbacks
def test_reader_limit_answers_503_with_retry_after(node_factory):
    node = node_factory(limits={"max_live_readers": 1}, http={"long_poll_timeout_ms": 2000})
    url = node.url + "/v1/stream/limited"
    yield call("PUT", url, None, {"Content-Type": "text/plain"})
    first = call("GET", url + "?offset=now&live=long-poll")
    yield _sleep(0.05)
    response, body = yield call("GET", url + "?offset=now&live=long-poll")
    assert response.code == 503
    assert header(response, "Retry-After") == "1"
    assert b"max_live_readers" in body
    yield call("POST", url, b"go", {"Content-Type": "text/plain"})
    response, body = yield first
    assert response.code == 200 and body == b"go"


@pytest_twisted.inlineCallbacks
def test_sse_delivers_catch_up_then_live_data(node_factory):
    node = node_factory(http={"sse_max_duration_ms": 1000})
    url = node.url + "/v1/stream/events"
    yield call("PUT", url, b"first", {"Content-Type": "text/plain"})
    reading = call("GET", url + "?offset=-1&live=sse")
    yield _sleep(0.2)
    yield call("POST", url, b"second\nline", {"Content-Type": "text/plain"})
    response, body = yield reading
    assert response.code == 200
    assert header(response, "Content-Type") == "text/event-stream"
    events = _events(body)
    kinds = [kind for kind, _ in events]
    assert kinds == ["data", "control", "data", "control"]
    assert events[0][1] == "first"
    assert events[2][1] == "second\nline"
    control = json.loads(events[3][1])
    assert control["streamNextOffset"] == "0000000000000000_0000000000000016"
    assert control["upToDate"] is True


@pytest_twisted.inlineCallbacks
def test_sse_on_binary_stream_is_base64_and_ends_on_close(node):
    url = node.url + "/v1/stream/bin"
    yield call("PUT", url, b"\x00\xff", {"Content-Type": "application/octet-stream"})
    reading = call("GET", url + "?offset=-1&live=sse")
    yield _sleep(0.1)
    yield call("POST", url, b"", {"Stream-Closed": "true"})
    response, body = yield reading
    assert header(response, "stream-sse-data-encoding") == "base64"
    events = _events(body)
    assert events[0] == ("data", "AP8=")
    last = json.loads(events[-1][1])
    assert last["streamClosed"] is True and "streamCursor" not in last


@pytest_twisted.inlineCallbacks
def test_delete_wakes_long_poll_with_404(node):
    url = node.url + "/v1/stream/doomed"
    yield call("PUT", url, None, {"Content-Type": "text/plain"})
    waiting = call("GET", url + "?offset=now&live=long-poll")
    yield _sleep(0.05)
    yield call("DELETE", url)
    response, _ = yield waiting
    assert response.code == 404
    assert node.core.live_readers == 0


@pytest_twisted.inlineCallbacks
def test_concurrent_appends_are_all_stored_whole(node):
    url = node.url + "/v1/stream/concurrent"
    yield call("PUT", url, None, {"Content-Type": "application/octet-stream"})
    payloads = [bytes([i]) * (100 + i) for i in range(40)]
    yield defer.gatherResults([call("POST", url, p, {"Content-Type": "application/octet-stream"})
                               for p in payloads])
    _, body = yield call("GET", url + "?offset=-1")
    assert len(body) == sum(len(p) for p in payloads)
    for p in payloads:
        assert p in body
