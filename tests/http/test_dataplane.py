"""The data plane's HTTP/1.1 protocol on a StringTransport and a task.Clock: pipelining order,
keep-alive, chunked bodies, 100-continue, HEAD, limits (413, 400, headers), timeouts, and an SSE
response paused and resumed with the transport."""

from __future__ import annotations

import dataclasses

import httptools
import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

from ursula.config import NodeConfig
from ursula.core import LocalCore
from ursula.http.dataplane import DataPlaneFactory, parse_query
from ursula.stream import commands as C

TEXT = b"Content-Type: text/plain\r\n"


class Response:
    def __init__(self):
        self.status = None
        self.headers = {}
        self.body = b""
        self.complete = False

    def header(self, name: str):
        return self.headers.get(name.lower().encode())


class _Collector:
    def __init__(self):
        self.responses = []

    def on_message_begin(self):
        self.responses.append(Response())

    def on_header(self, name, value):
        self.responses[-1].headers[name.lower()] = value

    def on_headers_complete(self):
        self.responses[-1].status = self.parser.get_status_code()

    def on_body(self, body):
        self.responses[-1].body += body

    def on_message_complete(self):
        self.responses[-1].complete = True


def responses(data: bytes) -> list[Response]:
    """The responses in ``data`` (not for HEAD: a parser cannot know a body is absent)."""
    collector = _Collector()
    collector.parser = httptools.HttpResponseParser(collector)
    collector.parser.feed_data(data)
    return collector.responses


class Conn:
    """One connection of the data plane to a StringTransport."""

    def __init__(self, factory):
        self.factory = factory
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes):
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def answers(self) -> list[Response]:
        return responses(self.take())

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


@pytest.fixture
def world():
    return make_world()


def make_world(**limits):
    clock = task.Clock()
    clock.advance(1_700_000_000)
    config = NodeConfig()
    config = dataclasses.replace(
        config, limits=dataclasses.replace(config.limits, **limits),
        http=dataclasses.replace(config.http, long_poll_timeout_ms=5000))
    core = LocalCore(clock)
    factory = DataPlaneFactory(core, config, clock)
    return clock, core, factory


