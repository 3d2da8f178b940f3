"""The commands of the stream state machine, and their cbor2 encoding.

A command is a frozen dataclass; ``encode_command`` turns it into compact cbor2 bytes
(``[tag, field, field, ...]``) for the Raft log, and ``decode_command`` reverses it. Fields
added later have defaults: an entry written before one existed decodes with the default, and
the late fields in ``_LATE_FIELDS`` are left out of the encoding while they hold their default
(None), so a command that does not use them encodes as it did before they existed (a node of
the previous version reads it).

May import: the standard library and cbor2.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

import cbor2


@dataclass(frozen=True, slots=True)
class Producer:
    id: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class CreateStream:
    bucket: str
    stream: str
    content_type: str | None = None  # None: the default, or the fork source's type
    ttl_seconds: int | None = None
    expires_at_ms: int | None = None
    expires_at_text: str | None = None
    closed: bool = False
    body: bytes = b""
    fork_bucket: str | None = None
    fork_stream: str | None = None
    fork_offset: int | None = None  # None: the source's tail
    fork_sub_offset: int = 0
    # Set by the runtime when the source lives in another group (see AcquireFork): the fork's
    # id at its source, and the inherited prefix (``ForkPrefix.to_wire()``).
    fork_id: str | None = None
    inherited: list | None = None
    # Stream-Attrs: the attribute object (canonical JSON bytes), None when not given
    attrs: bytes | None = None


@dataclass(frozen=True, slots=True)
class Append:
    bucket: str
    stream: str
    content_type: str | None
    body: bytes
    close: bool = False
    producer: Producer | None = None
    stream_seq: str | None = None
    # If-Match: the tail the writer expects (a byte position), or IF_MATCH_ANY
    # (``ursula.protocol.headers``) for ``*``; checked at apply, before producer and Stream-Seq
    if_match: int | None = None


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Frames appended in order; each frame is judged on its own (no producer). With
    ``if_match`` the batch is conditional: all frames are appended, at the expected tail, or
    none."""

    bucket: str
    stream: str
    content_type: str | None
    frames: tuple[bytes, ...]
    if_match: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteStream:
    bucket: str
    stream: str


@dataclass(frozen=True, slots=True)
class Touch:
    """A read of a stream with a sliding TTL: renews its idle window.

    ``seen_ms`` is when the read found the stream alive (the node's clock at the request's
    arrival; 0 in entries written before it existed). A read that saw the stream alive renews
    it even if the Touch entry is stamped after the old window ended (a slow fsync or read
    barrier between the read and its Touch must not let the stream expire under a reader).
    """

    bucket: str
    stream: str
    seen_ms: int = 0


@dataclass(frozen=True, slots=True)
class AcquireFork:
    """At the fork source: validate the fork point, register ``fork_id`` as a live fork, and
    answer the prefix the fork inherits (``Outcome.fork``)."""

    bucket: str
    stream: str
    fork_id: str
    content_type: str | None
    fork_offset: int | None
    fork_sub_offset: int = 0


@dataclass(frozen=True, slots=True)
class ReleaseFork:
    """At the fork source: the fork ``fork_id`` is gone (idempotent)."""

    bucket: str
    stream: str
    fork_id: str


@dataclass(frozen=True, slots=True)
class AckReleases:
    """The runtime delivered these queued fork releases to their sources' groups."""

    fork_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ColdFlushed:
    """The leader uploaded the bytes ``[start, end)`` of the stream ``uid`` as the cold chunk
    ``key`` (payload checksum ``checksum``): every replica drops them from memory and records
    the reference. A range already cold is a no-op; the stream's hot start must be ``start``."""

    bucket: str
    stream: str
    uid: int
    start: int
    end: int
    key: str
    checksum: int


