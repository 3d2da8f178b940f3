"""Live reads: long-poll (``live=long-poll``) and Server-Sent Events (``live=sse``).

Both register a one-shot waiter with the core and re-read when the stream changes. An SSE
session is a streaming producer on the connection: when the client stops reading and the
transport's buffer fills, it pauses and simply remembers its offset, so a slow reader holds no
more than one transport buffer of server memory; on resume it catches up from that offset.

May import: Twisted, zope.interface, ``ursula.protocol``, ``ursula.stream.machine`` (the read
result and error types) and ``ursula.http`` modules; the node only through ``ICore``
(``ursula.core.interfaces``).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ursula.core.interfaces import TooManyReaders
from ursula.http import render
from ursula.protocol import sse
from ursula.protocol.cursor import next_cursor
from ursula.protocol.headers import is_text_type
from ursula.protocol.offsets import NOW, START, render_offset
from ursula.stream.machine import StreamError

log = Logger()


class LiveReads:
    def __init__(self, core, config, metrics, clock, rng, handlers):
        self.core = core
        self.clock = clock
        self.rng = rng
        self.metrics = metrics
        self.handlers = handlers
        self.long_poll_timeout = config.http.long_poll_timeout_ms / 1000.0
        self.sse_max_duration = config.http.sse_max_duration_ms / 1000.0
        self.sse_heartbeat = config.http.sse_heartbeat_ms / 1000.0
        self.cursor_interval_ms = config.http.cursor_interval_ms
        self.max_read = config.limits.max_read_bytes
        self.max_live_readers = config.limits.max_live_readers
        self._events: dict[tuple, bytes] = {}

    def data_event(self, result, base64_mode: bool) -> bytes:
        """The rendered ``event: data`` of a read, shared by every SSE reader that reads the
        same range in the same reactor turn (fan-out renders once per distinct range)."""
        key = (result.info.uid, result.start, result.next_offset, base64_mode)
        event = self._events.get(key)
        if event is None:
            event = sse.data_event(render.body_of(result), base64_mode)
            if not self._events:
                self.clock.callLater(0, self._events.clear)
            self._events[key] = event
        return event

    def control_event(self, result, cursor: str | None) -> bytes:
        """The rendered ``event: control``, shared like ``data_event``."""
        key = ("control", result.next_offset, cursor, result.up_to_date, result.closed)
        event = self._events.get(key)
        if event is None:
            event = sse.control_event(render_offset(result.next_offset), cursor,
                                      result.up_to_date, result.closed)
            if not self._events:
                self.clock.callLater(0, self._events.clear)
            self._events[key] = event
        return event

    def cursor(self, request) -> str:
        client = request.args.get(b"cursor")
        text = client[0].decode("ascii", "replace") if client else None
        return next_cursor(self.core.now_ms(), text, self.rng.randint(1, 180),
                           self.cursor_interval_ms)

    def _start(self, bucket, name, offset):
        if self.core.live_readers >= self.max_live_readers:
            raise TooManyReaders()

        def position(info):
            if offset == NOW:
                return info.tail
            return 0 if offset == START else offset
        seen_ms = self.core.now_ms()
        d = self.core.head(bucket, name)
        d.addCallback(self.handlers.touch_if_sliding, bucket, name, seen_ms)
        return d.addCallback(position)

    # -- long-poll ----------------------------------------------------------------------

    def long_poll(self, request, bucket: str, name: str, offset):
        d = self._start(bucket, name, offset)
        return d.addCallback(lambda position: LongPoll(self, request, bucket, name,
                                                       position).run())

    # -- SSE ----------------------------------------------------------------------------

    def sse(self, request, bucket: str, name: str, offset):
        d = self._start(bucket, name, offset)
        return d.addCallback(lambda position: SseSession(self, request, bucket, name,
                                                         position).run())


class LongPoll:
    def __init__(self, live: LiveReads, request, bucket: str, name: str, position: int):
        self.live = live
        self.request = request
        self.bucket, self.name = bucket, name
        self.position = position
        self.deadline = live.clock.seconds() + live.long_poll_timeout
        self.done = Deferred(self._cancel)
        self.subscription = None
        self.timer = None

    def run(self) -> Deferred:
        # The head() of LiveReads._start was the linearizable read barrier: from here on the
        # local replica is at least that fresh.
        self._read()
        return self.done

    def _read(self):
        d = self.live.core.read_applied(self.bucket, self.name, self.position,
                                        self.live.max_read)
        d.addCallbacks(self._got, self._failed)

    def _got(self, result):
        if self.done.called:
            return
        request = self.request
        if result.next_offset > result.start:
            render.set_read_headers(request, result)
            request.setHeader(b"stream-cursor", self.live.cursor(request).encode())
            request.setHeader(b"etag", render.etag(result))
            request.setHeader(b"cache-control", render.CACHE_HISTORICAL)
            self._finish(render.finish_body(request, render.body_of(result)))
        elif result.closed:
            request.setResponseCode(204)
            render.set_read_headers(request, result)
            request.setHeader(b"cache-control", b"no-store")
            self._finish(b"")
        else:
            self._wait(result)

    def _wait(self, result):
        remaining = self.deadline - self.live.clock.seconds()
        if remaining <= 0:
            self._timeout(result)
            return
        try:
            self.subscription = self.live.core.subscribe(self.bucket, self.name, self._woken)
        except TooManyReaders:
            self.done.errback()
            return
        self.timer = self.live.clock.callLater(remaining, self._timeout, result)

    def _woken(self):
        self.subscription = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self._read()

    def _timeout(self, result):
        self.timer = None
        self._unsubscribe()
        if self.done.called:
            return
        request = self.request
        request.setResponseCode(204)
        render.set_read_headers(request, result)
        request.setHeader(b"stream-cursor", self.live.cursor(request).encode())
        request.setHeader(b"cache-control", b"no-store")
        self._finish(b"")

    def _failed(self, failure):
        self._unsubscribe()
        if not self.done.called:
            self.done.errback(failure)

    def _finish(self, body: bytes):
        self._unsubscribe()
        self.done.callback(body)

    def _unsubscribe(self):
        if self.subscription is not None:
            self.subscription.cancel()
            self.subscription = None

    def _cancel(self, _):
        self._unsubscribe()
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@implementer(IPushProducer)
class SseSession:
    def __init__(self, live: LiveReads, request, bucket: str, name: str, position: int):
        self.live = live
        self.request = request
        self.bucket, self.name = bucket, name
        self.position = position
        self.done = Deferred(self._cancel)
        self.paused = False
        self.pumping = False
        self.reading = False
        self.subscription = None
        self.sent_control = False
        self.base64 = False
        self.heartbeat = None
        self.expiry = None
        self.opened = False

    def run(self) -> Deferred:
        d = self.live.core.read_applied(self.bucket, self.name, self.position, 0)
        d.addCallbacks(self._opened, self._failed)
        return self.done

    def _opened(self, result):
        if self.done.called:
            return  # the client went away while the first read was on its way
        request = self.request
        self.base64 = not is_text_type(result.info.content_type)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        if self.base64:
            request.setHeader(b"stream-sse-data-encoding", b"base64")
        request.registerProducer(self, True)
        self.opened = True
        self.live.metrics.sse_connections.inc()
        clock = self.live.clock
        self.expiry = clock.callLater(self.live.sse_max_duration, self._end)
        self.heartbeat = clock.callLater(self.live.sse_heartbeat, self._beat)
        self._pump()

    def _pump(self):
        """Send everything from ``position`` on, then wait for the stream to change.

        Reads of a group held by this process fire at once and are handled in this loop; a read
        answered later (a group of another core) resumes the loop when it arrives."""
        if self.pumping or self.reading or self.done.called:
            return
        self.pumping = True
        try:
            while not self.paused and not self.done.called:
                box: list = []
                d = self.live.core.read_applied(self.bucket, self.name, self.position,
                                                self.live.max_read)
                d.addBoth(box.append)
                if not box:
                    self.reading = True
                    d.addCallback(lambda _, box=box: self._arrived(box[0]))
                    return
                if not self._step(box[0]):
                    return
        finally:
            self.pumping = False

    def _arrived(self, item):
        self.reading = False
        if self._step(item):
            self._pump()

    def _step(self, item) -> bool:
        """Handle one read (a ReadResult or a Failure); True to read on."""
        if self.done.called:
            return False
        if isinstance(item, Failure):
            self._failed(item)
            return False
        result = item
        has_data = result.next_offset > result.start
        if has_data or not self.sent_control or result.closed:
            self._send(result, has_data)
        if result.closed:
            self._end()
            return False
        self.position = result.next_offset
        if result.up_to_date:
            try:
                self.subscription = self.live.core.subscribe(self.bucket, self.name,
                                                             self._woken)
            except TooManyReaders:
                self._end()  # over the limit mid-session: the client reconnects
            return False
        return not self.paused

    def _send(self, result, has_data: bool):
        parts = []
        if has_data:
            parts.append(self.live.data_event(result, self.base64))
        cursor = None if result.closed else self.live.cursor(self.request)
        parts.append(self.live.control_event(result, cursor))
        self.sent_control = True
        self.request.write(b"".join(parts))

    def _woken(self):
        self.subscription = None
        self._pump()

    def _beat(self):
        self.heartbeat = None
        if self.done.called:
            return
        if not self.paused:
            self.request.write(b":\n\n")
        self.heartbeat = self.live.clock.callLater(self.live.sse_heartbeat, self._beat)

    # IPushProducer
    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        if self.paused:
            self.paused = False
            if self.subscription is None:
                self._pump()

    def stopProducing(self):
        self._cleanup()

    def _failed(self, failure):
        if failure.check(StreamError) and self.sent_control:
            self._end()  # the stream went away mid-session: end the response
            return
        self._cleanup()
        if not self.done.called:
            self.done.errback(failure)

    def _end(self):
        self._cleanup()
        if not self.done.called:
            self.done.callback(b"")

    def _cleanup(self):
        if self.subscription is not None:
            self.subscription.cancel()
            self.subscription = None
        for timer in (self.heartbeat, self.expiry):
            if timer is not None and timer.active():
                timer.cancel()
        if self.opened:
            self.opened = False
            self.live.metrics.sse_connections.dec()
            try:
                self.request.unregisterProducer()
            except (AttributeError, RuntimeError):
                pass
        self.heartbeat = self.expiry = None

    def _cancel(self, _):
        self._cleanup()


__all__ = ["CancelledError", "LiveReads"]
