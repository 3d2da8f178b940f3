"""``StreamMachine``: applies commands to the streams of one group; answers read queries.

Every state change is ``apply(command, now_ms) -> Outcome``. Conditional appends (``if_match``
on ``Append`` and ``AppendBatch``) compare the expected tail here, at apply, so the check and
the write are one step in log order on every replica. Queries (``head``, ``read``,
``list_streams``, ``view``) raise ``StreamError`` with an error code from
``ursula.protocol.errors.STATUS_BY_CODE``. Expired streams are treated as absent by queries and
removed by the next command that touches them (plus a small bounded sweep on every command).

Snapshots, retention and attributes (``PublishSnapshot``, ``AdvanceRetention``, ``SetAttrs``,
``SnapshotFlushed``): the rules are in ``docs/api.md``; a read below a stream's retention floor
raises ``StreamError("retained")`` (410). ``view`` answers what the snapshot, bootstrap and
attrs routes need in one query (``StreamView``).

The compute extension (``BindCompute``, ``UnbindCompute``; ``ursula.stream.compute`` and
``docs/wasm.md``): every record committed to a bound stream is reduced into its materialised
state here, at apply, by the injected ``reducer``; when the binding's policy says so, the
rendered state is published as the stream's snapshot (``auto``) and the retention floor moves up
to it, in the same apply, so every replica compacts at the same offset.

May import: the standard library, cbor2, ``ursula.protocol`` and ``ursula.stream`` modules.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from dataclasses import dataclass, field

import cbor2

from ursula.protocol.errors import ProtocolError
from ursula.protocol.headers import DEFAULT_CONTENT_TYPE, IF_MATCH_ANY, is_json_type, media_type
from ursula.protocol.jsonmode import split_messages
from ursula.protocol.names import DEFAULT_BUCKET
from ursula.stream.commands import (
    AckReleases,
    AcquireFork,
    AdvanceRetention,
    Append,
    AppendBatch,
    BindCompute,
    ColdCollected,
    ColdFlushed,
    CreateBucket,
    CreateStream,
    DeleteBucket,
    DeleteStream,
    PublishSnapshot,
    ReleaseFork,
    SetAttrs,
    SnapshotFlushed,
    Subscription,
    Touch,
    UnbindCompute,
)
from ursula.stream.compute import Binding, ReduceFailed, module_digest
from ursula.stream.model import (
    APPENDS,
    RECORDS,
    ForkPrefix,
    ProducerState,
    SnapshotMeta,
    Stream,
    snapshot_digest,
)
from ursula.stream.subscriptions import SubscriptionTable

SWEEP_PER_COMMAND = 16
SNAPSHOT_VERSION = 2  # 2: cold chunk references (version 1 images still load)
#: How many recent request ids (and their outcomes) a group remembers for deduplication.
REQUEST_MEMORY = 20_000


class StreamError(Exception):
    """A refused query: ``code`` (``ursula.protocol.errors``), and for "retained" the
    retention floor in ``next_offset``."""

    def __init__(self, code: str, next_offset: int | None = None):
        super().__init__(code)
        self.code = code
        self.next_offset = next_offset


@dataclass(slots=True)
class Outcome:
    """What a command did. ``error`` is None on success, else an error code."""

    error: str | None = None
    created: bool = False
    duplicate: bool = False
    start_offset: int = 0
    next_offset: int = 0
    closed: bool = False
    producer_epoch: int | None = None
    producer_seq: int | None = None
    expected_seq: int | None = None
    received_seq: int | None = None
    content_type: str | None = None
    fork: ForkPrefix | None = None
    results: list[Outcome] = field(default_factory=list)
    payload: dict | None = None  # a Subscription command's answer (cbor-friendly)


def outcome_to_wire(outcome: Outcome) -> list:
    """A cbor2-friendly form of an Outcome (for forwarding between nodes)."""
    wire = [outcome.error, outcome.created, outcome.duplicate, outcome.start_offset,
            outcome.next_offset, outcome.closed, outcome.producer_epoch, outcome.producer_seq,
            outcome.expected_seq, outcome.received_seq, outcome.content_type,
            outcome.fork.to_wire() if outcome.fork is not None else None,
            [outcome_to_wire(r) for r in outcome.results]]
    if outcome.payload is not None:
        wire.append(outcome.payload)
    return wire


def outcome_from_wire(data: list) -> Outcome:
    payload = data[13] if len(data) > 13 else None
    *fields_, fork, results = data[:13]
    return Outcome(*fields_, fork=ForkPrefix.from_wire(fork) if fork is not None else None,
                   results=[outcome_from_wire(r) for r in results], payload=payload)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    uid: int
    content_type: str
    json: bool
    tail: int
    closed: bool
    ttl_seconds: int | None
    expires_at_text: str | None
    retained: int = 0  # the retention floor
    snapshot_offset: int | None = None  # the visible snapshot, if any
    snapshot_digest: str | None = None


@dataclass(frozen=True, slots=True)
class ReadResult:
    info: StreamInfo
    start: int
    next_offset: int
    data: bytes  # stored bytes: raw for byte streams, ``m1,m2,`` records for JSON streams
    # The cold part, when ``start`` is below the hot start: ``Stream.cold_spans`` of
    # ``[start, next_offset)``, and ``data`` holds only the hot bytes after them. The runtime
    # fetches the spans and answers a ReadResult whose ``cold`` is empty.
    cold: tuple = ()

    @property
    def hot_from(self) -> int:
        """Where ``data`` starts."""
        return self.cold[-1][1] if self.cold else self.start

    @property
    def up_to_date(self) -> bool:
        return self.next_offset == self.info.tail

    @property
    def closed(self) -> bool:
        """The reader has reached the end of a closed stream (EOF)."""
        return self.info.closed and self.up_to_date


def _info(stream: Stream) -> StreamInfo:
    snap = stream.snapshot
    if snap is None and not stream.retained:
        return StreamInfo(stream.uid, stream.content_type, stream.json, stream.tail,
                          stream.closed, stream.ttl_seconds, stream.expires_at_text)
    return StreamInfo(stream.uid, stream.content_type, stream.json, stream.tail, stream.closed,
                      stream.ttl_seconds, stream.expires_at_text, stream.retained,
                      snap.offset if snap is not None else None,
                      snap.digest if snap is not None else None)


@dataclass(frozen=True, slots=True)
class StreamView:
    """What the snapshot, bootstrap, attrs and compute routes read, in one query.

    ``snapshot``: ``(offset, content type, digest, size)`` or None; its bytes are
    ``snapshot_blob`` while inline, else ``snapshot_ref`` ``(key, checksum)`` names the cold
    object (the runtime fetches it and answers a view with the blob). ``updates``: for a
    bootstrap, the read from the snapshot's offset (or the retention floor), and ``bounds``
    the record ends inside it (one part each: a JSON message, or an append of a byte stream).
    ``attrs``: canonical JSON bytes or None. ``compute``: the binding's description and
    ``compute_state`` its materialised state (the compute extension), or None."""

    info: StreamInfo
    snapshot: tuple | None = None
    snapshot_blob: bytes | None = None
    snapshot_ref: tuple | None = None
    updates: ReadResult | None = None
    bounds: tuple = ()
    attrs: bytes | None = None
    compute: dict | None = None
    compute_state: bytes | None = None


VIEW_KINDS = ("snapshot", "bootstrap", "attrs", "compute", "compute-render")


def info_wire(info: StreamInfo) -> list:
    return [info.uid, info.content_type, info.json, info.tail, info.closed, info.ttl_seconds,
            info.expires_at_text, info.retained, info.snapshot_offset, info.snapshot_digest]


def view_to_wire(view: StreamView) -> list:
    """A cbor2-friendly form of a StreamView whose cold parts were fetched (between cores)."""
    updates = view.updates
    return [info_wire(view.info), list(view.snapshot) if view.snapshot else None,
            view.snapshot_blob, list(view.snapshot_ref) if view.snapshot_ref else None,
            [updates.start, updates.next_offset, bytes(updates.data)] if updates else None,
            list(view.bounds), view.attrs, view.compute, view.compute_state]


def view_from_wire(data: list) -> StreamView:
    info = StreamInfo(*data[0])
    updates = ReadResult(info, *data[4]) if data[4] is not None else None
    return StreamView(info, tuple(data[1]) if data[1] else None, data[2],
                      tuple(data[3]) if data[3] else None, updates, tuple(data[5]), data[6],
                      data[7], data[8])


class StreamMachine:
    def __init__(self, owns=None, reducer=None) -> None:
        """``owns(bucket, stream)``: whether a stream belongs to this machine's group (fork
        releases for other groups are queued in ``pending_releases``). Default: all.
        ``reducer``: the compute extension's reducer (``ursula.stream.compute.Reducer``); None
        refuses bindings (``compute_unavailable``)."""
        self.owns = owns or _owns_everything
        self.reducer = reducer
        self.pending_releases: list[tuple[str, str, str]] = []
        self.streams: dict[tuple[str, str], Stream] = {}
        self.buckets: dict[str, set[str]] = {DEFAULT_BUCKET: set()}
        self.next_uid = 1
        self.total_bytes = 0  # hot bytes (in memory)
        self.cold_bytes = 0  # bytes in the cold chunks of this machine's streams
        self.cold_garbage: list[str] = []  # chunks of dropped streams, to delete (ColdCollected)
        self.snapshot_bytes = 0  # snapshot blobs held inline (not yet in the cold tier)
        self._deadlines: list[tuple[int, int, str, str]] = []
        self.applied = 0
        # request id -> outcome of its first application, oldest first (bounded)
        self.requests: dict[str, Outcome] = {}
        self.subscriptions = SubscriptionTable()  # ursula.stream.subscriptions

    # == commands ==========================================================================

    def apply(self, command, now_ms: int) -> Outcome:
        self.applied += 1
        if type(command) is Touch and 0 < command.seen_ms < now_ms:
            self._sweep(command.seen_ms)  # the touched stream is judged when the read saw it
        else:
            self._sweep(now_ms)
        handler = _HANDLERS[type(command)]
        return handler(self, command, now_ms)

    def apply_request(self, request_id: str | None, command, now_ms: int) -> Outcome:
        """``apply``, unless ``request_id`` was applied before: then its first outcome."""
        if request_id is None:
            return self.apply(command, now_ms)
        seen = self.requests.get(request_id)
        if seen is not None:
            return seen
        outcome = self.apply(command, now_ms)
        requests = self.requests
        requests[request_id] = outcome
        if len(requests) > REQUEST_MEMORY:
            del requests[next(iter(requests))]
        return outcome

    def _create_bucket(self, cmd: CreateBucket, now_ms: int) -> Outcome:
        if cmd.bucket in self.buckets:
            return Outcome()
        self.buckets[cmd.bucket] = set()
        return Outcome(created=True)

    def _delete_bucket(self, cmd: DeleteBucket, now_ms: int) -> Outcome:
        names = self.buckets.get(cmd.bucket)
        if names is None:
            return Outcome(error="bucket_not_found")
        if cmd.bucket == DEFAULT_BUCKET:
            return Outcome(error="bad_request")
        for name in list(names):
            self._expire_if_due(self.streams[(cmd.bucket, name)], now_ms)
        if names:
            return Outcome(error="bucket_not_empty")
        del self.buckets[cmd.bucket]
        return Outcome()

    def _create_stream(self, cmd: CreateStream, now_ms: int) -> Outcome:
        key = (cmd.bucket, cmd.stream)
        existing = self.streams.get(key)
        if existing is not None:
            self._expire_if_due(existing, now_ms)
            existing = self.streams.get(key)
        if existing is not None:
            if existing.deleted:
                return Outcome(error="soft_deleted_conflict")
            return self._compare_existing(existing, cmd)

        prefix = None
        fork_id = cmd.fork_id
        local_acquire = False
        content_type = cmd.content_type or DEFAULT_CONTENT_TYPE
        ttl, expires_ms, expires_text = cmd.ttl_seconds, cmd.expires_at_ms, cmd.expires_at_text
        if cmd.fork_stream is not None:
            if cmd.inherited is not None:
                prefix = ForkPrefix.from_wire(cmd.inherited)
            else:  # the source lives in this machine: acquire it here
                fork_id = fork_id or f"local-{self.next_uid}"
                acquired = self._acquire_fork(AcquireFork(
                    cmd.fork_bucket, cmd.fork_stream, fork_id, cmd.content_type,
                    cmd.fork_offset, cmd.fork_sub_offset), now_ms)
                if acquired.error:
                    return acquired
                prefix = acquired.fork
                local_acquire = True
            content_type = cmd.content_type or prefix.content_type
            if ttl is None and expires_ms is None:
                ttl, expires_ms, expires_text = (prefix.ttl_seconds, prefix.expires_at_ms,
                                                 prefix.expires_at_text)

        json_mode = is_json_type(content_type)
        records: list[bytes] = []
        if cmd.body:
            try:
                records = _records(cmd.body, json_mode)
            except ProtocolError:
                if local_acquire:
                    self._release_source(cmd.fork_bucket, cmd.fork_stream, fork_id)
                return Outcome(error="invalid_json")

        stream = Stream(self.next_uid, cmd.bucket, cmd.stream, content_type, json_mode)
        self.next_uid += 1
        stream.ttl_seconds, stream.expires_at_ms, stream.expires_at_text = ttl, expires_ms, \
            expires_text
        stream.requested_lifetime = (cmd.ttl_seconds, cmd.expires_at_ms)
        stream.touched_ms = now_ms
        if prefix is not None:
            stream.inherit(prefix)
            stream.fork_spec = (cmd.fork_bucket, cmd.fork_stream, cmd.fork_offset,
                                cmd.fork_sub_offset)
            stream.fork_source = (cmd.fork_bucket, cmd.fork_stream, fork_id)
        if records:
            stream.write_records(records)
        self.total_bytes += len(stream.data)
        stream.closed = cmd.closed
        stream.attrs = cmd.attrs or None
        self.streams[key] = stream
        self.buckets.setdefault(cmd.bucket, set()).add(cmd.stream)
        self._track_deadline(stream)
        return Outcome(created=True, next_offset=stream.tail, closed=stream.closed,
                       content_type=content_type)

    def _compare_existing(self, existing: Stream, cmd: CreateStream) -> Outcome:
        if cmd.content_type is not None:
            requested_type = cmd.content_type
        elif existing.fork_spec is not None:
            requested_type = existing.content_type
        else:
            requested_type = DEFAULT_CONTENT_TYPE
        fork_spec = None
        if cmd.fork_stream is not None:
            fork_spec = (cmd.fork_bucket, cmd.fork_stream, cmd.fork_offset, cmd.fork_sub_offset)
        same = (
            media_type(requested_type) == media_type(existing.content_type)
            and (cmd.ttl_seconds, cmd.expires_at_ms) == existing.requested_lifetime
            and cmd.closed == existing.closed
            and fork_spec == existing.fork_spec
            and (cmd.attrs is None or (cmd.attrs or None) == existing.attrs)
        )
        if not same:
            return Outcome(error="exists_conflict")
        return Outcome(next_offset=existing.tail, closed=existing.closed,
                       content_type=existing.content_type)

    def _acquire_fork(self, cmd: AcquireFork, now_ms: int) -> Outcome:
        source = self.streams.get((cmd.bucket, cmd.stream))
        if source is not None:
            self._expire_if_due(source, now_ms)
            source = self.streams.get((cmd.bucket, cmd.stream))
        if source is None:
            return Outcome(error="fork_source_not_found")
        if source.deleted:
            return Outcome(error="soft_deleted_conflict")
        if cmd.content_type is not None and (
                media_type(cmd.content_type) != media_type(source.content_type)):
            return Outcome(error="content_type_mismatch")
        base = self._fork_base(source, cmd.fork_offset, cmd.fork_sub_offset)
        if base is None:
            return Outcome(error="invalid_fork")
        source.fork_ids.add(cmd.fork_id)
        return Outcome(next_offset=base, fork=source.prefix(base))

    def _release_fork(self, cmd: ReleaseFork, now_ms: int) -> Outcome:
        self._release_source(cmd.bucket, cmd.stream, cmd.fork_id)
        return Outcome()

    def _ack_releases(self, cmd: AckReleases, now_ms: int) -> Outcome:
        done = set(cmd.fork_ids)
        self.pending_releases = [r for r in self.pending_releases if r[2] not in done]
        return Outcome()

    def _release_source(self, bucket: str, name: str, fork_id: str) -> None:
        """A fork went away: tell its source (here, or queued for the source's group)."""
        if not self.owns(bucket, name):
            self.pending_releases.append((bucket, name, fork_id))
            return
        source = self.streams.get((bucket, name))
        if source is None or fork_id not in source.fork_ids:
            return
        source.fork_ids.discard(fork_id)
        if source.deleted and not source.fork_ids:
            self._drop(source)

    @staticmethod
    def _fork_base(parent: Stream, offset: int | None, sub_offset: int) -> int | None:
        """Where a fork's own data starts in the shared offset space, or None if invalid."""
        anchor = parent.tail if offset is None else offset
        if anchor > parent.tail or anchor < parent.retained:
            return None
        if parent.json and anchor != parent.tail and (
                parent.boundary_at_or_before(anchor) != anchor):
            return None
        if sub_offset == 0:
            return anchor
        if parent.json:
            limit = parent.boundary_after(anchor, APPENDS)
            position = anchor
            for _ in range(sub_offset):
                position = parent.boundary_after(position)
                if position is None or limit is None or position > limit:
                    return None
            return position
        limit = parent.boundary_after(anchor)
        if limit is None or anchor + sub_offset > limit:
            return None
        return anchor + sub_offset

    def _append(self, cmd: Append, now_ms: int) -> Outcome:
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        if cmd.if_match is not None:
            refused = _precondition(stream, cmd.content_type, bool(cmd.body), cmd.producer,
                                    cmd.if_match)
            if refused is not None:
                return refused
            if stream.closed:  # close-only on a closed stream, at the expected tail: a no-op
                self._touch(stream, now_ms)
                return Outcome(start_offset=stream.tail, next_offset=stream.tail, closed=True)
        return self._append_to(stream, cmd.content_type, cmd.body, cmd.close, cmd.producer,
                               cmd.stream_seq, now_ms)

    def _append_to(self, stream: Stream, content_type, body: bytes, close: bool, producer,
                   stream_seq, now_ms: int) -> Outcome:
        state = None
        if producer is not None:
            state = stream.producers.get(producer.id)
            if state is not None and producer.epoch < state.epoch:
                return Outcome(error="producer_epoch_stale", producer_epoch=state.epoch,
                               next_offset=stream.tail, closed=stream.closed)
            if state is not None and producer.epoch == state.epoch and producer.seq <= state.seq:
                self._touch(stream, now_ms)
                return Outcome(duplicate=True, next_offset=state.next_offset,
                               closed=stream.closed, producer_epoch=state.epoch,
                               producer_seq=state.seq)
        if stream.closed:
            if not body and close and producer is None:
                self._touch(stream, now_ms)
                return Outcome(next_offset=stream.tail, closed=True)
            return Outcome(error="closed", next_offset=stream.tail, closed=True)
        if producer is not None:
            if state is None or producer.epoch > state.epoch:
                if producer.seq != 0:
                    if state is None:
                        return Outcome(error="producer_seq_gap", expected_seq=0,
                                       received_seq=producer.seq, next_offset=stream.tail)
                    return Outcome(error="invalid_producer", next_offset=stream.tail)
            elif producer.seq != state.seq + 1:
                return Outcome(error="producer_seq_gap", expected_seq=state.seq + 1,
                               received_seq=producer.seq, next_offset=stream.tail)
        if not body and not close:
            return Outcome(error="empty_append", next_offset=stream.tail)
        if body and (content_type is None
                     or media_type(content_type) != media_type(stream.content_type)):
            return Outcome(error="content_type_mismatch", next_offset=stream.tail)
        if stream_seq is not None and stream.last_seq is not None and (
                stream_seq.encode("utf-8") <= stream.last_seq.encode("utf-8")):
            return Outcome(error="stream_seq_conflict", next_offset=stream.tail)
        records: list[bytes] = []
        if body:
            try:
                records = _records(body, stream.json)
            except ProtocolError:
                return Outcome(error="invalid_json", next_offset=stream.tail)
            if not records:
                return Outcome(error="empty_json_array", next_offset=stream.tail)
        start = stream.tail
        if records:
            stream.write_records(records)
            self.total_bytes += stream.tail - start
            if stream.compute is not None:
                self._reduce(stream, start, records)
        if stream_seq is not None:
            stream.last_seq = stream_seq
        if close:
            stream.closed = True
        outcome = Outcome(start_offset=start, next_offset=stream.tail, closed=stream.closed)
        if producer is not None:
            stream.producers[producer.id] = ProducerState(producer.epoch, producer.seq,
                                                          stream.tail)
            outcome.producer_epoch, outcome.producer_seq = producer.epoch, producer.seq
        self._touch(stream, now_ms)
        return outcome

    def _append_batch(self, cmd: AppendBatch, now_ms: int) -> Outcome:
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        if cmd.if_match is not None:
            return self._conditional_batch(stream, cmd, now_ms)
        results = [self._append_to(stream, cmd.content_type, frame, False, None, None, now_ms)
                   for frame in cmd.frames]
        return Outcome(next_offset=stream.tail, closed=stream.closed, results=results)

    def _conditional_batch(self, stream: Stream, cmd: AppendBatch, now_ms: int) -> Outcome:
        """All frames at the expected tail, or none: a frame that would be refused refuses
        the batch (its error, ``payload["frame"]`` its index)."""
        refused = _precondition(stream, cmd.content_type, True, None, cmd.if_match)
        if refused is not None:
            return refused
        parsed: list[list[bytes]] = []
        for index, frame in enumerate(cmd.frames):
            code = None
            if not frame:
                code = "empty_append"
            else:
                try:
                    records = _records(frame, stream.json)
                except ProtocolError:
                    code = "invalid_json"
                else:
                    if not records:
                        code = "empty_json_array"
            if code is not None:
                return Outcome(error=code, next_offset=stream.tail, payload={"frame": index})
            parsed.append(records)
        first = stream.tail
        results = []
        for records in parsed:
            start = stream.tail
            stream.write_records(records)
            results.append(Outcome(start_offset=start, next_offset=stream.tail))
            if stream.compute is not None:
                self._reduce(stream, start, records)
        self.total_bytes += stream.tail - first
        self._touch(stream, now_ms)
        return Outcome(start_offset=first, next_offset=stream.tail, results=results)

    def _delete_stream(self, cmd: DeleteStream, now_ms: int) -> Outcome:
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        if stream.forks:
            stream.deleted = True
        else:
            self._drop(stream)
        return Outcome()

    def _touch_command(self, cmd: Touch, now_ms: int) -> Outcome:
        # Judged alive at the time the read saw it (never later than the entry's own stamp),
        # then renewed from the entry's stamp.
        seen_ms = min(cmd.seen_ms, now_ms) if cmd.seen_ms else now_ms
        stream, error = self._writable(cmd.bucket, cmd.stream, seen_ms)
        if stream is None:
            return Outcome(error=error)
        self._touch(stream, now_ms)
        return Outcome(next_offset=stream.tail, closed=stream.closed)

    def _cold_flushed(self, cmd: ColdFlushed, now_ms: int) -> Outcome:
        stream = self.streams.get((cmd.bucket, cmd.stream))
        if stream is None or stream.uid != cmd.uid:
            return Outcome(error="not_found")
        if cmd.end <= stream.base:
            return Outcome(duplicate=True, next_offset=stream.base)
        if cmd.start != stream.base or cmd.end > stream.tail:
            return Outcome(error="bad_request", next_offset=stream.base)
        dropped = stream.flush(cmd.start, cmd.end, cmd.key, cmd.checksum)
        self.total_bytes -= dropped
        self.cold_bytes += dropped
        return Outcome(next_offset=stream.base)

    # == snapshots, retention, attributes ====================================================

    def _publish_snapshot(self, cmd: PublishSnapshot, now_ms: int) -> Outcome:
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        return self.publish(stream, cmd.offset, cmd.content_type, cmd.body, cmd.match)

    def publish(self, stream: Stream, offset: int, content_type: str, body: bytes,
                match: str | None = None, auto: bool = False) -> Outcome:
        """The rules of a snapshot publish (in this order): below the retention floor 410,
        past the tail 409, not a boundary 400, ``match`` not the current digest 409, older
        than the current snapshot 409, the same offset: the same digest is a no-op, another
        one 409. Publishing never moves the retention floor."""
        if offset < stream.retained:
            return Outcome(error="retained", next_offset=stream.retained)
        if offset > stream.tail:
            return Outcome(error="snapshot_beyond_tail", next_offset=stream.tail)
        if not stream.is_boundary(offset, RECORDS):
            return Outcome(error="snapshot_unaligned", next_offset=stream.tail)
        digest = snapshot_digest(content_type, body)
        current = stream.snapshot
        if match is not None and (current is None or current.digest != match):
            return Outcome(error="snapshot_match_failed", next_offset=offset)
        if current is not None:
            if offset < current.offset:
                return Outcome(error="snapshot_older", next_offset=current.offset)
            if offset == current.offset:
                if digest == current.digest:
                    return Outcome(duplicate=True, next_offset=offset,
                                   payload={"digest": digest})
                return Outcome(error="snapshot_digest_conflict", next_offset=offset)
            self._forget_snapshot(current)
        stream.snapshot = SnapshotMeta(offset, content_type, digest, len(body), bytes(body),
                                       auto=auto)
        self.snapshot_bytes += len(body)
        return Outcome(next_offset=offset, payload={"digest": digest})

    def _forget_snapshot(self, snap: SnapshotMeta) -> None:
        if snap.blob is not None:
            self.snapshot_bytes -= snap.size
        if snap.key is not None:
            self.cold_garbage.append(snap.key)

    def _advance_retention(self, cmd: AdvanceRetention, now_ms: int) -> Outcome:
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        offset = cmd.offset
        if offset == stream.retained:
            return Outcome(duplicate=True, next_offset=offset)
        if offset < stream.retained:
            return Outcome(error="retention_backwards", next_offset=stream.retained)
        if stream.snapshot is None:
            return Outcome(error="retention_no_snapshot", next_offset=stream.retained)
        if offset > stream.snapshot.offset:
            return Outcome(error="retention_beyond_snapshot", next_offset=stream.retained)
        if not stream.is_boundary(offset, RECORDS):
            return Outcome(error="retention_unaligned", next_offset=stream.retained)
        self.retain(stream, offset)
        return Outcome(next_offset=offset)

    def retain(self, stream: Stream, offset: int) -> None:
        """Move the floor (checked by the caller): hot bytes below it leave memory, cold
        chunks wholly below it go to ``cold_garbage`` (kept while forks may read them)."""
        dropped, released = stream.retain(offset, keep_chunks=bool(stream.fork_ids))
        self.total_bytes -= dropped
        if released:
            self.cold_bytes -= sum(c[1] - c[0] for c in released)
            self.cold_garbage.extend(c[2] for c in released)

    def _set_attrs(self, cmd: SetAttrs, now_ms: int) -> Outcome:
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        stream.attrs = cmd.attrs or None
        return Outcome(next_offset=stream.tail)

    def _snapshot_flushed(self, cmd: SnapshotFlushed, now_ms: int) -> Outcome:
        stream = self.streams.get((cmd.bucket, cmd.stream))
        if stream is None or stream.uid != cmd.uid:
            return Outcome(error="not_found")
        snap = stream.snapshot
        if snap is None or snap.offset != cmd.offset or snap.digest != cmd.digest:
            return Outcome(error="snapshot_not_found")  # replaced meanwhile: the object is garbage
        if snap.blob is None:
            return Outcome(duplicate=True)
        snap.blob = None
        snap.key, snap.checksum = cmd.key, cmd.checksum
        self.snapshot_bytes -= snap.size
        return Outcome()

    # == the compute extension ================================================================

    def _bind_compute(self, cmd: BindCompute, now_ms: int) -> Outcome:
        """Bind a module: refused without a reducer (503), with a digest that is not the
        module's (400), over another binding (409; the same binding is a no-op), or on a
        stream whose history is not all here (a retention floor or cold bytes: 409). Records
        the stream holds already are reduced now."""
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        if self.reducer is None:
            return Outcome(error="compute_unavailable")
        if module_digest(cmd.module) != cmd.digest:
            return Outcome(error="compute_digest_mismatch")
        binding = Binding(cmd.module_id, cmd.digest, bytes(cmd.module), cmd.fuel,
                          cmd.memory_pages, cmd.max_output_bytes, cmd.every_records,
                          cmd.every_bytes, cmd.snapshot_content_type, stream.tail)
        current = stream.compute
        if current is not None:
            if current.same_binding(binding):
                return Outcome(duplicate=True, next_offset=stream.tail,
                               payload=current.describe())
            return Outcome(error="compute_bound", next_offset=stream.tail)
        if stream.retained or stream.base:
            return Outcome(error="compute_history", next_offset=stream.tail)
        stream.compute = binding
        if stream.tail:  # the history is all hot: reduce it record by record
            previous = 0
            records = []
            for end in stream.ends:
                records.append(stream.slice(previous, end))
                previous = end
            self._reduce(stream, 0, records, compact=False)
        return Outcome(created=True, next_offset=stream.tail, payload=binding.describe())

    def _unbind_compute(self, cmd: UnbindCompute, now_ms: int) -> Outcome:
        stream, error = self._writable(cmd.bucket, cmd.stream, now_ms)
        if stream is None:
            return Outcome(error=error)
        if stream.compute is None:
            return Outcome(error="compute_not_bound")
        stream.compute = None
        return Outcome(next_offset=stream.tail)

    def _reduce(self, stream: Stream, start: int, records: list[bytes],
                compact: bool = True) -> None:
        """Reduce the records just written at ``start`` (one append) into the stream's state;
        a failed record is skipped and counted. Then the compaction policy."""
        binding = stream.compute
        reducer = self.reducer
        state = binding.state
        offset = start
        json_mode = stream.json
        for record in records:
            offset += len(record)
            value = record[:-1] if json_mode else record  # a JSON record ends with ","
            try:
                state = reducer.reduce(binding, state, value)
            except ReduceFailed as failure:
                binding.failed(offset, failure.kind)
            else:
                binding.records += 1
            binding.since_records += 1
            binding.since_bytes += len(value)
        binding.state = state
        binding.offset = offset
        if compact and binding.due():
            self._compact(stream)

    def _compact(self, stream: Stream) -> None:
        """The policy is due: publish the rendered state as the stream's snapshot at its tail
        (``auto``) and move the retention floor up to it. A render that fails publishes
        nothing (counted); the policy counts again from here either way."""
        binding = stream.compute
        binding.since_records = binding.since_bytes = 0
        try:
            body = self.reducer.render(binding, binding.state)
        except ReduceFailed as failure:
            binding.render_errors += 1
            binding.failed(stream.tail, failure.kind)
            return
        offset = stream.tail
        outcome = self.publish(stream, offset, binding.snapshot_content_type, body, auto=True)
        if outcome.error is None and not outcome.duplicate:
            binding.snapshots += 1
        if outcome.error is None and offset > stream.retained:
            self.retain(stream, offset)

    def _subscription(self, cmd: Subscription, now_ms: int) -> Outcome:
        result = self.subscriptions.apply(cmd.bucket, cmd.op, cmd.args, now_ms)
        return Outcome(error=result.error, created=result.created, payload=result.payload)

    def _cold_collected(self, cmd: ColdCollected, now_ms: int) -> Outcome:
        done = set(cmd.keys)
        self.cold_garbage = [k for k in self.cold_garbage if k not in done]
        return Outcome()

    # == lifetime ==========================================================================

    def _writable(self, bucket: str, name: str, now_ms: int) -> tuple[Stream | None, str | None]:
        stream = self.streams.get((bucket, name))
        if stream is None:
            return None, "not_found"
        self._expire_if_due(stream, now_ms)
        if stream.deleted:
            return None, "gone"
        if (bucket, name) not in self.streams:
            return None, "not_found"
        return stream, None

    def _touch(self, stream: Stream, now_ms: int) -> None:
        if stream.ttl_seconds is not None and now_ms > stream.touched_ms:
            stream.touched_ms = now_ms

    def _expire_if_due(self, stream: Stream, now_ms: int) -> None:
        if stream.deleted or not stream.expired(now_ms):
            return
        if stream.forks:
            stream.deleted = True
        else:
            self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        """Remove a stream with no forks; release its source (cascading soft deletes)."""
        key = (stream.bucket, stream.name)
        if self.streams.get(key) is stream:
            del self.streams[key]
            self.buckets.get(stream.bucket, set()).discard(stream.name)
            self.total_bytes -= len(stream.data)
            own = stream.own_chunks()
            if own:
                self.cold_bytes -= stream.cold_bytes
                self.cold_garbage.extend(c[2] for c in own)
            if stream.snapshot is not None:
                self._forget_snapshot(stream.snapshot)
                stream.snapshot = None
        if stream.fork_source is not None:
            source, stream.fork_source = stream.fork_source, None
            self._release_source(*source)

    def _track_deadline(self, stream: Stream) -> None:
        deadline = stream.deadline_ms()
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, stream.uid, stream.bucket, stream.name))

    def _sweep(self, now_ms: int) -> None:
        """Drop up to SWEEP_PER_COMMAND expired streams, so idle expired streams free memory."""
        for _ in range(SWEEP_PER_COMMAND):
            if not self._deadlines or self._deadlines[0][0] > now_ms:
                return
            _, uid, bucket, name = heapq.heappop(self._deadlines)
            stream = self.streams.get((bucket, name))
            if stream is None or stream.uid != uid or stream.deleted:
                continue
            if stream.expired(now_ms):
                self._expire_if_due(stream, now_ms)
            else:
                self._track_deadline(stream)

    # == queries ===========================================================================

    def _live(self, bucket: str, name: str, now_ms: int) -> Stream:
        stream = self.streams.get((bucket, name))
        if stream is None:
            raise StreamError("not_found")
        if stream.deleted:
            raise StreamError("gone")
        if stream.expired(now_ms):
            raise StreamError("gone" if stream.forks else "not_found")
        return stream

    def head(self, bucket: str, name: str, now_ms: int) -> StreamInfo:
        return _info(self._live(bucket, name, now_ms))

    def read(self, bucket: str, name: str, offset: int, max_bytes: int, now_ms: int) -> ReadResult:
        """Stored bytes from ``offset``: at most ``max_bytes`` unless one record is larger."""
        stream = self._live(bucket, name, now_ms)
        tail = stream.tail
        if offset > tail:
            raise StreamError("invalid_offset")
        if offset < stream.retained:
            raise StreamError("retained", stream.retained)
        if stream.json and offset < tail and stream.boundary_at_or_before(offset) != offset:
            offset = stream.boundary_after(offset)
        end = tail
        if tail - offset > max_bytes:
            end = stream.boundary_at_or_before(offset + max_bytes)
            if end <= offset:
                end = stream.boundary_after(offset)
        if offset < stream.base:
            return ReadResult(_info(stream), offset, end,
                              stream.slice(max(offset, stream.base), end),
                              stream.cold_spans(offset, end))
        return ReadResult(_info(stream), offset, end, stream.slice(offset, end))

    def list_streams(self, bucket: str, after: str, limit: int, now_ms: int) -> list[StreamInfo]:
        names = self.buckets.get(bucket)
        if names is None:
            raise StreamError("bucket_not_found")
        out = []
        for name in sorted(n for n in names if n > after):
            stream = self.streams[(bucket, name)]
            if stream.deleted or stream.expired(now_ms):
                continue
            out.append((name, _info(stream)))
            if len(out) >= limit:
                break
        return out

    def view(self, bucket: str, name: str, kind: str, max_bytes: int, now_ms: int) -> StreamView:
        """The query behind the snapshot (``kind`` "snapshot"), bootstrap, attrs and compute
        routes (see ``StreamView``)."""
        stream = self._live(bucket, name, now_ms)
        info = _info(stream)
        snap = stream.snapshot
        meta = blob = ref = None
        if snap is not None and kind in ("snapshot", "bootstrap"):
            meta = (snap.offset, snap.content_type, snap.digest, snap.size)
            blob = snap.blob
            ref = (snap.key, snap.checksum) if blob is None else None
        if kind == "bootstrap":
            start = max(stream.retained, snap.offset if snap is not None else 0)
            updates = self.read(bucket, name, start, max_bytes, now_ms)
            ends = stream.ends
            bounds = tuple(ends[bisect_right(ends, start):bisect_right(ends,
                                                                       updates.next_offset)])
            return StreamView(info, meta, blob, ref, updates, bounds, stream.attrs)
        if kind in ("compute", "compute-render"):
            binding = stream.compute
            if binding is None:
                raise StreamError("compute_not_bound")
            state = binding.state
            if kind == "compute-render":
                if self.reducer is None:
                    raise StreamError("compute_unavailable")
                try:
                    state = self.reducer.render(binding, state)
                except ReduceFailed:
                    raise StreamError("compute_render_failed") from None
            return StreamView(info, meta, blob, ref, attrs=stream.attrs,
                              compute=binding.describe(), compute_state=state)
        return StreamView(info, meta, blob, ref, attrs=stream.attrs)

    @property
    def stream_count(self) -> int:
        return len(self.streams)

    # == snapshots =========================================================================

    def snapshot(self) -> bytes:
        streams = sorted(self.streams.values(), key=lambda s: s.uid)
        state = {
            "version": SNAPSHOT_VERSION,
            "next_uid": self.next_uid,
            "buckets": sorted(self.buckets),
            "streams": [_dump_stream(s) for s in streams],
            "pending_releases": [list(r) for r in self.pending_releases],
            "requests": [[rid, outcome_to_wire(o)] for rid, o in self.requests.items()],
            "cold_garbage": list(self.cold_garbage),
        }
        if self.subscriptions.subs or self.subscriptions.signing_seed is not None:
            state["subscriptions"] = self.subscriptions.to_wire()  # absent: none (older images)
        return cbor2.dumps(state)

    @classmethod
    def restore(cls, blob: bytes, owns=None, reducer=None) -> StreamMachine:
        state = cbor2.loads(blob)
        if state.get("version") not in (1, SNAPSHOT_VERSION):
            raise ValueError(f"unsupported snapshot version {state.get('version')!r}")
        machine = cls(owns, reducer)
        machine.next_uid = state["next_uid"]
        machine.pending_releases = [tuple(r) for r in state["pending_releases"]]
        machine.requests = {rid: outcome_from_wire(o) for rid, o in state.get("requests", [])}
        machine.cold_garbage = list(state.get("cold_garbage", []))
        machine.subscriptions = SubscriptionTable.from_wire(state.get("subscriptions"))
        for bucket in state["buckets"]:
            machine.buckets.setdefault(bucket, set())
        for item in state["streams"]:
            stream = _load_stream(item)
            machine.streams[(stream.bucket, stream.name)] = stream
            machine.buckets.setdefault(stream.bucket, set()).add(stream.name)
            machine.total_bytes += len(stream.data)
            machine.cold_bytes += stream.cold_bytes
            if stream.snapshot is not None and stream.snapshot.blob is not None:
                machine.snapshot_bytes += stream.snapshot.size
            machine._track_deadline(stream)
        return machine