def put(name: bytes, body: bytes = b"") -> bytes:
    return (b"PUT /v1/stream/" + name + b" HTTP/1.1\r\nHost: h\r\n" + TEXT +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def post(name: bytes, body: bytes) -> bytes:
    return (b"POST /v1/stream/" + name + b" HTTP/1.1\r\nHost: h\r\n" + TEXT +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def get(target: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n"


def test_pipelined_requests_are_answered_in_order_and_see_each_other(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(put(b"p") + post(b"p", b"one") + post(b"p", b"two") + get(b"/v1/stream/p?offset=-1"))
    answers = conn.answers()
    assert [a.status for a in answers] == [201, 204, 204, 200]
    assert answers[3].body == b"onetwo"
    assert not conn.closed


def test_a_waiting_response_holds_back_the_ones_behind_it(world):
    clock, core, factory = world
    conn = Conn(factory)
    conn.send(put(b"w"))
    assert conn.answers()[0].status == 201
    conn.send(get(b"/v1/stream/w?offset=now&live=long-poll") + get(b"/__ursula/health"))
    assert conn.take() == b""  # the health answer waits behind the long-poll
    core.submit(C.Append("_default", "w", "text/plain", b"news"))
    answers = conn.answers()
    assert [a.status for a in answers] == [200, 200]
    assert answers[0].body == b"news" and answers[1].body == b'{"status":"ok"}'


def test_keep_alive_and_connection_close(world):
    _, _, factory = world
    conn = Conn(factory)
    for _ in range(3):
        conn.send(get(b"/__ursula/health"))
        assert conn.answers()[0].status == 200
    assert not conn.closed
    conn.send(get(b"/__ursula/health", b"Connection: close\r\n"))
    answer = conn.answers()[0]
    assert answer.header("connection") == b"close" and conn.closed


def test_http_1_0_closes_unless_keep_alive(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(b"GET /__ursula/health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert conn.answers()[0].header("connection") == b"keep-alive"
    assert not conn.closed
    conn.send(b"GET /__ursula/health HTTP/1.0\r\n\r\n")
    assert conn.answers()[0].status == 200
    assert conn.closed


def test_chunked_request_body(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(put(b"c"))
    conn.send(b"POST /v1/stream/c HTTP/1.1\r\nHost: h\r\n" + TEXT +
              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    conn.send(b"2\r\nde\r\n0\r\n\r\n")
    conn.send(get(b"/v1/stream/c?offset=-1"))
    answers = conn.answers()
    assert [a.status for a in answers] == [201, 204, 200]
    assert answers[2].body == b"abcde"


def test_expect_100_continue(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(put(b"e"))
    conn.take()
    conn.send(b"POST /v1/stream/e HTTP/1.1\r\nHost: h\r\n" + TEXT +
              b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert conn.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"hello")
    assert conn.answers()[0].status == 204


def test_expect_100_continue_with_a_body_over_the_limit_is_413_without_continue():
    _, _, factory = make_world(max_body_bytes=10)
    conn = Conn(factory)
    conn.send(b"POST /v1/stream/e HTTP/1.1\r\nHost: h\r\n" + TEXT +
              b"Expect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    data = conn.take()
    assert b"100 Continue" not in data
    assert responses(data)[0].status == 413 and conn.closed


def test_head_has_the_headers_of_get_and_no_body(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(b"GET / HTTP/1.1\r\n\r\n")
    got = conn.answers()[0]
    conn.send(b"HEAD / HTTP/1.1\r\n\r\n" + get(b"/__ursula/health"))
    data = conn.take()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200")  # no body between the two answers
    assert b"content-length: %d" % len(got.body) in head
    conn.send(put(b"h", b"12345") + b"HEAD /v1/stream/h HTTP/1.1\r\n\r\n")
    head = conn.take().split(b"\r\n\r\n")[1]
    assert b"ursula-stream-bytes: 5" in head and b"stream-next-offset" in head


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413_one_line_and_closes(chunked):
    _, core, factory = make_world(max_body_bytes=1024)
    conn = Conn(factory)
    conn.send(put(b"big"))
    if chunked:
        conn.send(b"POST /v1/stream/big HTTP/1.1\r\n" + TEXT + b"Transfer-Encoding: chunked\r\n"
                  b"\r\n400\r\n" + b"x" * 1024 + b"\r\n1\r\nx\r\n0\r\n\r\n")
    else:
        conn.send(post(b"big", b"x" * 1025))
    answers = conn.answers()
    assert [a.status for a in answers] == [201, 413]
    assert answers[1].body.count(b"\n") == 1 and b"max_body_bytes" in answers[1].body
    assert conn.closed
    assert core.machine.read("_default", "big", 0, 10_000, 0).data == b""


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /a b HTTP/1.1\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"POST /v1/stream/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST /v1/stream/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/stream/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
])
def test_bad_bytes_are_400_one_line_and_close(world, raw):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(raw)
    answers = conn.answers()
    assert [a.status for a in answers] == [400]
    assert answers[0].body.count(b"\n") == 1 and answers[0].body.startswith(b"malformed")
    assert conn.closed


def test_a_header_that_is_not_utf8_is_400_not_500(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(b"PUT /v1/stream/u HTTP/1.1\r\nContent-Type: \xff\r\n\r\n" + get(b"/__ursula/health"))
    answers = conn.answers()
    assert [a.status for a in answers] == [400, 200]  # the connection stays usable
    assert b"Content-Type" in answers[0].body or b"content-type" in answers[0].body


def test_header_limits():
    _, _, factory = make_world(max_header_bytes=2048, max_headers=10)
    conn = Conn(factory)
    conn.send(get(b"/", b"X-Padding: " + b"a" * 4096 + b"\r\n"))
    answer = conn.answers()[0]
    assert answer.status == 400 and b"max_header_bytes" in answer.body and conn.closed
    conn = Conn(factory)
    conn.send(get(b"/", b"".join(b"X-%d: y\r\n" % i for i in range(11))))
    answer = conn.answers()[0]
    assert answer.status == 400 and b"max_headers" in answer.body and conn.closed


def test_idle_connection_is_closed():
    clock, _, factory = make_world(idle_timeout_s=5)
    conn = Conn(factory)
    clock.advance(4)
    conn.send(get(b"/__ursula/health"))
    clock.advance(4)
    assert not conn.closed  # the timer restarted after the request
    clock.advance(1.5)
    assert conn.closed and conn.answers()[0].status == 200


def test_a_long_poll_is_not_idle():
    clock, core, factory = make_world(idle_timeout_s=1)
    conn = Conn(factory)
    conn.send(put(b"lp") + get(b"/v1/stream/lp?offset=now&live=long-poll"))
    clock.advance(3)
    assert not conn.closed
    assert [a.status for a in conn.answers()] == [201]
    clock.advance(2.5)  # long_poll_timeout_ms = 5000
    assert [a.status for a in conn.answers()] == [204]
    assert not conn.closed
    clock.advance(1.5)
    assert conn.closed


def test_slow_client_gets_408_and_is_closed():
    clock, _, factory = make_world(request_timeout_s=3)
    conn = Conn(factory)
    conn.send(b"POST /v1/stream/s HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    clock.advance(2)
    assert conn.take() == b""
    clock.advance(1.5)
    answer = conn.answers()[0]
    assert answer.status == 408 and b"request_timeout_s" in answer.body and conn.closed


def test_slow_headers_get_408():
    clock, _, factory = make_world(request_timeout_s=3)
    conn = Conn(factory)
    conn.send(b"GET / HTTP/1.1\r\nX-Slow: ")
    clock.advance(4)
    assert conn.answers()[0].status == 408 and conn.closed


def test_routes_404_and_405_with_allow(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(get(b"/a/b/c/d") + b"PATCH /v1/stream/x HTTP/1.1\r\n\r\n" +
              b"POST /bucket HTTP/1.1\r\nContent-Length: 0\r\n\r\n" +
              b"OPTIONS /a/b/c/d HTTP/1.1\r\n\r\n" + get(b"/__ursula/ready") + get(b"/"))
    answers = conn.answers()
    assert [a.status for a in answers] == [404, 405, 405, 204, 200, 200]
    assert answers[0].body == b"no such route\n"
    assert b"PUT" in answers[1].header("allow") and b"DELETE" in answers[2].header("allow")
    assert all(a.header("x-content-type-options") == b"nosniff" for a in answers)


def test_both_layouts_and_buckets(world):
    _, _, factory = world
    conn = Conn(factory)
    conn.send(b"PUT /photos HTTP/1.1\r\nContent-Length: 0\r\n\r\n" +
              b"PUT /photos/cat HTTP/1.1\r\n" + TEXT + b"Content-Length: 1\r\n\r\nx" +
              get(b"/photos/cat?offset=-1") + get(b"/photos?limit=5") +
              put(b"a/b", b"n") + get(b"/_default/a%2Fb?offset=-1") +
              b"POST /photos/cat/append-batch HTTP/1.1\r\n" + TEXT +
              b"Content-Length: 8\r\n\r\n\x00\x00\x00\x01y\x00\x00\x00")
    answers = conn.answers()
    assert [a.status for a in answers][:6] == [201, 201, 200, 200, 201, 200]
    assert answers[2].body == b"x" and b'"cat"' in answers[3].body and answers[5].body == b"n"
    assert answers[6].status == 400  # a truncated frame


def test_sse_pauses_with_the_transport_and_resumes_in_order(world):
    clock, core, factory = world
    conn = Conn(factory)
    conn.send(put(b"sse"))
    conn.take()
    conn.send(get(b"/v1/stream/sse?offset=-1&live=sse"))
    opened = conn.take()
    assert b"text/event-stream" in opened and b"transfer-encoding: chunked" in opened
    conn.protocol.pauseProducing()  # the transport's buffer is full
    for i in range(100):
        core.submit(C.Append("_default", "sse", "text/plain", b"%03d" % i))
    assert conn.take() == b""  # nothing is buffered for a paused reader
    conn.protocol.resumeProducing()
    body = conn.take()
    data = b"".join(line[5:] for line in body.split(b"\n")
                    if line.startswith(b"data:") and not line.startswith(b"data:{"))
    assert data == b"".join(b"%03d" % i for i in range(100))
    conn.protocol.connectionLost(None)
    assert core.live_readers == 0


def test_sse_ends_with_the_last_chunk_and_the_connection_stays_usable(world):
    clock, core, factory = world
    conn = Conn(factory)
    conn.send(put(b"end") + get(b"/v1/stream/end?offset=-1&live=sse"))
    core.submit(C.Append("_default", "end", "text/plain", b"bye", close=True))
    conn.send(get(b"/__ursula/health"))
    answers = conn.answers()
    assert [a.status for a in answers] == [201, 200, 200]
    assert b"data:bye" in answers[1].body and answers[1].complete


def test_a_lost_connection_cancels_its_long_poll(world):
    _, core, factory = world
    conn = Conn(factory)
    conn.send(put(b"gone") + get(b"/v1/stream/gone?offset=now&live=long-poll"))
    assert core.live_readers == 1
    conn.protocol.connectionLost(None)
    assert core.live_readers == 0


def test_reading_pauses_when_too_many_requests_are_queued():
    clock, core, factory = make_world(max_pipelined_requests=2)
    conn = Conn(factory)
    conn.send(put(b"q") + get(b"/v1/stream/q?offset=now&live=long-poll") +
              get(b"/__ursula/health") * 3)
    assert conn.transport.producerState == "paused"
    core.submit(C.Append("_default", "q", "text/plain", b"go"))
    assert conn.transport.producerState == "producing"
    assert [a.status for a in conn.answers()] == [201, 200, 200, 200, 200]


def test_no_access_log_by_default(world):
    from twisted.logger import globalLogPublisher
    _, _, factory = world
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        conn = Conn(factory)
        conn.send(get(b"/__ursula/health"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert events == []


def test_query_parsing_matches_twisted():
    assert parse_query(b"a=1&b=&a=2&c&d=x%20y+z") == {
        b"a": [b"1", b"2"], b"b": [b""], b"c": [b""], b"d": [b"x y z"]}
