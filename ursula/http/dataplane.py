"""The data plane: the public API over a lean HTTP/1.1 server protocol on httptools.

One ``HttpConnection`` per TCP connection parses with llhttp (``httptools``) and queues
pipelined requests; they are answered strictly in order and one at a time (the next is
dispatched when the previous response is finished, so a pipelined GET sees the POST before
it). Keep-alive (HTTP/1.1 by default, HTTP/1.0 with ``Connection: keep-alive``), chunked
request bodies, ``Expect: 100-continue`` and HEAD are handled here. The limits are
``[limits]`` keys: ``max_header_bytes`` and ``max_headers`` (400), ``max_body_bytes`` (413),
``request_timeout_s`` for a request whose headers or body do not arrive (408),
``idle_timeout_s`` between requests, and ``max_pipelined_requests`` (reading pauses). A request
that cannot be parsed or exceeds a limit gets a one-line reason and the connection is closed.

The connection is its transport's push producer: while the client does not read, no further
request is dispatched, and a streaming response (SSE) that registered its producer on the
``Request`` is paused and resumed with the transport's buffer.

``Request`` is the small part of twisted.web's request that ``ursula.http.api`` and its
handlers use; headers and the query string are parsed only when a handler asks for them.
``route`` is the whole URL map (both layouts, buckets, append-batch, the stream extension
routes (``ursula.protocol.names.split_extension``), ``/__ursula/health``,
``ready`` and ``metrics``).

May import: Twisted, httptools, zope.interface, ``ursula.protocol``, ``ursula.loop`` and
``ursula.http`` modules; ``data_plane_factory`` also starts the core's subscription service
(``ursula.core.subscriptions``).
"""

from __future__ import annotations

import io
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ursula.http.api import BUCKET_METHODS, STREAM_METHODS, Api
from ursula.http.common import COMMON_HEADERS, error_body
from ursula.loop import DirectWriter, Timeouts
from ursula.protocol.errors import ProtocolError
from ursula.protocol.names import (
    DEFAULT_BUCKET,
    EXTENSIONS_ONE,
    EXTENSIONS_TWO,
    check_bucket,
    split_extension,
)

log = Logger()

STATUS_LINES = {int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode()) for s in HTTPStatus}
COMMON_BLOB = b"".join(name + b": " + value + b"\r\n" for name, value in COMMON_HEADERS)
NO_BODY = frozenset([204, 304])
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_S = 2.0  # after an error answer, how long unread request bytes are still drained

ROOT_METHODS = ["GET", "HEAD", "OPTIONS"]
PAGE_METHODS = ["GET", "HEAD"]
ALL_STREAM = frozenset(m.encode() for m in STREAM_METHODS)
ALL_BUCKET = frozenset(m.encode() for m in BUCKET_METHODS) | {b"HEAD"}
ALL_BATCH = frozenset([b"POST", b"OPTIONS"])


class _Abort(Exception):
    """Raised in a parser callback to stop parsing (the refusal is already queued)."""


def parse_query(query: bytes) -> dict[bytes, list[bytes]]:
    """``a=1&b=&a=2`` -> {b"a": [b"1", b"2"], b"b": [b""]}, as twisted.web's ``args``."""
    args: dict[bytes, list[bytes]] = {}
    for part in query.split(b"&"):
        if part:
            name, _, value = part.partition(b"=")
            args.setdefault(unquote_to_bytes(name.replace(b"+", b" ")), []).append(
                unquote_to_bytes(value.replace(b"+", b" ")))
    return args