@dataclass(frozen=True, slots=True)
class ColdCollected:
    """The runtime deleted these cold chunks of dropped streams from the cold store."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CreateBucket:
    bucket: str


@dataclass(frozen=True, slots=True)
class DeleteBucket:
    bucket: str


@dataclass(frozen=True, slots=True)
class Subscription:
    """A change to (or a linearizable read of) the subscription state of a group: ``op`` with
    its ``args`` (see ``ursula.stream.subscriptions``). ``stream`` is the reserved name that
    places it (``__ds/subscriptions/<id>``, or ``__ds/keys`` for the signing key)."""

    bucket: str
    stream: str
    op: str
    args: dict


@dataclass(frozen=True, slots=True)
class PublishSnapshot:
    """``PUT {stream}/snapshot/{offset}``: ``body`` (of ``content_type``) becomes the stream's
    visible snapshot, the state of ``[0, offset)``. ``match``: the digest the current snapshot
    must have (``Stream-Snapshot-Match``), or None."""

    bucket: str
    stream: str
    offset: int
    content_type: str
    body: bytes
    match: str | None = None


@dataclass(frozen=True, slots=True)
class AdvanceRetention:
    """``PUT {stream}/retention/{offset}``: the retention floor moves up to ``offset`` (a
    boundary, at most the snapshot's offset)."""

    bucket: str
    stream: str
    offset: int


@dataclass(frozen=True, slots=True)
class SetAttrs:
    """``PUT {stream}/attrs``: replace the attribute object (canonical JSON; ``b""``: none)."""

    bucket: str
    stream: str
    attrs: bytes


@dataclass(frozen=True, slots=True)
class SnapshotFlushed:
    """The leader stored the snapshot ``(offset, digest)`` of stream ``uid`` in the cold tier
    as ``key``: every replica drops the inline blob and keeps the reference."""

    bucket: str
    stream: str
    uid: int
    offset: int
    digest: str
    key: str
    checksum: int


_TYPES = [CreateStream, Append, AppendBatch, DeleteStream, Touch, CreateBucket, DeleteBucket,
          AcquireFork, ReleaseFork, AckReleases, ColdFlushed, ColdCollected, Subscription,
          PublishSnapshot, AdvanceRetention, SetAttrs, SnapshotFlushed]
_TAG = {cls: index for index, cls in enumerate(_TYPES)}

Command = (CreateStream | Append | AppendBatch | DeleteStream | Touch | CreateBucket | DeleteBucket
           | AcquireFork | ReleaseFork | AckReleases | ColdFlushed | ColdCollected | Subscription
           | PublishSnapshot | AdvanceRetention | SetAttrs | SnapshotFlushed)


# Field names per command type, computed once (dataclasses.fields is slow on a hot path).
_FIELDS = {cls: tuple(field.name for field in fields(cls)) for cls in _TYPES}
# How many leading fields an encoded command must carry: fields added later have defaults, so
# entries written by an older version still decode.
_REQUIRED = {cls: sum(1 for field in fields(cls) if field.default is MISSING
                      and field.default_factory is MISSING) for cls in _TYPES}
_TUPLE_FIELDS = ("frames", "fork_ids", "keys")
# Trailing fields left out of the encoding while they are None (see the module docstring).
_LATE_FIELDS = {Append: 1, AppendBatch: 1, CreateStream: 1}


def _to_plain(command) -> list:
    out = [_TAG[type(command)]]
    for name in _FIELDS[type(command)]:
        value = getattr(command, name)
        if isinstance(value, Producer):
            value = [value.id, value.epoch, value.seq]
        elif isinstance(value, tuple):
            value = list(value)
        out.append(value)
    late = _LATE_FIELDS.get(type(command), 0)
    while late and out[-1] is None:
        out.pop()
        late -= 1
    return out


def _append_to_plain(command: Append) -> list:
    """``_to_plain`` of an ``Append`` (the hot path), field by field; the same list."""
    producer = command.producer
    out = [_APPEND_TAG, command.bucket, command.stream, command.content_type, command.body,
           command.close, None if producer is None else [producer.id, producer.epoch,
                                                         producer.seq], command.stream_seq]
    if command.if_match is not None:
        out.append(command.if_match)
    return out


_APPEND_TAG = _TAG[Append]
assert _FIELDS[Append] == ("bucket", "stream", "content_type", "body", "close", "producer",
                           "stream_seq", "if_match") and _LATE_FIELDS[Append] == 1


def encode_command(command) -> bytes:
    if type(command) is Append:
        return cbor2.dumps(_append_to_plain(command))
    return cbor2.dumps(_to_plain(command))


def decode_command(data: bytes):
    plain = cbor2.loads(data)
    cls = _TYPES[plain[0]]
    names = _FIELDS[cls]
    values = plain[1:]
    if not _REQUIRED[cls] <= len(values) <= len(names):
        raise ValueError(f"{cls.__name__}: expected {len(names)} fields, got {len(values)}")
    kwargs = dict(zip(names, values, strict=False))  # trailing defaults may be absent
    producer = kwargs.get("producer")
    if producer is not None:
        kwargs["producer"] = Producer(*producer)
    for name in _TUPLE_FIELDS:
        if name in kwargs:
            kwargs[name] = tuple(kwargs[name])
    return cls(**kwargs)