def _precondition(stream: Stream, content_type, has_body: bool, producer,
                  expected: int) -> Outcome | None:
    """The checks of a conditional append (If-Match), in the order the protocol proposal
    gives (after 404 and 410): 409 closed (an append with a body; a close-only request on a
    closed stream goes on to the tail check), 409 content type, 400 producer headers or
    ``*``, 412 when the tail is not ``expected``. None: go on (producer-free) as usual."""
    if stream.closed and has_body:
        return Outcome(error="closed", next_offset=stream.tail, closed=True)
    if has_body and (content_type is None
                     or media_type(content_type) != media_type(stream.content_type)):
        return Outcome(error="content_type_mismatch", next_offset=stream.tail)
    if producer is not None:
        return Outcome(error="if_match_with_producer", next_offset=stream.tail)
    if expected == IF_MATCH_ANY:
        return Outcome(error="if_match_wildcard", next_offset=stream.tail)
    if stream.tail != expected:
        return Outcome(error="precondition_failed", next_offset=stream.tail,
                       closed=stream.closed)
    return None


def _records(body: bytes, json_mode: bool) -> list[bytes]:
    if json_mode:
        return [message + b"," for message in split_messages(body)]
    return [body]


def _dump_stream(s: Stream) -> dict:
    return {
        "uid": s.uid, "bucket": s.bucket, "name": s.name, "content_type": s.content_type,
        "ttl": s.ttl_seconds, "expires_ms": s.expires_at_ms, "expires_text": s.expires_at_text,
        "requested_lifetime": list(s.requested_lifetime), "touched": s.touched_ms,
        "closed": s.closed, "data": s.data, "ends": s.ends, "append_ends": s.append_ends if s.json else None,
        "last_seq": s.last_seq,
        "producers": {k: [v.epoch, v.seq, v.next_offset] for k, v in s.producers.items()},
        "fork_ids": sorted(s.fork_ids), "deleted": s.deleted,
        "fork_spec": list(s.fork_spec) if s.fork_spec else None,
        "fork_source": list(s.fork_source) if s.fork_source else None,
        "base": s.base, "chunks": [list(c) for c in s.chunks], "inherited": s.inherited,
        **_dump_extensions(s),
    }