class Headers:
    """Request headers as twisted.web's ``requestHeaders`` (``getRawHeaders``), built lazily,
    plus ``first(name)``: the handlers' one-value lookup without building a list."""

    __slots__ = ("raw", "_by_name")

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self.raw = raw  # (lower-case name, value) in arrival order
        self._by_name: dict[bytes, list[bytes]] | None = None

    def _index(self) -> dict[bytes, list[bytes]]:
        by_name = self._by_name = {}
        for key, value in self.raw:
            values = by_name.get(key)
            if values is None:
                by_name[key] = [value]
            else:
                values.append(value)
        return by_name

    def getRawHeaders(self, name, default=None):
        by_name = self._by_name
        if by_name is None:
            by_name = self._index()
        if isinstance(name, str):
            values = by_name.get(_header_key(name))
            if values is None:
                return default
            try:
                return [value.decode("utf-8") for value in values]
            except UnicodeDecodeError:
                raise ProtocolError(400, f"the {name} header is not valid UTF-8") from None
        values = by_name.get(name.lower())
        return default if values is None else values

    def first(self, name: str) -> str | None:
        """The first value of header ``name`` as text, or None; 400 if a value of it is not
        UTF-8 (as ``getRawHeaders(name)[0]``)."""
        by_name = self._by_name
        if by_name is None:
            by_name = self._index()
        values = by_name.get(_header_key(name))
        if values is None:
            return None
        try:
            if len(values) == 1:
                return values[0].decode("utf-8")
            return [value.decode("utf-8") for value in values][0]
        except UnicodeDecodeError:
            raise ProtocolError(400, f"the {name} header is not valid UTF-8") from None


_HEADER_KEYS: dict[str, bytes] = {}


def _header_key(name: str) -> bytes:
    """``"Content-Type"`` -> ``b"content-type"`` (cached: handlers ask for a few constants)."""
    key = _HEADER_KEYS.get(name)
    if key is None:
        key = name.lower().encode("latin-1", "replace")
        if len(_HEADER_KEYS) < 1024:
            _HEADER_KEYS[name] = key
    return key


class Request:
    """One request and its response (the twisted.web request API the handlers use)."""

    deferred: Deferred | None = None
    producer = None
    error: tuple[int, str] | None = None

    def __init__(self, channel: HttpConnection, method: bytes, uri: bytes, version: str,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool):
        self.channel = channel
        self.method = method
        self.uri = uri
        if not uri.startswith(b"/") and b"://" in uri:  # absolute-form target
            uri = b"/" + uri.split(b"://", 1)[1].partition(b"/")[2]
        self.path, _, self._query = uri.partition(b"?")
        self.version = version
        self.requestHeaders = Headers(headers)
        self.keep_alive = keep_alive
        self.expect_continue = False
        self.complete = False
        self.content = None
        self.code = 200
        self.headers: dict[bytes, bytes] = {}
        self.started = self.finished = self.chunked = self.lost = False
        self._args = None

    @property
    def args(self) -> dict[bytes, list[bytes]]:
        if self._args is None:
            self._args = parse_query(self._query)
        return self._args

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def isSecure(self) -> bool:
        return self.channel.secure

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name, value) -> None:
        if isinstance(name, str):
            name = name.encode("latin-1")
        if isinstance(value, str):
            value = value.encode("utf-8")
        if b"\r" in value or b"\n" in value:
            value = value.replace(b"\r", b" ").replace(b"\n", b" ")
        self.headers[name.lower()] = value

    def registerProducer(self, producer, streaming: bool) -> None:
        self.producer = producer
        if self.channel.write_paused:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self.producer = None

    # -- the response ------------------------------------------------------------------

    def _head(self) -> bytes:
        code = self.code
        parts = [STATUS_LINES.get(code) or b"HTTP/1.1 %d Unknown\r\n" % code,
                 self.channel.factory.date_line(), COMMON_BLOB]
        for name, value in self.headers.items():
            parts.append(name + b": " + value + b"\r\n")
        if self.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        elif self.version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        """Stream part of the body: chunked (HTTP/1.1) unless a Content-Length was set."""
        if self.finished or self.lost:
            return
        if not self.started:
            self.started = True
            if b"content-length" not in self.headers and self.code not in NO_BODY:
                if self.version == "1.0":
                    self.keep_alive = False  # the end of the body is the end of the connection
                else:
                    self.chunked = True
            self.channel.send(self._head())
        if not data or self.method == b"HEAD" or self.code in NO_BODY:
            return
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.channel.send(data)

    def finish(self, body: bytes | None = b"") -> None:
        if self.finished:
            return
        if not self.lost:
            body = body or b""
            if self.started:
                if body:
                    self.write(body)
                if self.chunked:
                    self.channel.send(b"0\r\n\r\n")
            else:
                self.started = True
                code = self.code
                if code in NO_BODY or code < 200:
                    self.headers.pop(b"content-length", None)
                    body = b""
                elif self.method == b"HEAD":
                    body = b""
                elif b"content-length" not in self.headers:
                    self.headers[b"content-length"] = b"%d" % len(body)
                self.channel.send(self._head() + body)
        self.finished = True
        self.channel.finished(self)

    def settle(self, result) -> None:
        """The handler's Deferred fired: with the body to finish with, or with a failure that
        nothing turned into an answer (one callback for both: the hot path's Deferred has
        one entry less to run)."""
        if isinstance(result, Failure):
            self.failed(result)
            return
        try:
            self.finish(result)
        except Exception:
            self.failed(Failure())

    def failed(self, failure) -> None:
        log.failure("unexpected error answering {method} {uri}", failure, method=self.method,
                    uri=self.uri)
        if self.started or self.lost:
            self.keep_alive = False
            self.finish(b"")
        else:
            self.headers.clear()
            self.keep_alive = False
            self.finish(error_body(self, 500, "internal server error"))


