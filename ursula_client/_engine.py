"""What every front end shares above the protocol core, written once as coroutines: requests
retried across a cluster's nodes, stream and bucket operations, the follower loop, the
producer's driver, subscriptions.

The engine does no I/O itself. A front end gives it two small objects: a ``Runtime`` (a clock,
timers, tasks and promises of its event loop) and a ``Transport`` (one HTTP exchange, or an
answer read as a stream of bytes). ``ursula_client.aio`` runs these coroutines on asyncio
with httpx; ``ursula_client.twisted`` runs the same coroutines as Deferreds with treq.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from ursula_client.core import extensions as ext
from ursula_client.core import ops
from ursula_client.core import subscriptions as subs
from ursula_client.core.errors import TransportError, UrsulaError
from ursula_client.core.follow import FollowState
from ursula_client.core.http import Endpoints, Request, Response
from ursula_client.core.offsets import START
from ursula_client.core.producer import ProducerCore, ProducerSettings, Send
from ursula_client.core.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    moves_endpoint,
    retry_after,
    should_retry,
)
from ursula_client.core.sse import StreamEvents
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
    encode_json_records,
    is_json_type,
)

T = TypeVar("T")

#: a follower retries for ever (it only reads); back-off up to 2 s
FOLLOW_POLICY = RetryPolicy(initial_delay=0.05, max_delay=2.0, deadline=None)


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Promise(Protocol):
    """A value to come: ``awaitable`` is what callers get (an asyncio Future, a Deferred)."""

    awaitable: Any

    def resolve(self, value: Any) -> None: ...

    def reject(self, error: BaseException) -> None: ...


class Runtime(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> Awaitable[None]: ...

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Cancellable: ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...

    def promise(self) -> Promise: ...


class BodyStream(Protocol):
    """An answer whose body is read as it comes (SSE)."""

    status: int
    headers: Mapping[str, str]

    async def next_chunk(self) -> bytes | None: ...  # None at the end of the body

    def close(self) -> None: ...


class Transport(Protocol):
    async def send(self, url: str, request: Request, timeout: float,
                   sent: Callable[[], None] | None = None) -> Response:
        """One exchange; ``sent()`` is called once the whole request has been written (or
        never, if it was not)."""

    async def open(self, url: str, request: Request, timeout: float) -> BodyStream: ...

    async def aclose(self) -> None: ...


class Session:
    """One client: its nodes, transport, runtime and defaults."""

    def __init__(self, transport: Transport, runtime: Runtime, endpoints: Endpoints, *,
                 timeout: float = 30.0, retry: RetryPolicy = DEFAULT_POLICY,
                 rng: random.Random | None = None):
        self.transport = transport
        self.runtime = runtime
        self.endpoints = endpoints
        self.timeout = timeout
        self.retry = retry
        self.rng = rng or random.Random()

    async def call(self, request: Request, parse: Callable[[Response, Request], T],
                   policy: RetryPolicy | None = None) -> T:
        """Send ``request`` and parse its answer, retrying what is safe to retry (see
        ``ursula_client.core.retry``) on this node and the next."""
        policy = policy or self.retry
        started = self.runtime.now()
        attempt = 0
        while True:
            attempt += 1
            url = self.endpoints.current()
            try:
                response = await self.transport.send(url, request,
                                                     request.timeout or self.timeout)
                return parse(response, request)
            except UrsulaError as failure:
                error: UrsulaError = failure
            if not should_retry(request, error) \
                    or policy.gives_up(attempt, self.runtime.now() - started):
                raise error
            if moves_endpoint(error):
                self.endpoints.failed(url)
            await self.runtime.sleep(policy.delay(attempt, retry_after(error), self.rng))

    async def close(self) -> None:
        await self.transport.aclose()

    # -- buckets ----------------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> bool:
        return await self.call(ops.create_bucket_request(bucket), ops.parse_create_bucket)

    async def delete_bucket(self, bucket: str) -> None:
        await self.call(ops.delete_bucket_request(bucket), ops.parse_delete_bucket)

    async def list_bucket(self, bucket: str, limit: int | None = None,
                          cursor: str | None = None) -> BucketPage:
        return await self.call(ops.list_bucket_request(bucket, limit, cursor),
                               ops.parse_list_bucket)

    async def list_streams(self, bucket: str, page_size: int = 100) -> list[BucketEntry]:
        """Every stream of a bucket (all pages)."""
        out: list[BucketEntry] = []
        cursor = None
        while True:
            page = await self.list_bucket(bucket, page_size, cursor)
            out.extend(page.streams)
            if page.next_cursor is None or not page.streams:
                return out
            cursor = page.next_cursor


class StreamHandle:
    """One stream (``ref``); ``content_type`` is learnt from ``create`` or ``head`` if not
    given."""

    def __init__(self, session: Session, ref: ops.StreamRef, content_type: str | None = None):
        self.session = session
        self.ref = ref
        self.content_type = content_type

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def path(self) -> str:
        return self.ref.path

    async def create(self, content_type: str | None = None, *, ttl_seconds: int | None = None,
                     expires_at: str | None = None, closed: bool = False,
                     data: bytes | None = None, fork_from: StreamHandle | ops.StreamRef
                     | str | None = None, fork_offset: str | None = None,
                     fork_sub_offset: int | None = None,
                     attrs: Mapping[str, Any] | None = None) -> CreateResult:
        """Create the stream (idempotent: the same configuration again answers
        ``created=False``; a different one raises ``StreamExists``). ``fork_from``: a stream
        (handle, ref or name in the same bucket) whose data up to ``fork_offset`` (default its
        tail) this stream starts with. ``attrs``: the stream's attribute object
        (``Stream-Attrs``; other attributes on an existing stream are ``StreamExists``)."""
        source = None
        if fork_from is not None:
            source = fork_from.ref if isinstance(fork_from, StreamHandle) else \
                fork_from if isinstance(fork_from, ops.StreamRef) else \
                ops.StreamRef(fork_from, self.ref.bucket)
        if content_type is None and source is None:
            content_type = self.content_type or "application/octet-stream"
        request = ops.create_request(self.ref, content_type, ttl_seconds=ttl_seconds,
                                     expires_at=expires_at, closed=closed, body=data or b"",
                                     fork_from=source, fork_offset=fork_offset,
                                     fork_sub_offset=fork_sub_offset, attrs=attrs)
        result = await self.session.call(request, ops.parse_create)
        if content_type is not None:
            self.content_type = content_type
        return result

    async def _content_type(self) -> str:
        if self.content_type is None:
            self.content_type = (await self.head()).content_type
        return self.content_type

    async def encode(self, data: Any) -> tuple[bytes, str]:
        """(body, content type) for one record: bytes are sent as they are; on a JSON stream
        any other value is one JSON message; on other streams str is UTF-8."""
        content_type = await self._content_type()
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data), content_type
        if is_json_type(content_type):
            return encode_json_records([data]), content_type
        if isinstance(data, str):
            return data.encode("utf-8"), content_type
        raise TypeError("append bytes or str (or, on a JSON stream, any JSON value)")

    async def append(self, data: Any, *, stream_seq: str | None = None,
                     if_match: str | None = None, close: bool = False) -> AppendResult:
        """Append one record (at most once: a plain append is not retried once it may have
        reached the server; use a ``producer`` for exactly-once). ``if_match``: append only
        if the tail is this offset, else ``PreconditionFailed`` with ``current_tail``."""
        body, content_type = await self.encode(data)
        request = ops.append_request(self.ref, body, content_type, close=close,
                                     stream_seq=stream_seq, if_match=if_match)
        return await self.session.call(request, ops.parse_append)

    async def append_json(self, records: Iterable[Any]) -> AppendResult:
        """Several JSON messages in one POST (stored as separate messages, atomically)."""
        request = ops.append_request(self.ref, encode_json_records(list(records)),
                                     await self._content_type())
        return await self.session.call(request, ops.parse_append)

    async def append_batch(self, frames: Iterable[Any],
                           if_match: str | None = None) -> list[BatchItem]:
        """ursula's ``append-batch``: each frame appended on its own, in order, one request
        (streams in a named bucket only)."""
        ops.append_batch_request(self.ref, [b""], "")  # refuses the _default bucket early
        content_type = await self._content_type()
        bodies = [(await self.encode(f))[0] for f in frames]
        request = ops.append_batch_request(self.ref, bodies, content_type, if_match)
        return await self.session.call(request, ops.parse_append_batch)

    async def close(self, data: Any = None) -> AppendResult:
        """Close the stream (idempotent), appending ``data`` first if given."""
        if data is None:
            request = ops.append_request(self.ref, b"", "", close=True)
        else:
            body, content_type = await self.encode(data)
            request = ops.append_request(self.ref, body, content_type, close=True)
        return await self.session.call(request, ops.parse_append)

    async def head(self) -> StreamInfo:
        info = await self.session.call(ops.head_request(self.ref), ops.parse_head)
        self.content_type = info.content_type
        return info

    async def exists(self) -> bool:
        from ursula_client.core.errors import StreamNotFound
        try:
            await self.head()
        except StreamNotFound:
            return False
        return True

    async def delete(self) -> None:
        await self.session.call(ops.delete_request(self.ref), ops.parse_delete)

    async def read(self, offset: str = START) -> ReadBatch:
        """One catch-up read from ``offset`` (the server may return less than all: resume from
        ``next_offset`` until ``up_to_date``)."""
        offset_ = offset

        def parse(response: Response, request: Request) -> ReadBatch:
            batch = ops.parse_read(response, request, offset_)
            assert batch is not None
            return batch
        return await self.session.call(ops.read_request(self.ref, offset), parse)

    async def read_all(self, offset: str = START) -> ReadBatch:
        """Everything from ``offset`` to the tail (several reads if needed), as one batch."""
        first = await self.read(offset)
        parts, records, last = [first.data], None, first
        if first.json_mode:
            records = list(first.records)
        while not last.up_to_date and not last.closed:
            last = await self.read(last.next_offset)
            parts.append(last.data)
            if records is not None:
                records.extend(last.records)
        if records is not None:
            import json
            data = json.dumps(records, separators=(",", ":")).encode()
        else:
            data = b"".join(parts)
        return ReadBatch(offset=first.offset, next_offset=last.next_offset, data=data,
                         json_mode=first.json_mode, up_to_date=last.up_to_date,
                         closed=last.closed, cursor=last.cursor, etag=last.etag,
                         _records=tuple(records) if records is not None else None)

    # -- snapshots, retention, bootstrap, attributes (ursula extensions) -------------------

    async def publish_snapshot(self, offset: str, body: Any, *, match: str | None = None,
                               content_type: str | None = None) -> Snapshot:
        """Publish the application's state of ``[start, offset)`` (``offset`` a record
        boundary, e.g. an ``AppendResult.next_offset``). ``body``: bytes (of
        ``content_type``, default ``application/octet-stream``), str, or any JSON value.
        ``match``: only if the current snapshot's digest is this (``SnapshotMatchFailed``
        otherwise). Returns the snapshot with its ``digest``. ``SnapshotConflict`` (409: past
        the tail, older than the latest, another one at this offset), ``BadRequest`` (not a
        record boundary), ``Retained`` (below the floor)."""
        data, ctype = ext.encode_snapshot(body, content_type)
        request = ext.publish_snapshot_request(self.ref, offset, data, ctype, match=match)
        return await self.session.call(request, ext.parse_publish_snapshot)

    async def get_snapshot(self, offset: str | None = None) -> Snapshot | None:
        """The latest snapshot (``offset`` None), or the one at ``offset``; None when there
        is none (``StreamNotFound`` when the stream does not exist, ``Retained`` below the
        floor)."""
        found: str | Snapshot | None = offset
        for _ in range(5):
            if found is None:
                found = await self.session.call(ext.latest_snapshot_request(self.ref),
                                                ext.parse_latest_snapshot)
                if found is None:
                    await self.head()  # no snapshot, or StreamNotFound
                    return None
            if isinstance(found, Snapshot):
                return found
            snapshot = await self.session.call(ext.snapshot_request(self.ref, found),
                                               ext.parse_snapshot)
            if snapshot is not None:
                return snapshot
            await self.head()  # StreamNotFound, or no snapshot there
            if offset is not None:
                return None
            found = None  # the latest was replaced in between: ask again
        raise UrsulaError("the latest snapshot was replaced five times while being read")

    async def set_retention(self, offset: str) -> str:
        """Move the retention floor up to ``offset`` (at most the latest snapshot's offset):
        reads below it raise ``Retained`` from now on. Returns the floor.
        ``RetentionConflict`` (409: no snapshot yet, past the latest snapshot, backwards)."""
        return await self.session.call(ext.retention_request(self.ref, offset),
                                       ext.parse_retention)

    async def bootstrap(self) -> Bootstrap:
        """The latest snapshot and the records after it (``Bootstrap``); when not
        ``up_to_date``, read or follow on from its ``next_offset``."""
        json_mode = is_json_type(await self._content_type())
        return await self.session.call(
            ext.bootstrap_request(self.ref),
            lambda response, request: ext.parse_bootstrap(response, request, json_mode))

    async def get_attrs(self) -> dict[str, Any]:
        """The stream's attribute object (``{}`` when none)."""
        return await self.session.call(ext.get_attrs_request(self.ref), ext.parse_get_attrs)

    async def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Replace the stream's attribute object (``{}`` clears it)."""
        await self.session.call(ext.set_attrs_request(self.ref, attrs), ext.parse_set_attrs)

    def follow(self, offset: str = START, *, live: str = "long-poll",
               include_empty: bool = False, timeout: float | None = None,
               retry: RetryPolicy = FOLLOW_POLICY, on_retained: str = "raise") -> Follower:
        """A ``Follower`` from ``offset``. ``on_retained="bootstrap"``: when the offset is
        below the retention floor (``Retained``), bootstrap and yield it as one batch with
        ``snapshot`` set, then follow on from its ``next_offset``."""
        json_mode = None if self.content_type is None else is_json_type(self.content_type)
        state = FollowState(self.ref, offset, live=live, json_mode=json_mode,
                            request_timeout=timeout, on_retained=on_retained)
        return Follower(self, state, include_empty, retry)

    def producer(self, producer_id: str, *, epoch: int = 0, auto_claim: bool = False,
                 content_type: str | None = None, settings: ProducerSettings | None = None,
                 **options: Any) -> ProducerDriver:
        """An idempotent producer writing to this stream (see ``ursula_client.core.producer``).
        ``options`` are ``ProducerSettings`` fields (``linger``, ``max_batch_bytes``,
        ``max_in_flight``, ``delivery_timeout``, ``request_timeout``, ``retry``)."""
        if options:
            settings = dataclasses.replace(settings or ProducerSettings(), **options)
        return ProducerDriver(self, producer_id, epoch=epoch, auto_claim=auto_claim,
                              content_type=content_type, settings=settings)

    def subscriptions(self) -> Subscriptions:
        return Subscriptions(self.session, self.ref.bucket)


class Follower:
    """An async iterator of ``ReadBatch`` from an offset to the end of a closed stream (for
    ever on an open one), riding out dropped connections, 5xx and dead nodes: it resumes from
    the last confirmed offset, so every record comes exactly once. ``offset`` is where it
    would resume."""

    def __init__(self, stream: StreamHandle, state: FollowState, include_empty: bool,
                 retry: RetryPolicy):
        self.stream = stream
        self.session = stream.session
        self.state = state
        self.include_empty = include_empty
        self.retry = retry
        self._queue: collections.deque[ReadBatch] = collections.deque()
        self._body: BodyStream | None = None
        self._events: StreamEvents | None = None
        self._attempt = 0
        self._failed_since: float | None = None
        self._closed = False

    @property
    def offset(self) -> str:
        return self.state.offset

    @property
    def reconnects(self) -> int:
        return self.state.reconnects

    @property
    def bootstraps(self) -> int:
        return self.state.bootstraps

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> ReadBatch:
        while True:
            while self._queue:
                batch = self._queue.popleft()
                if batch.data or self.include_empty or batch.snapshot is not None:
                    return batch
            if self.state.done or self._closed:
                self._drop_body()
                raise StopAsyncIteration
            url = self.session.endpoints.current()
            try:
                await self._fill(url)
                self._attempt = 0
                self._failed_since = None
            except UrsulaError as error:
                self._drop_body()
                now = self.session.runtime.now()
                self._attempt += 1
                if self._failed_since is None:
                    self._failed_since = now
                if not self.state.retryable(error) \
                        or self.retry.gives_up(self._attempt, now - self._failed_since):
                    raise
                self.state.reconnects += 1
                if moves_endpoint(error):
                    self.session.endpoints.failed(url)
                await self.session.runtime.sleep(
                    self.retry.delay(self._attempt, retry_after(error), self.session.rng))

    async def _fill(self, url: str) -> None:
        try:
            await self._read(url)
        except UrsulaError as error:
            if not self.state.recovers(error):
                raise
            self._drop_body()
            self._queue.append(self.state.on_bootstrap(await self.stream.bootstrap()))

    async def _read(self, url: str) -> None:
        session = self.session
        if self.state.needs_head:
            self.state.on_head((await self.stream.head()).content_type)
        if self.state.live == "long-poll":
            request = self.state.next_request()
            response = await session.transport.send(url, request,
                                                    request.timeout or session.timeout)
            self._queue.append(self.state.on_response(response, request))
            return
        if self._body is None:
            request = self.state.next_request()
            body = await session.transport.open(url, request, request.timeout or session.timeout)
            self._body = body
            head = Response(body.status, body.headers, b"")
            if body.status != 200:
                payload = b""
                while True:
                    chunk = await body.next_chunk()
                    if chunk is None:
                        break
                    payload += chunk
                self._drop_body()
                head = Response(body.status, body.headers, payload)
            self._events = self.state.sse_events(head, request)
        assert self._events is not None and self._body is not None
        chunk = await self._body.next_chunk()
        if chunk is None:  # the server ended the response: reconnect from the last offset
            self._drop_body()
            if not self.state.done:
                self.state.reconnects += 1
            return
        for batch in self._events.feed(chunk):
            self.state.on_batch(batch)
            self._queue.append(batch)

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
        self._body, self._events = None, None

    async def aclose(self) -> None:
        self._closed = True
        self._drop_body()

    async def records(self) -> AsyncIterator[Any]:
        """Each message of a JSON stream (or each chunk of bytes of another), one by one."""
        async for batch in self:
            if batch.json_mode:
                for record in batch.records:
                    yield record
            elif batch.data:
                yield batch.data


class ProducerDriver:
    """Runs a ``ProducerCore`` on the session's event loop: each batch the core hands out is
    sent as its own task; answers, failures and timers feed back into the core."""

    def __init__(self, stream: StreamHandle, producer_id: str, *, epoch: int = 0,
                 auto_claim: bool = False, content_type: str | None = None,
                 settings: ProducerSettings | None = None):
        self.stream = stream
        self.session = stream.session
        self.runtime = stream.session.runtime
        self._args = dict(epoch=epoch, auto_claim=auto_claim, settings=settings)
        self.producer_id = producer_id
        self.core: ProducerCore | None = None
        if content_type is not None or stream.content_type is not None:
            self._make_core(content_type or stream.content_type or "")
        self._timer: Cancellable | None = None
        self._timer_at: float | None = None
        self._waiters: list[Promise] = []
        self._gate: Promise | None = None
        self._pending_start: list[tuple[Any, Promise]] | None = None

    def _make_core(self, content_type: str) -> ProducerCore:
        self.core = ProducerCore(self.stream.ref, self.producer_id, content_type,
                                 **self._args)  # type: ignore[arg-type]
        return self.core

    @property
    def epoch(self) -> int:
        return self.core.epoch if self.core else int(self._args["epoch"])  # type: ignore

    @property
    def stats(self):
        return self.core.stats if self.core else None

    @property
    def failed(self) -> UrsulaError | None:
        return self.core.failed if self.core else None

    def append(self, record: Any, promise: Promise | None = None) -> Any:
        """Queue a record; returns the awaitable of its ``AppendResult`` (acknowledged once
        the server holds it). Never blocks. ``promise``: settle this instead of a new one."""
        promise = promise or self.runtime.promise()
        if self.core is None:
            if self._pending_start is None:
                self._pending_start = []
                self.runtime.spawn(self._start())
            self._pending_start.append((record, promise))
            return promise.awaitable
        if self.core.add(record, promise, self.runtime.now()) or self._timer is None:
            self._pump()
        return promise.awaitable

    async def _start(self) -> None:
        try:
            content_type = await self.stream._content_type()
        except UrsulaError as error:
            for _, promise in self._pending_start or []:
                promise.reject(error)
            self._pending_start = None
            for waiter in self._waiters:
                waiter.reject(error)
            self._waiters = []
            return
        core = self._make_core(content_type)
        for record, promise in self._pending_start or []:
            try:
                core.add(record, promise, self.runtime.now())
            except (UrsulaError, TypeError, ValueError) as error:
                promise.reject(error)
        self._pending_start = None
        self._pump()

    async def flush(self) -> None:
        """Wait until everything appended so far is acknowledged (raises the producer's
        error if it failed)."""
        if self.core is None and self._pending_start is None:
            return
        if self.core is not None:
            self.core.flush()
        await self._wait_idle()

    async def close(self, close_stream: bool = False) -> AppendResult | None:
        """Flush, then stop taking records; with ``close_stream`` also close the stream
        (with producer headers, so a retried close is exactly-once too)."""
        if self.core is None:
            if self._pending_start is None and not close_stream:
                return None
            await self._wait_idle()
            if self.core is None:
                self._make_core(await self.stream._content_type())
        assert self.core is not None
        promise = None
        if close_stream:
            promise = self.runtime.promise()
        self.core.close(close_stream, promise)
        await self._wait_idle()
        return await promise.awaitable if promise is not None else None

    async def _wait_idle(self) -> None:
        if self.core is not None:
            self._pump()
            if self.core.failed is not None:
                raise self.core.failed
            if self.core.idle:
                return
        promise = self.runtime.promise()
        self._waiters.append(promise)
        await promise.awaitable

    def _pump(self) -> None:
        core = self.core
        if core is None:
            return
        now = self.runtime.now()
        for send in core.poll(now):
            self.runtime.spawn(self._send(send))
        self._complete()
        wake = core.next_wakeup()
        if wake is not None and (self._timer_at is None or wake < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake
            self._timer = self.runtime.call_later(max(0.0, wake - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self._pump()

    def _complete(self) -> None:
        core = self.core
        assert core is not None
        for token, outcome in core.take_completions():
            if token is None:
                continue
            if isinstance(outcome, BaseException):
                token.reject(outcome)
            else:
                token.resolve(outcome)
        if self._waiters and (core.idle or core.failed is not None):
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if core.failed is not None:
                    waiter.reject(core.failed)
                else:
                    waiter.resolve(None)

    async def _send(self, send: Send) -> None:
        """One attempt of one batch. Attempts are written in the order the core handed them
        out (each waits until the one before it is on the wire): the server judges batches in
        the order their bytes arrive, and requests that overtake each other on separate
        connections would be refused (409) and sent again."""
        core = self.core
        assert core is not None
        previous, mine = self._gate, self.runtime.promise()
        self._gate = mine
        written = []

        def sent() -> None:
            if not written:
                written.append(True)
                mine.resolve(None)
        if previous is not None:
            await previous.awaitable
        url = self.session.endpoints.current()
        try:
            response = await self.session.transport.send(url, send.request,
                                                         send.request.timeout or 10.0, sent)
        except TransportError as error:
            self.session.endpoints.failed(url)
            core.on_failure(send, error, self.runtime.now())
        except BaseException as error:  # a bug or cancellation: fail, do not hang
            core.on_failure(send, error, self.runtime.now())
            self._pump()
            raise
        else:
            if response.status >= 500:
                self.session.endpoints.failed(url)
            core.on_answer(send, response, self.runtime.now())
        finally:
            sent()
        self._pump()


class Subscriptions:
    """The subscription routes of one stream root (``bucket`` None: ``/v1/stream``)."""

    def __init__(self, session: Session, bucket: str | None = None):
        self.session = session
        self.routes = subs.SubscriptionRoutes(bucket)

    async def put(self, sub_id: str, config: Mapping[str, Any]) -> tuple[bool, dict]:
        return await self.session.call(self.routes.put(sub_id, config), subs.parse_put)

    async def get(self, sub_id: str) -> dict:
        return await self.session.call(self.routes.get(sub_id), subs.parse_json)

    async def delete(self, sub_id: str) -> None:
        await self.session.call(self.routes.delete(sub_id), subs.parse_empty)

    async def add_streams(self, sub_id: str, streams: Iterable[str]) -> None:
        await self.session.call(self.routes.add_streams(sub_id, list(streams)),
                                subs.parse_empty)

    async def remove_stream(self, sub_id: str, path: str) -> None:
        await self.session.call(self.routes.remove_stream(sub_id, path), subs.parse_empty)

    async def claim(self, sub_id: str, worker: str) -> subs.Wake:
        return await self.session.call(self.routes.claim(sub_id, worker),
                                       lambda r, q: subs.parse_claim(r, q, sub_id))

    async def ack(self, sub_id: str, wake: subs.Wake, acks: Mapping[str, str] | None = None,
                  done: bool = False) -> subs.AckResult:
        return await self.session.call(self.routes.ack(sub_id, wake, acks, done),
                                       subs.parse_ack)

    async def callback(self, sub_id: str, wake: subs.Wake,
                       acks: Mapping[str, str] | None = None,
                       done: bool = False) -> subs.AckResult:
        return await self.session.call(self.routes.ack(sub_id, wake, acks, done, "callback"),
                                       subs.parse_ack)

    async def release(self, sub_id: str, wake: subs.Wake) -> None:
        await self.session.call(self.routes.release(sub_id, wake), subs.parse_empty)

    async def jwks(self) -> dict:
        return await self.session.call(self.routes.jwks(), subs.parse_json)

