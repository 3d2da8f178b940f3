"""The Twisted front end, on treq: ``Client`` and the streams, followers, producers and
subscriptions it hands out. Every operation returns a Deferred (``await`` it in a coroutine
run by ``Deferred.fromCoroutine``/``ensureDeferred``, or add callbacks); a follower is also
an async iterator (``async for batch in stream.follow(): ...``) and has ``next()``.

The engine's coroutines (``ursula_client._engine``) are the same as on asyncio: here they run
as Deferreds on the reactor, with treq for HTTP. This is the only module that imports Twisted
or treq, so the rest of the package works without them.

May import: the standard library, Twisted, treq, zope.interface and ``ursula_client`` modules.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import treq
from twisted.internet import defer, error, protocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web import client as web_client
from twisted.web import http_headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from ursula_client import _engine
from ursula_client.core import ops
from ursula_client.core.errors import RequestTimeout, TransportError
from ursula_client.core.http import Endpoints, Request, Response, lower_headers
from ursula_client.core.producer import ProducerSettings
from ursula_client.core.retry import DEFAULT_POLICY, NotSent, RetryPolicy
from ursula_client.core.subscriptions import AckResult, Wake
from ursula_client.core.types import (
    AppendResult,
    BatchItem,
    Bootstrap,
    BucketEntry,
    BucketPage,
    CreateResult,
    ReadBatch,
    Snapshot,
    StreamInfo,
)

log = Logger()


def _d(coroutine: Coroutine[Any, Any, Any]) -> Deferred:
    return Deferred.fromCoroutine(coroutine)


class _Promise:
    def __init__(self) -> None:
        self.awaitable: Deferred = Deferred()

    def resolve(self, value: Any) -> None:
        if not self.awaitable.called:
            self.awaitable.callback(value)

    def reject(self, failure: BaseException) -> None:
        if not self.awaitable.called:
            self.awaitable.errback(failure)


class _Timer:
    def __init__(self, call: Any):
        self.call = call

    def cancel(self) -> None:
        if self.call.active():
            self.call.cancel()


class TwistedRuntime:
    def __init__(self, reactor: Any):
        self.reactor = reactor

    def now(self) -> float:
        return self.reactor.seconds()

    def sleep(self, seconds: float) -> Deferred:
        return deferLater(self.reactor, seconds, lambda: None)

    def call_later(self, seconds: float, fn: Callable[[], None]) -> _Timer:
        return _Timer(self.reactor.callLater(seconds, fn))

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        _d(coroutine).addErrback(
            lambda failure: None if failure.check(CancelledError)
            else log.failure("ursula_client task failed", failure))

    def promise(self) -> _Promise:
        return _Promise()


def _transport_error(failure: BaseException) -> TransportError:
    from twisted.web._newclient import RequestNotSent
    if isinstance(failure, TransportError):
        return failure
    if isinstance(failure, (error.ConnectError, RequestNotSent)):
        return NotSent(f"no connection: {failure!r}", failure)
    if isinstance(failure, (CancelledError, error.TimeoutError)):
        return RequestTimeout(f"no answer in time: {failure!r}", failure)
    return TransportError(f"the exchange failed: {failure!r}", failure)


class _BodyReader(protocol.Protocol):
    """Hands the chunks of a streaming answer to ``next_chunk`` callers."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.waiting: Deferred | None = None
        self.ended: BaseException | None = None
        self.done = False

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(data)
        else:
            self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.done = True
        from twisted.web.client import ResponseDone
        from twisted.web.http import PotentialDataLoss
        if reason is not None and not reason.check(ResponseDone, PotentialDataLoss):
            self.ended = _transport_error(reason.value)
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            if self.ended is not None:
                waiting.errback(self.ended)
            else:
                waiting.callback(None)