@implementer(IPushProducer)
class HttpConnection(Protocol):
    """One client connection: parse, queue, dispatch in order, enforce the limits."""

    def __init__(self, factory: DataPlaneFactory):
        self.factory = factory
        self.queue: deque[Request] = deque()  # parsed (maybe still receiving a body), in order
        self.current: Request | None = None  # the request being answered
        self.write_paused = self.reading_paused = self.broken = self.closing = False
        self.secure = False
        self._advancing = False
        self._request: Request | None = None  # the request being parsed
        self._parsing = False
        self._idle_timer = self._request_timer = self._linger_timer = None
        self._idle_since: float | None = None  # when the connection last became idle

    def connectionMade(self):
        setter = getattr(self.transport, "setTcpNoDelay", None)
        if setter is not None:  # an answer is one write: never hold it for Nagle
            try:
                setter(True)
            except OSError:
                pass
        self.parser = httptools.HttpRequestParser(self)
        self.secure = ISSLTransport.providedBy(self.transport)
        self.send = DirectWriter(self.transport).write
        self.transport.registerProducer(self, True)
        self._start_idle()

    def send(self, data: bytes) -> None:
        """Write ``data`` to the client (``connectionMade`` replaces this with a
        ``DirectWriter``'s ``write``: one ``send`` right away, not Twisted's buffer and two
        ``epoll_ctl`` calls per answer)."""
        self.transport.write(data)

    def dataReceived(self, data: bytes):
        if self.broken or self.closing:
            return  # draining what a refused client still sends
        try:
            self.parser.feed_data(data)
        except _Abort:
            pass
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError as error:
            if not self.broken:
                reason = str(error.args[0] if error.args else error) or "malformed request"
                self._refuse(400, f"malformed request ({reason.lower()})")
        if self._parsing and self._request_timer is None and not self.broken:
            # a request began and is not complete yet: it has request_timeout to arrive (a
            # request that arrives whole in one read, the usual case, never arms a timer)
            self._request_timer = self.factory.timeouts.call_later(
                self.factory.request_timeout, self._request_timed_out)
        self._advance()

    def connectionLost(self, reason=None):
        self.closing = True
        for timer in (self._idle_timer, self._request_timer, self._linger_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._request_timer = self._linger_timer = None
        self.queue.clear()
        request, self.current = self.current, None
        if request is not None:
            request.lost = True
            producer, request.producer = request.producer, None
            if producer is not None:
                producer.stopProducing()
            if request.deferred is not None and not request.finished:
                request.deferred.cancel()

    # -- parser callbacks (httptools) ----------------------------------------------------

    def on_message_begin(self):
        self._parsing = True
        self._url, self._headers, self._body = [], [], []
        self._header_bytes = self._body_bytes = 0
        self._idle_since = None  # busy: the idle timer, when it fires, finds this and waits

    def on_url(self, url: bytes):
        self._url.append(url)
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes):
        headers = self._headers
        headers.append((name.lower(), value))
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.factory.max_header_bytes:
            self._count_header_bytes(0)  # refuses
        if len(headers) > self.factory.max_headers:
            self._refuse(400, f"more than {self.factory.max_headers} request headers "
                              "(limits.max_headers)")
            raise _Abort()

    def _count_header_bytes(self, size: int):
        self._header_bytes += size
        if self._header_bytes > self.factory.max_header_bytes:
            self._refuse(400, f"request line and headers are larger than "
                              f"{self.factory.max_header_bytes} bytes (limits.max_header_bytes)")
            raise _Abort()

    def on_headers_complete(self):
        parser = self.parser
        request = self._request = Request(
            self, parser.get_method(), b"".join(self._url), parser.get_http_version(),
            self._headers, parser.should_keep_alive())
        self.queue.append(request)
        by_name = request.requestHeaders._index()
        length = by_name.get(b"content-length")
        if length and int(length[0]) > self.factory.max_body_bytes:
            self._refuse_body()
        expect = by_name.get(b"expect")
        if expect and expect[0].lower() == b"100-continue" and request.version == "1.1":
            request.expect_continue = True
        if len(self.queue) > self.factory.max_pipelined and not self.reading_paused:
            self.reading_paused = True
            self.transport.pauseProducing()

    def on_body(self, body: bytes):
        self._body_bytes += len(body)
        if self._body_bytes > self.factory.max_body_bytes:
            self._refuse_body()
        self._body.append(body)

    def on_message_complete(self):
        request, self._request = self._request, None
        self._parsing = False
        if self._request_timer is not None and self._request_timer.active():
            self._request_timer.cancel()
        self._request_timer = None
        request.content = io.BytesIO(b"".join(self._body))
        request.complete = True
        request.expect_continue = False

    def _refuse_body(self):
        self._refuse(413, f"request body is larger than {self.factory.max_body_bytes} bytes "
                          "(limits.max_body_bytes)")
        raise _Abort()

    # -- refusals and timeouts -----------------------------------------------------------

    def _refuse(self, status: int, reason: str):
        """Answer (in its turn) with ``status`` and a one-line reason, then close."""
        if self.broken:
            return
        self.broken = True
        if self._request_timer is not None and self._request_timer.active():
            self._request_timer.cancel()
        self._request_timer = None
        parsing = self._request
        if parsing is not None and self.queue and self.queue[-1] is parsing:
            self.queue.pop()
        refusal = Request(self, parsing.method if parsing else b"GET", b"/", "1.1", [], False)
        refusal.error = (status, reason)
        refusal.complete = True
        self.queue.append(refusal)
        self._request = None

    def _upgrade(self):
        """A request asked for a protocol upgrade: answer it as plain HTTP, then close."""
        if self.queue and self.queue[-1].complete:
            self.queue[-1].keep_alive = False
            self.broken = True
        else:
            self._refuse(400, "protocol upgrades are not supported")

    def _request_timed_out(self):
        self._request_timer = None
        self._refuse(408, f"the request did not arrive within {self.factory.request_timeout:g} "
                          "s (limits.request_timeout_s)")
        self._advance()

    def _start_idle(self):
        """The connection is idle from now on. One timer per connection, not one per request:
        a request that begins meanwhile clears ``_idle_since``, and the timer, when it fires,
        closes the connection only if it has been idle long enough, else waits again."""
        if self.closing:
            return
        timeouts = self.factory.timeouts
        self._idle_since = timeouts.clock.seconds()
        if self._idle_timer is None:
            self._idle_timer = timeouts.call_later(self.factory.idle_timeout,
                                                   self._idle_timed_out)

    def _idle_timed_out(self):
        self._idle_timer = None
        since = self._idle_since
        if since is None:
            return  # busy: the next _start_idle arms it again
        timeouts = self.factory.timeouts
        left = since + self.factory.idle_timeout - timeouts.clock.seconds()
        if left > 0:
            self._idle_timer = timeouts.call_later(left, self._idle_timed_out)
            return
        self._close()

    def _close(self, linger: bool = False):
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        transport.unregisterProducer()
        half_close = getattr(transport, "loseWriteConnection", None)
        if linger and half_close is not None:
            # Send the answer and a FIN, but keep reading (and discarding) what the client
            # still sends for a while: closing with unread bytes would reset the connection
            # before the client has read the answer.
            self.broken = True
            if self.reading_paused:
                transport.resumeProducing()
            half_close()
            self._linger_timer = self.factory.clock.callLater(LINGER_S, transport.loseConnection)
        else:
            transport.loseConnection()

    # -- dispatch, in order --------------------------------------------------------------

    def _advance(self):
        if self._advancing:
            return
        self._advancing = True
        try:
            queue = self.queue
            while self.current is None and queue and not self.write_paused and not self.closing:
                request = queue[0]
                if not request.complete:
                    if request.expect_continue:
                        request.expect_continue = False
                        self.transport.write(CONTINUE)
                    break
                queue.popleft()
                self.current = request
                self._dispatch(request)
            if self.reading_paused and len(queue) <= self.factory.max_pipelined \
                    and not self.closing:
                self.reading_paused = False
                self.transport.resumeProducing()
            if self.current is None and not queue and not self._parsing:
                self._start_idle()
        finally:
            self._advancing = False

    def _dispatch(self, request: Request):
        if request.error is not None:
            status, reason = request.error
            request.finish(error_body(request, status, reason))
            return
        try:
            result = self.factory.route(request)
        except Exception:
            log.failure("unexpected error routing {method} {uri}", method=request.method,
                        uri=request.uri)
            request.headers.clear()
            result = error_body(request, 500, "internal server error")
        if isinstance(result, Deferred):
            request.deferred = result
            result.addBoth(request.settle)
        else:
            request.finish(result)

    def finished(self, request: Request):
        """``request``'s response is complete: count it, then the next one or close."""
        factory = self.factory
        if not request.lost:
            factory.metrics.count_request(request.method, request.code)
            if factory.access_log:
                peer = self.transport.getPeer()
                log.info('{peer} "{method} {uri}" {code}', peer=getattr(peer, "host", peer),
                         method=request.method.decode("latin-1"),
                         uri=request.uri.decode("latin-1"), code=request.code)
        if self.current is request:
            self.current = None
        if not request.keep_alive:
            self._close(linger=request.error is not None)
            return
        self._advance()

    # -- IPushProducer (the transport's write buffer) ------------------------------------

    def pauseProducing(self):
        self.write_paused = True
        if self.current is not None and self.current.producer is not None:
            self.current.producer.pauseProducing()

    def resumeProducing(self):
        self.write_paused = False
        if self.current is not None and self.current.producer is not None:
            self.current.producer.resumeProducing()
        self._advance()

    def stopProducing(self):
        pass  # connectionLost follows


