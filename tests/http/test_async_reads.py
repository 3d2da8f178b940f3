"""Reads that are answered later (a group held by another core process answers over the local
link): catch-up, long-poll and SSE give the same answers as with reads that fire at once."""

from __future__ import annotations

from twisted.internet import defer

from tests.http.test_dataplane import Conn, make_world, post, put


class LaterReads:
    """Wraps a core: every ``read_applied`` fires one clock tick later."""

    def __init__(self, core, clock):
        self._core = core
        self._clock = clock
        self.reads = 0

    def __getattr__(self, name):
        return getattr(self._core, name)

    def read_applied(self, *args):
        self.reads += 1
        d = defer.Deferred()
        inner = self._core.read_applied(*args)
        inner.addBoth(lambda result: self._clock.callLater(0.001, d.callback, result) and None)
        return d


def world():
    clock, core, factory = make_world()
    later = LaterReads(core, clock)
    factory.api.core = later
    factory.api.streams.core = later
    factory.api.live.core = later
    return clock, later, factory


def test_catch_up_and_long_poll_with_late_reads():
    clock, core, factory = world()
    conn = Conn(factory)
    conn.send(put(b"s") + post(b"s", b"hello"))
    conn.send(b"GET /v1/stream/s?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(0.01)
    answers = conn.answers()
    assert [a.status for a in answers] == [201, 204, 200]
    assert answers[2].body == b"hello" and core.reads >= 1
    tail = answers[2].header("stream-next-offset")
    conn.send(b"GET /v1/stream/s?offset=%s&live=long-poll HTTP/1.1\r\nHost: x\r\n\r\n" % tail)
    clock.advance(0.01)
    other = Conn(factory)
    other.send(post(b"s", b" world"))
    clock.advance(0.01)
    assert other.answers()[0].status == 204
    answer = conn.answers()[0]
    assert answer.status == 200 and answer.body == b" world"


def test_sse_with_late_reads_sends_every_byte_once():
    clock, core, factory = world()
    writer = Conn(factory)
    writer.send(put(b"e") + post(b"e", b"a"))
    clock.advance(0.01)
    reader = Conn(factory)
    reader.send(b"GET /v1/stream/e?offset=-1&live=sse HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(0.01)
    for body in (b"b", b"c"):
        writer.send(post(b"e", body))
        clock.advance(0.01)
    text = reader.transport.value()
    data = [line[5:] for line in text.split(b"\n") if line.startswith(b"data:") and
            not line.startswith(b"data:{")]
    assert b"".join(d.strip() for d in data) == b"abc"
    assert text.startswith(b"HTTP/1.1 200")