class _Body:
    def __init__(self, response: Any, reactor: Any, idle_timeout: float):
        self.status = response.code
        self.headers = lower_headers((k, v) for k, vs in response.headers.getAllRawHeaders()
                                     for v in vs)
        self.reader = _BodyReader()
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        response.deliverBody(self.reader)

    async def next_chunk(self) -> bytes | None:
        reader = self.reader
        if reader.chunks:
            return reader.chunks.pop(0)
        if reader.done:
            if reader.ended is not None:
                raise reader.ended
            return None
        waiting = reader.waiting = Deferred()
        timer = self.reactor.callLater(self.idle_timeout, waiting.cancel)
        try:
            return await waiting
        except CancelledError:
            self.close()
            raise RequestTimeout(f"no data for {self.idle_timeout} s") from None
        finally:
            if timer.active():
                timer.cancel()

    def close(self) -> None:
        transport = getattr(self.reader, "transport", None)
        if transport is not None and not self.reader.done:
            try:
                transport.stopProducing()
            except Exception:  # already gone
                pass


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body written at once when the connection takes the request (treq would
    write bytes from a cooperator, over several turns), then ``sent()``."""

    def __init__(self, body: bytes, sent: Callable[[], None]):
        self.body = body
        self.length = len(body)
        self.sent = sent

    def startProducing(self, consumer: Any) -> Deferred:  # noqa: N802 (Twisted's names)
        if self.body:
            consumer.write(self.body)
        self.sent()
        return defer.succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class TreqTransport:
    def __init__(self, reactor: Any, http_client: Any = None, max_connections: int = 32):
        self.reactor = reactor
        self.pool = web_client.HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = max_connections
        self.pool.retryAutomatically = False
        self.client = http_client or treq.client.HTTPClient(
            web_client.Agent(reactor, pool=self.pool))

    def _headers(self, request: Request) -> http_headers.Headers:
        headers = http_headers.Headers()
        for name, value in request.headers:
            headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        return headers

    def _request(self, url: str, request: Request,
                 sent: Callable[[], None] | None = None) -> Deferred:
        data: Any = request.body or None
        if sent is not None:
            data = _BytesProducer(request.body, sent)
        return self.client.request(request.method, (url + request.target).encode("ascii"),
                                   headers=self._headers(request), data=data, unbuffered=True,
                                   allow_redirects=False)

    async def send(self, url: str, request: Request, timeout: float,
                   sent: Callable[[], None] | None = None) -> Response:
        async def exchange() -> Response:
            answer = await self._request(url, request, sent)
            body = await treq.content(answer)
            return Response(answer.code, lower_headers(
                (k, v) for k, vs in answer.headers.getAllRawHeaders() for v in vs), body)
        d = _d(exchange())
        timer = self.reactor.callLater(timeout, d.cancel)
        try:
            return await d
        except Exception as failure:
            raise _transport_error(failure) from failure
        finally:
            if timer.active():
                timer.cancel()

    async def open(self, url: str, request: Request, timeout: float) -> _Body:
        d = self._request(url, request)
        timer = self.reactor.callLater(timeout, d.cancel)
        try:
            answer = await d
        except Exception as failure:
            raise _transport_error(failure) from failure
        finally:
            if timer.active():
                timer.cancel()
        return _Body(answer, self.reactor, timeout)

    async def aclose(self) -> None:
        await self.pool.closeCachedConnections()


class Follower:
    """``async for batch in follower`` (in a coroutine on the reactor), or ``next()`` for a
    Deferred of the next ``ReadBatch`` (errback ``StopAsyncIteration`` at the end)."""

    def __init__(self, inner: _engine.Follower):
        self._inner = inner

    @property
    def offset(self) -> str:
        return self._inner.offset

    @property
    def reconnects(self) -> int:
        return self._inner.reconnects

    @property
    def bootstraps(self) -> int:
        return self._inner.bootstraps

    def __aiter__(self) -> Follower:
        return self

    def __anext__(self) -> Deferred:
        return _d(self._inner.__anext__())

    def next(self) -> Deferred:
        return self.__anext__()

    async def records(self) -> Any:
        """Each message of a JSON stream (each chunk of bytes of another), one by one."""
        async for record in self._inner.records():
            yield record

    def close(self) -> Deferred:
        return _d(self._inner.aclose())


class Producer:
    """The idempotent producer: ``append`` returns a Deferred of the record's
    ``AppendResult``; ``flush()`` and ``close()`` Deferreds of when everything is
    acknowledged (see ``ursula_client.core.producer`` for the guarantees)."""

    def __init__(self, inner: _engine.ProducerDriver):
        self._inner = inner

    @property
    def epoch(self) -> int:
        return self._inner.epoch

    @property
    def stats(self) -> Any:
        return self._inner.stats

    def append(self, record: Any) -> Deferred:
        return self._inner.append(record)

    def flush(self) -> Deferred:
        return _d(self._inner.flush())

    def close(self, close_stream: bool = False) -> Deferred:
        return _d(self._inner.close(close_stream))


class Subscriptions:
    def __init__(self, inner: _engine.Subscriptions):
        self._inner = inner

    def put(self, sub_id: str, config: Mapping[str, Any]) -> Deferred:
        return _d(self._inner.put(sub_id, config))

    def get(self, sub_id: str) -> Deferred:
        return _d(self._inner.get(sub_id))

    def delete(self, sub_id: str) -> Deferred:
        return _d(self._inner.delete(sub_id))

    def add_streams(self, sub_id: str, streams: Iterable[str]) -> Deferred:
        return _d(self._inner.add_streams(sub_id, streams))

    def remove_stream(self, sub_id: str, path: str) -> Deferred:
        return _d(self._inner.remove_stream(sub_id, path))

    def claim(self, sub_id: str, worker: str) -> Deferred[Wake]:
        return _d(self._inner.claim(sub_id, worker))

    def ack(self, sub_id: str, wake: Wake, acks: Mapping[str, str] | None = None,
            done: bool = False) -> Deferred[AckResult]:
        return _d(self._inner.ack(sub_id, wake, acks, done))

    def callback(self, sub_id: str, wake: Wake, acks: Mapping[str, str] | None = None,
                 done: bool = False) -> Deferred[AckResult]:
        return _d(self._inner.callback(sub_id, wake, acks, done))

    def release(self, sub_id: str, wake: Wake) -> Deferred:
        return _d(self._inner.release(sub_id, wake))

    def jwks(self) -> Deferred:
        return _d(self._inner.jwks())


class Stream:
    """A stream of a ``Client`` (see ``ursula_client._engine.StreamHandle`` for each
    operation's meaning; here each returns a Deferred)."""

    def __init__(self, inner: _engine.StreamHandle):
        self._inner = inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def ref(self) -> ops.StreamRef:
        return self._inner.ref

    @property
    def content_type(self) -> str | None:
        return self._inner.content_type

    def create(self, content_type: str | None = None, *, ttl_seconds: int | None = None,
               expires_at: str | None = None, closed: bool = False, data: bytes | None = None,
               fork_from: Stream | ops.StreamRef | str | None = None,
               fork_offset: str | None = None, fork_sub_offset: int | None = None,
               attrs: Mapping[str, Any] | None = None) -> Deferred[CreateResult]:
        source = fork_from._inner if isinstance(fork_from, Stream) else fork_from
        return _d(self._inner.create(content_type, ttl_seconds=ttl_seconds,
                                     expires_at=expires_at, closed=closed, data=data,
                                     fork_from=source, fork_offset=fork_offset,
                                     fork_sub_offset=fork_sub_offset, attrs=attrs))

    def append(self, data: Any, *, stream_seq: str | None = None, if_match: str | None = None,
               close: bool = False) -> Deferred[AppendResult]:
        return _d(self._inner.append(data, stream_seq=stream_seq, if_match=if_match,
                                     close=close))

    def append_json(self, records: Iterable[Any]) -> Deferred[AppendResult]:
        return _d(self._inner.append_json(records))

    def append_batch(self, frames: Iterable[Any], if_match: str | None = None) -> Deferred[list[BatchItem]]:
        return _d(self._inner.append_batch(frames, if_match))

    def close(self, data: Any = None) -> Deferred[AppendResult]:
        return _d(self._inner.close(data))

    def head(self) -> Deferred[StreamInfo]:
        return _d(self._inner.head())

    def exists(self) -> Deferred[bool]:
        return _d(self._inner.exists())

    def delete(self) -> Deferred[None]:
        return _d(self._inner.delete())

    def read(self, offset: str = ops.START) -> Deferred[ReadBatch]:
        return _d(self._inner.read(offset))

    def read_all(self, offset: str = ops.START) -> Deferred[ReadBatch]:
        return _d(self._inner.read_all(offset))

    def publish_snapshot(self, offset: str, body: Any, *, match: str | None = None,
                         content_type: str | None = None) -> Deferred[Snapshot]:
        return _d(self._inner.publish_snapshot(offset, body, match=match,
                                                        content_type=content_type))

    def get_snapshot(self, offset: str | None = None) -> Deferred[Snapshot | None]:
        return _d(self._inner.get_snapshot(offset))

    def set_retention(self, offset: str) -> Deferred[str]:
        return _d(self._inner.set_retention(offset))

    def bootstrap(self) -> Deferred[Bootstrap]:
        return _d(self._inner.bootstrap())

    def get_attrs(self) -> Deferred[dict[str, Any]]:
        return _d(self._inner.get_attrs())

    def set_attrs(self, attrs: Mapping[str, Any]) -> Deferred[None]:
        return _d(self._inner.set_attrs(attrs))

    def follow(self, offset: str = ops.START, *, live: str = "long-poll",
               include_empty: bool = False, timeout: float | None = None,
               retry: RetryPolicy = _engine.FOLLOW_POLICY,
               on_retained: str = "raise") -> Follower:
        return Follower(self._inner.follow(offset, live=live, include_empty=include_empty,
                                           timeout=timeout, retry=retry,
                                           on_retained=on_retained))

    def producer(self, producer_id: str, *, epoch: int = 0, auto_claim: bool = False,
                 content_type: str | None = None, settings: ProducerSettings | None = None,
                 **options: Any) -> Producer:
        return Producer(self._inner.producer(producer_id, epoch=epoch, auto_claim=auto_claim,
                                             content_type=content_type, settings=settings, **options))

    def subscriptions(self) -> Subscriptions:
        return Subscriptions(self._inner.subscriptions())


class Client:
    """A client of one ursula node or cluster (``base_url``: a URL, or every node's URL).
    ``reactor``: the reactor to run on (default: the global one)."""

    def __init__(self, base_url: str | Sequence[str], *, reactor: Any = None,
                 timeout: float = 30.0, retry: RetryPolicy = DEFAULT_POLICY,
                 http_client: Any = None):
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.reactor = reactor
        self.session = _engine.Session(TreqTransport(reactor, http_client),
                                       TwistedRuntime(reactor), Endpoints(base_url),
                                       timeout=timeout, retry=retry)

    @property
    def endpoints(self) -> Endpoints:
        return self.session.endpoints

    def stream(self, name: str, bucket: str | None = None,
               content_type: str | None = None) -> Stream:
        return Stream(_engine.StreamHandle(self.session, ops.StreamRef(name, bucket),
                                           content_type))

    def producer(self, stream: str | Stream, producer_id: str, *, bucket: str | None = None,
                 **options: Any) -> Producer:
        handle = stream if isinstance(stream, Stream) else self.stream(stream, bucket)
        return handle.producer(producer_id, **options)

    def subscriptions(self, bucket: str | None = None) -> Subscriptions:
        return Subscriptions(_engine.Subscriptions(self.session, bucket))

    def create_bucket(self, bucket: str) -> Deferred[bool]:
        return _d(self.session.create_bucket(bucket))

    def delete_bucket(self, bucket: str) -> Deferred[None]:
        return _d(self.session.delete_bucket(bucket))

    def list_bucket(self, bucket: str, limit: int | None = None,
                    cursor: str | None = None) -> Deferred[BucketPage]:
        return _d(self.session.list_bucket(bucket, limit, cursor))

    def list_streams(self, bucket: str) -> Deferred[list[BucketEntry]]:
        return _d(self.session.list_streams(bucket))

    def close(self) -> Deferred[None]:
        return _d(self.session.close())


__all__ = ["Client", "Stream", "Follower", "Producer", "Subscriptions"]
