"""Journal records: what one record holds, how records are framed on disk, and how a byte
stream is decoded back (stopping at the first torn or corrupt record).

What lives here:
- the record kinds (`EntriesRecord`, `HardStateRecord`, `SnapshotRecord`, `CheckpointRecord`)
  and `SnapshotRef` (a snapshot's metadata plus the name of the file holding its image);
- framing: every record is ``u32 length | u32 crc | cbor2 payload`` (little endian).  The low
  31 bits of ``length`` are the payload length; the top bit (`FLAG_MORE`) says "more records of
  this batch follow".  ``crc`` is ``zlib.crc32`` over the 4 length bytes and then the payload,
  so a zeroed or garbled length word is detected too;
- `encode_batch` / `scan` / `decode_stream`: a batch (the records of one `write_batch`) is only
  accepted whole: a stream that ends inside a batch, or holds a bad record, is cut back to the
  end of the last complete batch;
- `encode_snapshot_file` / `decode_snapshot_file`: the same framing for a snapshot image file;
  `encode_snapshot_file_parts` writes one without copying its data, and `snapshot_data_span`
  finds the data inside a stored file (read on demand: ``ursula.storage.snapfile``).

Pure: no file I/O, no clock.  May import: the standard library, cbor2 and ursula.raft.messages.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cbor2

from ursula.raft.messages import Entry, HardState, Snapshot, SnapshotMeta

#: Version of the payload format, carried in every segment's checkpoint record.
FORMAT_VERSION = 1

HEADER = struct.Struct("<II")
FLAG_MORE = 0x8000_0000
LENGTH_MASK = 0x7FFF_FFFF
#: Largest payload one record may carry.
MAX_PAYLOAD = LENGTH_MASK

KIND_CHECKPOINT = 0
KIND_ENTRIES = 1
KIND_HARD_STATE = 2
KIND_SNAPSHOT = 3
#: Payload kind of a snapshot image file (never appears in a segment).
KIND_SNAPSHOT_FILE = 16


class RecordError(ValueError):
    """A record that passed its CRC check but cannot be understood (a bug or a newer format).

    Recovery does not truncate such a record: it was written whole, so cutting it away could
    throw away data a newer version of ursula wrote."""


# ---------------------------------------------------------------------------------------------
# Record kinds


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """A stored snapshot: its metadata and the file (under ``snap/``) holding the image."""

    meta: SnapshotMeta
    file: str

    def to_wire(self) -> list:
        return [self.meta.to_wire(), self.file]

    @classmethod
    def from_wire(cls, w: list) -> SnapshotRef:
        return cls(SnapshotMeta.from_wire(w[0]), str(w[1]))


@dataclass(frozen=True, slots=True)
class EntriesRecord:
    """Entries of one group, consecutive indexes.  On replay, a record starting at index i
    replaces any entries >= i of that group (exactly like `MemoryStorage.append`)."""

    group: int
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("EntriesRecord needs at least one entry")
        first = self.entries[0].index
        for k, e in enumerate(self.entries):
            if e.index != first + k:
                raise ValueError(f"entries not consecutive at {e.index} (expected {first + k})")

    @property
    def first_index(self) -> int:
        return self.entries[0].index

    @property
    def last_index(self) -> int:
        return self.entries[-1].index

    def to_wire(self) -> list:
        return [KIND_ENTRIES, self.group, [e.to_wire() for e in self.entries]]


@dataclass(frozen=True, slots=True)
class HardStateRecord:
    """A group's Raft hard state.  On replay, the newest one wins."""

    group: int
    hard_state: HardState

    def to_wire(self) -> list:
        return [KIND_HARD_STATE, self.group, self.hard_state.to_wire()]


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A group stored a snapshot (the image is in ``ref.file``).

    ``replace=False``: a snapshot the group made of its own applied state
    (`MemoryStorage.create_snapshot`); entries after it stay.  ``replace=True``: a snapshot
    installed from the leader (`MemoryStorage.apply_snapshot`); every entry of the group
    written before this record is discarded."""

    group: int
    ref: SnapshotRef
    replace: bool = False

    def to_wire(self) -> list:
        return [KIND_SNAPSHOT, self.group, self.ref.to_wire(), self.replace]


@dataclass(frozen=True, slots=True)
class GroupCheckpoint:
    group: int
    hard_state: HardState
    snapshot: SnapshotRef | None

    def to_wire(self) -> list:
        return [
            self.group,
            self.hard_state.to_wire(),
            None if self.snapshot is None else self.snapshot.to_wire(),
        ]

    @classmethod
    def from_wire(cls, w: list) -> GroupCheckpoint:
        snap = None if w[2] is None else SnapshotRef.from_wire(w[2])
        return cls(int(w[0]), HardState.from_wire(w[1]), snap)


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """First record of every segment: the segment's sequence number and every group's hard
    state and snapshot reference at the moment the segment was started, so that no older
    segment is ever needed for those."""

    seq: int
    groups: tuple[GroupCheckpoint, ...] = ()
    version: int = FORMAT_VERSION

    def to_wire(self) -> list:
        return [KIND_CHECKPOINT, self.version, self.seq, [g.to_wire() for g in self.groups]]


Record = EntriesRecord | HardStateRecord | SnapshotRecord | CheckpointRecord


def record_from_wire(w: list) -> Record:
    """Payload (decoded cbor2) -> record.  Raises RecordError on anything unexpected."""
    try:
        kind = int(w[0])
        if kind == KIND_ENTRIES:
            return EntriesRecord(int(w[1]), tuple(Entry.from_wire(x) for x in w[2]))
        if kind == KIND_HARD_STATE:
            return HardStateRecord(int(w[1]), HardState.from_wire(w[2]))
        if kind == KIND_SNAPSHOT:
            return SnapshotRecord(int(w[1]), SnapshotRef.from_wire(w[2]), bool(w[3]))
        if kind == KIND_CHECKPOINT:
            version = int(w[1])
            if version > FORMAT_VERSION:
                raise RecordError(f"journal format {version} is newer than {FORMAT_VERSION}")
            groups = tuple(GroupCheckpoint.from_wire(g) for g in w[3])
            return CheckpointRecord(int(w[2]), groups, version)
    except RecordError:
        raise
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise RecordError(f"malformed record: {e}") from e
    raise RecordError(f"unknown record kind {kind}")


# ---------------------------------------------------------------------------------------------
# Framing


def _frame(payload: bytes, more: bool) -> bytes:
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"record payload of {n} bytes exceeds {MAX_PAYLOAD}")
    word = n | FLAG_MORE if more else n
    lw = struct.pack("<I", word)
    crc = zlib.crc32(payload, zlib.crc32(lw))
    return lw + struct.pack("<I", crc) + payload


def encode_record(record: Record, more: bool = False) -> bytes:
    """One framed record."""
    return _frame(cbor2.dumps(record.to_wire()), more)


def encode_batch(records: Sequence[Record]) -> bytes:
    """Frame records as one batch: all but the last carry `FLAG_MORE`."""
    last = len(records) - 1
    return b"".join(encode_record(r, i < last) for i, r in enumerate(records))


def encode_records(records: Iterable[Record]) -> bytes:
    """Frame records as separate one-record batches (tests, tools)."""
    return b"".join(encode_record(r) for r in records)


TORN = "torn"  # the data ends inside a record or inside a batch
CORRUPT = "corrupt"  # a record's length or CRC is wrong


@dataclass(frozen=True, slots=True)
class Scan:
    """Result of decoding a stream.

    ``records``: every record of every complete batch, in order.  ``good_length``: bytes up to
    the end of the last complete batch.  ``problem``: None when the whole stream decoded,
    else `TORN` or `CORRUPT`; ``problem_offset`` is where the bad record starts (the bytes from
    ``good_length`` on are discarded, which may include good records of the unfinished batch).
    """

    records: list[Record]
    good_length: int
    problem: str | None = None
    problem_offset: int = 0
    batch_ends: tuple[int, ...] = ()


def scan(data: bytes | bytearray | memoryview) -> Scan:
    """Decode framed records from the start of `data`, stopping at the first torn or corrupt
    record.  Only whole batches are returned.  Raises RecordError for a CRC-valid record that
    cannot be decoded."""
    view = memoryview(data)
    n = len(view)
    pos = 0
    good = 0
    records: list[Record] = []
    batch: list[Record] = []
    ends: list[int] = []
    hsize = HEADER.size
    while pos < n:
        if n - pos < hsize:
            return Scan(records, good, TORN, pos, tuple(ends))
        word, crc = HEADER.unpack_from(view, pos)
        plen = word & LENGTH_MASK
        end = pos + hsize + plen
        if end > n:
            return Scan(records, good, TORN, pos, tuple(ends))
        payload = view[pos + hsize : end]
        if zlib.crc32(payload, zlib.crc32(view[pos : pos + 4])) != crc:
            return Scan(records, good, CORRUPT, pos, tuple(ends))
        try:
            wire = cbor2.loads(payload)
        except Exception as e:  # cbor2 raises several types; the CRC said the bytes are whole
            raise RecordError(f"undecodable record at offset {pos}: {e}") from e
        batch.append(record_from_wire(wire))
        pos = end
        if not word & FLAG_MORE:
            records.extend(batch)
            batch.clear()
            good = pos
            ends.append(pos)
    if batch:
        return Scan(records, good, TORN, pos, tuple(ends))
    return Scan(records, good, None, 0, tuple(ends))


def decode_stream(data: bytes | bytearray | memoryview) -> tuple[list[Record], int]:
    """``(records, good_length)``: the records of every complete batch before the first torn or
    corrupt record, and the length of the stream they occupy."""
    s = scan(data)
    return s.records, s.good_length


# ---------------------------------------------------------------------------------------------
# Snapshot image files


def encode_snapshot_file(group: int, snapshot: Snapshot) -> bytes:
    return b"".join(encode_snapshot_file_parts(group, snapshot))


def _cbor_bytes_head(n: int) -> bytes:
    """The CBOR head of a byte string of ``n`` bytes (major type 2, shortest length form)."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 1 << 8:
        return struct.pack(">BB", 0x58, n)
    if n < 1 << 16:
        return struct.pack(">BH", 0x59, n)
    if n < 1 << 32:
        return struct.pack(">BI", 0x5A, n)
    return struct.pack(">BQ", 0x5B, n)