def _dump_extensions(s: Stream) -> dict:
    """Snapshot, retention, attrs, compute: keys present only when set (older images lack
    them and load with the defaults)."""
    out = {}
    if s.retained:
        out["retained"] = s.retained
    if s.snapshot is not None:
        out["snapshot"] = s.snapshot.to_wire()
    if s.attrs is not None:
        out["attrs"] = s.attrs
    if s.compute is not None:
        out["compute"] = s.compute.to_wire()
    return out


def _load_stream(d: dict) -> Stream:
    json_mode = is_json_type(d["content_type"])
    s = Stream(d["uid"], d["bucket"], d["name"], d["content_type"], json_mode)
    s.ttl_seconds, s.expires_at_ms, s.expires_at_text = d["ttl"], d["expires_ms"], \
        d["expires_text"]
    s.requested_lifetime = tuple(d["requested_lifetime"])
    s.touched_ms, s.closed = d["touched"], d["closed"]
    s.data = bytearray(d["data"])
    s.ends = list(d["ends"])
    s.append_ends = list(d["append_ends"]) if json_mode else s.ends
    s.last_seq = d["last_seq"]
    s.producers = {k: ProducerState(*v) for k, v in d["producers"].items()}
    s.fork_ids, s.deleted = set(d["fork_ids"]), d["deleted"]
    s.fork_spec = tuple(d["fork_spec"]) if d["fork_spec"] else None
    s.fork_source = tuple(d["fork_source"]) if d["fork_source"] else None
    s.base = d.get("base", 0)
    s.chunks = [tuple(c) for c in d.get("chunks", ())]
    s.inherited = d.get("inherited", 0)
    s.retained = d.get("retained", 0)
    if d.get("snapshot") is not None:
        s.snapshot = SnapshotMeta.from_wire(d["snapshot"])
    s.attrs = d.get("attrs")
    if d.get("compute") is not None:
        s.compute = Binding.from_wire(d["compute"])
    return s


_HANDLERS = {
    CreateStream: StreamMachine._create_stream,
    Append: StreamMachine._append,
    AppendBatch: StreamMachine._append_batch,
    DeleteStream: StreamMachine._delete_stream,
    Touch: StreamMachine._touch_command,
    CreateBucket: StreamMachine._create_bucket,
    DeleteBucket: StreamMachine._delete_bucket,
    AcquireFork: StreamMachine._acquire_fork,
    ReleaseFork: StreamMachine._release_fork,
    AckReleases: StreamMachine._ack_releases,
    ColdFlushed: StreamMachine._cold_flushed,
    ColdCollected: StreamMachine._cold_collected,
    Subscription: StreamMachine._subscription,
    PublishSnapshot: StreamMachine._publish_snapshot,
    AdvanceRetention: StreamMachine._advance_retention,
    SetAttrs: StreamMachine._set_attrs,
    SnapshotFlushed: StreamMachine._snapshot_flushed,
    BindCompute: StreamMachine._bind_compute,
    UnbindCompute: StreamMachine._unbind_compute,
}


def _owns_everything(bucket: str, stream: str) -> bool:
    return True
