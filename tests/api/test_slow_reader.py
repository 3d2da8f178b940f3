"""A slow SSE reader: while its connection is paused the session writes nothing, and on resume
it catches up from where it stopped, in order. Memory per slow reader is one transport buffer."""

from __future__ import annotations

import random

from twisted.internet import task

from ursula.config import NodeConfig
from ursula.core import LocalCore
from ursula.http.live import LiveReads, SseSession
from ursula.http.metrics import Metrics
from ursula.http.streams import StreamHandlers
from ursula.stream import commands as C


class FakeRequest:
    def __init__(self):
        self.writes = []
        self.producer = None
        self.args = {}
        self.code = None
        self.headers = {}

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.headers[name] = value

    def write(self, data):
        self.writes.append(data)

    def registerProducer(self, producer, streaming):
        assert streaming
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None


def _live_reads():
    clock = task.Clock()
    clock.advance(1_700_000_000)
    config = NodeConfig()
    core = LocalCore(clock)
    metrics = Metrics(core)
    live = LiveReads(core, config, metrics, clock, random.Random(1),
                     StreamHandlers(core, config, metrics))
    return clock, config, core, live


def test_paused_session_buffers_nothing_and_resumes_in_order():
    clock, config, core, live = _live_reads()
    core.submit(C.CreateStream("_default", "s", "text/plain"))
    request = FakeRequest()
    done = SseSession(live, request, "_default", "s", 0).run()
    assert request.producer is not None and len(request.writes) == 1  # initial control event
    request.producer.pauseProducing()
    for i in range(200):
        core.submit(C.Append("_default", "s", "text/plain", b"%04d" % i))
    assert len(request.writes) == 1  # nothing written while paused
    request.producer.resumeProducing()
    body = b"".join(request.writes[1:])
    data = b"".join(line[5:] for line in body.split(b"\n") if line.startswith(b"data:") and
                    not line.startswith(b"data:{"))
    assert data == b"".join(b"%04d" % i for i in range(200))
    clock.advance(config.http.sse_max_duration_ms / 1000 + 1)
    assert done.called
    assert core.live_readers == 0


def test_fan_out_renders_each_range_once_per_turn(monkeypatch):
    from ursula.protocol import sse

    clock, config, core, live = _live_reads()
    core.submit(C.CreateStream("_default", "fan", "text/plain"))
    requests = [FakeRequest() for _ in range(50)]
    for request in requests:
        SseSession(live, request, "_default", "fan", 0).run()
    rendered = []
    real = sse.data_event
    monkeypatch.setattr(sse, "data_event", lambda *args: rendered.append(args) or real(*args))
    core.submit(C.Append("_default", "fan", "text/plain", b"hello"))
    assert len(rendered) == 1  # one render for 50 readers
    assert all(b"data:hello" in b"".join(r.writes) for r in requests)
    clock.advance(0)  # next turn: the cache is dropped
    core.submit(C.Append("_default", "fan", "text/plain", b"again"))
    assert len(rendered) == 2