def _snapshot_file_prefix(group: int, meta: SnapshotMeta) -> bytes:
    """The payload of a snapshot file up to its data's byte-string head: the CBOR of
    ``[KIND_SNAPSHOT_FILE, group, [meta, `` (two array heads and three items)."""
    return (b"\x83" + cbor2.dumps(KIND_SNAPSHOT_FILE) + cbor2.dumps(group) + b"\x82"
            + cbor2.dumps(meta.to_wire()))


def encode_snapshot_file_parts(group: int, snapshot: Snapshot) -> tuple[bytes, bytes, bytes]:
    """``encode_snapshot_file`` as (frame header, payload head, data), written one after the
    other: the payload is ``cbor2.dumps([KIND_SNAPSHOT_FILE, group, snapshot.to_wire()])``
    byte for byte, but the snapshot's data (many MiB) is neither copied nor re-encoded. The
    data starts ``len(header) + len(head)`` bytes into the file."""
    data = snapshot.data
    head = _snapshot_file_prefix(group, snapshot.meta) + _cbor_bytes_head(len(data))
    n = len(head) + len(data)
    if n > MAX_PAYLOAD:
        raise ValueError(f"record payload of {n} bytes exceeds {MAX_PAYLOAD}")
    lw = struct.pack("<I", n)
    crc = zlib.crc32(data, zlib.crc32(head, zlib.crc32(lw)))
    return lw + struct.pack("<I", crc), head, data