class DataPlaneFactory(Factory):
    """The public listener's protocol factory: the URL map and the limits of every connection."""

    def __init__(self, core, config, clock, metrics=None, api: Api | None = None):
        self.api = api or Api(core, config, clock, metrics)
        self.metrics = self.api.metrics
        self.clock = clock
        limits = config.limits
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_body_bytes = limits.max_body_bytes
        self.idle_timeout = limits.idle_timeout_s
        self.request_timeout = limits.request_timeout_s
        self.max_pipelined = limits.max_pipelined_requests
        self.access_log = config.http.access_log
        # request and idle timeouts: armed and cancelled for every request, so coarse buckets
        # (fire at most 0.1 s late) instead of one reactor DelayedCall each
        self.timeouts = Timeouts(clock)
        self._date = (None, b"")
        # the control plane (metrics, admin API) is on the admin listener (ursula.admin); health
        # and ready answer here too, for load balancers
        self.pages = {b"/__ursula/health": self.api.health, b"/__ursula/ready": self.api.ready}

    def buildProtocol(self, addr):
        return HttpConnection(self)

    def date_line(self) -> bytes:
        second = int(self.clock.seconds())
        if self._date[0] != second:
            self._date = (second, b"date: %s\r\n" % formatdate(second, usegmt=True).encode())
        return self._date[1]

    def route(self, request: Request):
        """The URL map: what app.py's Klein routes serve, without werkzeug."""
        api, method, path = self.api, request.method, request.path
        if path == b"/":
            if method not in (b"GET", b"HEAD", b"OPTIONS"):
                return api.method_not_allowed(request, ROOT_METHODS)
            return api.root(request)
        page = self.pages.get(path)
        if page is not None:
            if method not in (b"GET", b"HEAD"):
                return api.method_not_allowed(request, PAGE_METHODS)
            return page(request)
        if path.startswith(b"/__ursula/"):
            return api.not_found(request)  # the rest of the control plane: the admin listener
        # Each segment percent-decoded once (so %2F in a name is a slash of the name, not a
        # separator), the path read as UTF-8; nothing is decoded twice.
        try:
            text = ("/".join(unquote_to_bytes(s).decode("utf-8") for s in path.split(b"/"))
                    if b"%" in path else path.decode("utf-8"))
        except UnicodeDecodeError:
            return error_body(request, 400, "the URL path is not valid UTF-8")
        for prefix in ("/v1/stream/", "/_default/"):
            if text.startswith(prefix + "__ds/"):  # reserved: routed before streams
                return api.reserved(request, DEFAULT_BUCKET, prefix[:-1],
                                    text[len(prefix) + 5:])
            if text.startswith(prefix) and len(text) > len(prefix) \
                    and text[len(prefix)] != "/":
                extension = split_extension(text[len(prefix):])
                if extension is not None:  # {stream}/snapshot, /bootstrap, ...
                    return api.extension(request, DEFAULT_BUCKET, *extension, True)
                if prefix == "/_default/" and text.endswith("/append-batch") \
                        and len(text) > len(prefix) + len("/append-batch"):
                    # the bucket layout's /{bucket}/{stream}/append-batch, for _default too
                    if method not in ALL_BATCH:
                        return api.method_not_allowed(request, ["POST", "OPTIONS"])
                    return api.append_batch(request, DEFAULT_BUCKET,
                                            text[len(prefix):-len("/append-batch")], True)
                if method not in ALL_STREAM:
                    return api.method_not_allowed(request, STREAM_METHODS)
                return api.stream(request, DEFAULT_BUCKET, text[len(prefix):], True)
        parts = text[1:].split("/") if text.startswith("/") else [""]
        if len(parts) > 2 and parts[1] == "__ds" and parts[0]:
            try:
                bucket = check_bucket(parts[0])
            except ProtocolError as error:
                return error_body(request, 400, error.reason)
            return api.reserved(request, bucket, "/" + bucket, "/".join(parts[2:]))
        if len(parts) in (2, 3) and parts[-1] == "" and all(parts[:-1]):
            parts.pop()  # a trailing slash
        if not all(parts):
            return api.not_found(request)
        if len(parts) == 2:
            if method not in ALL_STREAM:
                return api.method_not_allowed(request, STREAM_METHODS)
            return api.stream(request, parts[0], parts[1], False)
        if len(parts) == 1:
            if method not in ALL_BUCKET:
                return api.method_not_allowed(request, BUCKET_METHODS + ["HEAD"])
            return api.bucket(request, parts[0])
        if len(parts) == 3 and parts[2] == "append-batch":
            if method not in ALL_BATCH:
                return api.method_not_allowed(request, ["POST", "OPTIONS"])
            return api.append_batch(request, parts[0], parts[1])
        if len(parts) == 3 and parts[2] in EXTENSIONS_ONE:
            return api.extension(request, parts[0], parts[1], parts[2], None, False)
        if len(parts) == 4 and (parts[2] in EXTENSIONS_TWO or parts[2:] == ["compute", "state"]):
            return api.extension(request, parts[0], parts[1], parts[2], parts[3], False)
        return api.not_found(request)


def data_plane_factory(core, config, reactor, metrics=None) -> DataPlaneFactory:
    """The protocol factory the node listens with on ``[node] listen`` (and the core's
    subscription service, which sends webhooks for the groups it leads)."""
    factory = DataPlaneFactory(core, config, reactor, metrics)
    api = factory.api
    if api.keys is not None:
        from ursula.core.subscriptions import attach
        api.subscription_service = attach(core, config, reactor, api.keys)
        if api.subscription_service is not None:
            api.metrics.watch_subscriptions(api.subscription_service)
    return factory
