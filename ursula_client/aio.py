"""The asyncio front end, on httpx: ``AsyncClient`` and the streams, followers, producers and
subscriptions it hands out (their methods are coroutines; ``Producer.append`` returns an
asyncio Future).

May import: the standard library, httpx and ``ursula_client`` modules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import httpx

from ursula_client import _engine
from ursula_client.core import ops
from ursula_client.core.errors import RequestTimeout, TransportError
from ursula_client.core.http import Endpoints, Request, Response, lower_headers
from ursula_client.core.producer import ProducerSettings
from ursula_client.core.retry import DEFAULT_POLICY, NotSent, RetryPolicy

log = logging.getLogger("ursula_client")

# the engine's classes are the asyncio API as they are: their coroutines run on asyncio
AsyncStream = _engine.StreamHandle
Follower = _engine.Follower
Producer = _engine.ProducerDriver
Subscriptions = _engine.Subscriptions


class _Promise:
    def __init__(self) -> None:
        self.awaitable: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def resolve(self, value: Any) -> None:
        if not self.awaitable.done():
            self.awaitable.set_result(value)

    def reject(self, error: BaseException) -> None:
        if not self.awaitable.done():
            self.awaitable.set_exception(error)


class AsyncioRuntime:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        return asyncio.sleep(seconds)

    def call_later(self, seconds: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, fn)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ursula_client task failed", exc_info=task.exception())

    def promise(self) -> _Promise:
        return _Promise()


def _error(error: httpx.HTTPError) -> TransportError:
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return NotSent(f"no connection: {error!r}", error)
    if isinstance(error, httpx.TimeoutException):
        return RequestTimeout(f"no answer in time: {error!r}", error)
    return TransportError(f"the exchange failed: {error!r}", error)


class _Body:
    def __init__(self, response: httpx.Response, chunks: Any):
        self.status = response.status_code
        self.headers = lower_headers(response.headers.raw)
        self._response = response
        self._chunks = chunks

    async def next_chunk(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.HTTPError as error:
            raise _error(error) from error

    def close(self) -> None:
        response = self._response
        try:
            asyncio.get_running_loop().create_task(response.aclose())
        except RuntimeError:  # no loop any more
            pass


class HttpxTransport:
    def __init__(self, client: httpx.AsyncClient | None = None, max_connections: int = 100):
        self.client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            follow_redirects=False)
        self._own = client is None

    def _build(self, url: str, request: Request, timeout: float,
               sent: Callable[[], None] | None = None) -> httpx.Request:
        extensions = None
        if sent is not None:
            async def trace(event: str, info: object) -> None:
                if event.endswith("send_request_body.complete"):
                    sent()
            extensions = {"trace": trace}
        return self.client.build_request(request.method, url + request.target,
                                         headers=list(request.headers),
                                         content=request.body or None,
                                         timeout=httpx.Timeout(timeout), extensions=extensions)

    async def send(self, url: str, request: Request, timeout: float,
                   sent: Callable[[], None] | None = None) -> Response:
        try:
            answer = await self.client.send(self._build(url, request, timeout, sent))
        except httpx.HTTPError as error:
            raise _error(error) from error
        return Response(answer.status_code, lower_headers(answer.headers.raw), answer.content)

    async def open(self, url: str, request: Request, timeout: float) -> _Body:
        try:
            answer = await self.client.send(self._build(url, request, timeout), stream=True)
        except httpx.HTTPError as error:
            raise _error(error) from error
        return _Body(answer, answer.aiter_raw())

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()


class AsyncClient:
    """A client of one ursula node or cluster: ``base_url`` is a URL or a list of every
    node's URL (the client moves to the next node when one does not answer).

    ``timeout``: seconds per request (long-poll included); ``retry``: the policy of one-off
    requests. Use as ``async with AsyncClient(...) as client:`` or call ``aclose()``."""

    def __init__(self, base_url: str | Sequence[str], *, timeout: float = 30.0,
                 retry: RetryPolicy = DEFAULT_POLICY, httpx_client: httpx.AsyncClient | None = None):
        self.session = _engine.Session(HttpxTransport(httpx_client), AsyncioRuntime(),
                                       Endpoints(base_url), timeout=timeout, retry=retry)

    @property
    def endpoints(self) -> Endpoints:
        return self.session.endpoints

    def stream(self, name: str, bucket: str | None = None,
               content_type: str | None = None) -> AsyncStream:
        """A handle on a stream (no request is made): ``name`` in the upstream layout
        (``/v1/stream/<name>``), or in ``bucket`` (``/<bucket>/<name>``)."""
        return _engine.StreamHandle(self.session, ops.StreamRef(name, bucket), content_type)

    def producer(self, stream: str | AsyncStream, producer_id: str, *, bucket: str | None = None,
                 epoch: int = 0, auto_claim: bool = False, content_type: str | None = None,
                 settings: ProducerSettings | None = None, **options: Any) -> Producer:
        """An idempotent producer for ``stream``; ``options`` are ``ProducerSettings`` fields
        (``linger``, ``max_batch_bytes``, ``max_in_flight``, ``delivery_timeout``, ...)."""
        handle = stream if isinstance(stream, _engine.StreamHandle) \
            else self.stream(stream, bucket)
        return handle.producer(producer_id, epoch=epoch, auto_claim=auto_claim,
                               content_type=content_type, settings=settings, **options)

    def subscriptions(self, bucket: str | None = None) -> Subscriptions:
        return _engine.Subscriptions(self.session, bucket)

    async def create_bucket(self, bucket: str) -> bool:
        return await self.session.create_bucket(bucket)

    async def delete_bucket(self, bucket: str) -> None:
        await self.session.delete_bucket(bucket)

    async def list_bucket(self, bucket: str, limit: int | None = None,
                          cursor: str | None = None) -> ops.BucketPage:
        return await self.session.list_bucket(bucket, limit, cursor)

    async def list_streams(self, bucket: str) -> list[ops.BucketEntry]:
        return await self.session.list_streams(bucket)

    async def aclose(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncClient", "AsyncStream", "Follower", "Producer", "Subscriptions",
           "ProducerSettings", "RetryPolicy"]