def snapshot_data_span(group: int, meta: SnapshotMeta, file_size: int) -> tuple[int, int]:
    """``(offset, length)`` of the snapshot data inside a snapshot file of ``file_size``
    bytes written by `encode_snapshot_file_parts` for ``group`` and ``meta``; RecordError if
    no data length fits."""
    fixed = HEADER.size + len(_snapshot_file_prefix(group, meta))
    for head_size in (1, 2, 3, 5, 9):
        length = file_size - fixed - head_size
        if length >= 0 and len(_cbor_bytes_head(length)) == head_size:
            return fixed + head_size, length
    raise RecordError(f"a snapshot file of {file_size} bytes cannot hold group {group}'s data")


def decode_snapshot_file(data: bytes) -> tuple[int, Snapshot]:
    """``(group, snapshot)``; RecordError if the file is torn, corrupt or not a snapshot."""
    view = memoryview(data)
    if len(view) < HEADER.size:
        raise RecordError("snapshot file is truncated")
    word, crc = HEADER.unpack_from(view, 0)
    plen = word & LENGTH_MASK
    if HEADER.size + plen != len(view) or word & FLAG_MORE:
        raise RecordError("snapshot file has a wrong length")
    payload = view[HEADER.size :]
    if zlib.crc32(payload, zlib.crc32(view[:4])) != crc:
        raise RecordError("snapshot file fails its CRC check")
    try:
        w = cbor2.loads(payload)
        if int(w[0]) != KIND_SNAPSHOT_FILE:
            raise RecordError("not a snapshot file")
        return int(w[1]), Snapshot.from_wire(w[2])
    except RecordError:
        raise
    except Exception as e:
        raise RecordError(f"malformed snapshot file: {e}") from e
