"""The blocking front end, for scripts: ``Client`` runs the asyncio front end
(``ursula_client.aio``) on an event loop in a background thread and waits for each call.
``Producer.append`` returns a ``concurrent.futures.Future`` at once (the producer batches and
pipelines in the background); ``Stream.follow`` is a plain generator.

May import: the standard library and ``ursula_client`` modules (httpx through
``ursula_client.aio``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ursula_client import _engine, aio
from ursula_client.core import ops
from ursula_client.core.producer import ProducerSettings
from ursula_client.core.retry import DEFAULT_POLICY, RetryPolicy
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

T = TypeVar("T")


class _Loop:
    """An asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ursula-client",
                                       daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("a blocking call from the client's own loop thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


class Follower:
    """A generator of ``ReadBatch`` (see ``ursula_client._engine.Follower``)."""

    def __init__(self, loop: _Loop, inner: _engine.Follower):
        self._loop = loop
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

    def __iter__(self) -> Iterator[ReadBatch]:
        return self

    def __next__(self) -> ReadBatch:
        try:
            return self._loop.run(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def records(self) -> Iterator[Any]:
        for batch in self:
            if batch.json_mode:
                yield from batch.records
            elif batch.data:
                yield batch.data

    def close(self) -> None:
        self._loop.run(self._inner.aclose())

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FuturePromise:
    """The producer settles the caller's ``concurrent.futures.Future`` directly."""

    __slots__ = ("awaitable",)

    def __init__(self, future: concurrent.futures.Future[Any]):
        self.awaitable = future

    def resolve(self, value: Any) -> None:
        if not self.awaitable.done():
            self.awaitable.set_result(value)

    def reject(self, error: BaseException) -> None:
        if not self.awaitable.done():
            self.awaitable.set_exception(error)


class Producer:
    """The idempotent producer: ``append`` hands records to the loop thread in bunches (one
    wake-up of the loop for all the records appended meanwhile)."""

    def __init__(self, loop: _Loop, inner: _engine.ProducerDriver):
        self._loop = loop
        self._inner = inner
        self._lock = threading.Lock()
        self._queue: list[tuple[Any, concurrent.futures.Future[AppendResult]]] = []
        self._scheduled = False

    @property
    def epoch(self) -> int:
        return self._inner.epoch

    @property
    def stats(self) -> Any:
        return self._inner.stats

    def append(self, record: Any) -> concurrent.futures.Future[AppendResult]:
        """Queue a record; the Future completes when the server holds it."""
        result: concurrent.futures.Future[AppendResult] = concurrent.futures.Future()
        with self._lock:
            self._queue.append((record, result))
            if self._scheduled:
                return result
            self._scheduled = True
        self._loop.call(self._drain)
        return result

    def _drain(self) -> None:
        with self._lock:
            items, self._queue = self._queue, []
            self._scheduled = False
        for record, result in items:
            self._append(record, result)

    def _append(self, record: Any, result: concurrent.futures.Future[AppendResult]) -> None:
        try:
            self._inner.append(record, _FuturePromise(result))
        except Exception as error:
            result.set_exception(error)

    def flush(self, timeout: float | None = None) -> None:
        self._loop.run(self._flush(), timeout)

    async def _flush(self) -> None:
        await self._inner.flush()

    def close(self, close_stream: bool = False,
              timeout: float | None = None) -> AppendResult | None:
        return self._loop.run(self._inner.close(close_stream), timeout)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriptions:
    def __init__(self, loop: _Loop, inner: _engine.Subscriptions):
        self._loop = loop
        self._inner = inner

    def put(self, sub_id: str, config: Mapping[str, Any]) -> tuple[bool, dict]:
        return self._loop.run(self._inner.put(sub_id, config))

    def get(self, sub_id: str) -> dict:
        return self._loop.run(self._inner.get(sub_id))

    def delete(self, sub_id: str) -> None:
        self._loop.run(self._inner.delete(sub_id))

    def add_streams(self, sub_id: str, streams: Iterable[str]) -> None:
        self._loop.run(self._inner.add_streams(sub_id, streams))

    def remove_stream(self, sub_id: str, path: str) -> None:
        self._loop.run(self._inner.remove_stream(sub_id, path))

    def claim(self, sub_id: str, worker: str) -> Wake:
        return self._loop.run(self._inner.claim(sub_id, worker))

    def ack(self, sub_id: str, wake: Wake, acks: Mapping[str, str] | None = None,
            done: bool = False) -> AckResult:
        return self._loop.run(self._inner.ack(sub_id, wake, acks, done))

    def callback(self, sub_id: str, wake: Wake, acks: Mapping[str, str] | None = None,
                 done: bool = False) -> AckResult:
        return self._loop.run(self._inner.callback(sub_id, wake, acks, done))

    def release(self, sub_id: str, wake: Wake) -> None:
        self._loop.run(self._inner.release(sub_id, wake))

    def jwks(self) -> dict:
        return self._loop.run(self._inner.jwks())


class Stream:
    def __init__(self, loop: _Loop, inner: _engine.StreamHandle):
        self._loop = loop
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
               attrs: Mapping[str, Any] | None = None) -> CreateResult:
        source = fork_from._inner if isinstance(fork_from, Stream) else fork_from
        return self._loop.run(self._inner.create(
            content_type, ttl_seconds=ttl_seconds, expires_at=expires_at, closed=closed,
            data=data, fork_from=source, fork_offset=fork_offset,
            fork_sub_offset=fork_sub_offset, attrs=attrs))

    def append(self, data: Any, *, stream_seq: str | None = None, if_match: str | None = None,
               close: bool = False) -> AppendResult:
        return self._loop.run(self._inner.append(data, stream_seq=stream_seq,
                                                 if_match=if_match, close=close))

    def append_json(self, records: Iterable[Any]) -> AppendResult:
        return self._loop.run(self._inner.append_json(records))

    def append_batch(self, frames: Iterable[Any], if_match: str | None = None) -> list[BatchItem]:
        return self._loop.run(self._inner.append_batch(frames, if_match))

    def close(self, data: Any = None) -> AppendResult:
        return self._loop.run(self._inner.close(data))

    def head(self) -> StreamInfo:
        return self._loop.run(self._inner.head())

    def exists(self) -> bool:
        return self._loop.run(self._inner.exists())

    def delete(self) -> None:
        self._loop.run(self._inner.delete())

    def read(self, offset: str = ops.START) -> ReadBatch:
        return self._loop.run(self._inner.read(offset))

    def read_all(self, offset: str = ops.START) -> ReadBatch:
        return self._loop.run(self._inner.read_all(offset))

    def publish_snapshot(self, offset: str, body: Any, *, match: str | None = None,
                         content_type: str | None = None) -> Snapshot:
        return self._loop.run(self._inner.publish_snapshot(offset, body, match=match,
                                                        content_type=content_type))

    def get_snapshot(self, offset: str | None = None) -> Snapshot | None:
        return self._loop.run(self._inner.get_snapshot(offset))

    def set_retention(self, offset: str) -> str:
        return self._loop.run(self._inner.set_retention(offset))

    def bootstrap(self) -> Bootstrap:
        return self._loop.run(self._inner.bootstrap())

    def get_attrs(self) -> dict[str, Any]:
        return self._loop.run(self._inner.get_attrs())

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        return self._loop.run(self._inner.set_attrs(attrs))

    def follow(self, offset: str = ops.START, *, live: str = "long-poll",
               include_empty: bool = False, timeout: float | None = None,
               retry: RetryPolicy = _engine.FOLLOW_POLICY,
               on_retained: str = "raise") -> Follower:
        return Follower(self._loop, self._inner.follow(
            offset, live=live, include_empty=include_empty, timeout=timeout, retry=retry,
            on_retained=on_retained))

    def producer(self, producer_id: str, *, epoch: int = 0, auto_claim: bool = False,
                 content_type: str | None = None, settings: ProducerSettings | None = None,
                 **options: Any) -> Producer:
        return Producer(self._loop, self._inner.producer(
            producer_id, epoch=epoch, auto_claim=auto_claim, content_type=content_type,
            settings=settings, **options))

    def subscriptions(self) -> Subscriptions:
        return Subscriptions(self._loop, self._inner.subscriptions())


class Client:
    """A blocking client (``base_url``: a URL or every node's URL). Close it (or use
    ``with``) to stop its background thread."""

    def __init__(self, base_url: str | Sequence[str], *, timeout: float = 30.0,
                 retry: RetryPolicy = DEFAULT_POLICY):
        self._loop = _Loop()

        async def make() -> aio.AsyncClient:
            return aio.AsyncClient(base_url, timeout=timeout, retry=retry)
        self._client = self._loop.run(make())

    @property
    def endpoints(self) -> Any:
        return self._client.endpoints

    def stream(self, name: str, bucket: str | None = None,
               content_type: str | None = None) -> Stream:
        return Stream(self._loop, self._client.stream(name, bucket, content_type))

    def producer(self, stream: str | Stream, producer_id: str, *, bucket: str | None = None,
                 **options: Any) -> Producer:
        handle = stream if isinstance(stream, Stream) else self.stream(stream, bucket)
        return handle.producer(producer_id, **options)

    def subscriptions(self, bucket: str | None = None) -> Subscriptions:
        return Subscriptions(self._loop, self._client.subscriptions(bucket))

    def create_bucket(self, bucket: str) -> bool:
        return self._loop.run(self._client.create_bucket(bucket))

    def delete_bucket(self, bucket: str) -> None:
        self._loop.run(self._client.delete_bucket(bucket))

    def list_bucket(self, bucket: str, limit: int | None = None,
                    cursor: str | None = None) -> BucketPage:
        return self._loop.run(self._client.list_bucket(bucket, limit, cursor))

    def list_streams(self, bucket: str) -> list[BucketEntry]:
        return self._loop.run(self._client.list_streams(bucket))

    def close(self) -> None:
        try:
            self._loop.run(self._client.aclose(), 10)
        finally:
            self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
