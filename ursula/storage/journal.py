"""The per-core journal: segment files, snapshot files, recovery.  Synchronous file I/O.

What lives here:
- `Journal`: one per core, shared by every Raft group of that core.  `write_batch` appends
  records (one write, one fsync), `save_snapshot` stores a snapshot image atomically and
  records a reference to it, `compact` and `release_segments` free old segments.
- `recover` / `Recovery` / `RecoveredGroup` / `RecoveryReport`: read the journal back after a
  restart, truncating a torn or corrupt tail, and `memory_storage` which rebuilds the
  `MemoryStorage` the Raft core of one group reads.

Layout of a journal directory (see docs/storage.md)::

    <directory>/LOCK                       flock'ed while a Journal has the directory open
    <directory>/wal/<seq:020d>.seg         segments, consecutive seq, the newest is active
    <directory>/snap/<group>-<index>.snap  snapshot images (framed like a record)

`Journal` methods may be called from any one thread at a time (a lock serializes them); the
Twisted side (`ursula.storage.committer`) calls them from a thread pool.

May import: the standard library, ursula.storage.records, ursula.storage.snapfile and ursula.raft
(records, storage).
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ursula.raft.log import MemoryStorage
from ursula.raft.messages import ConfState, Entry, HardState, Snapshot
from ursula.storage.records import (
    CheckpointRecord,
    EntriesRecord,
    GroupCheckpoint,
    HardStateRecord,
    Record,
    RecordError,
    SnapshotRecord,
    SnapshotRef,
    decode_snapshot_file,
    encode_batch,
    encode_record,
    encode_snapshot_file_parts,
    scan,
    snapshot_data_span,
)
from ursula.storage.snapfile import SnapshotFileData

FSYNC_ALWAYS = "always"
#: UNSAFE: acknowledged writes can be lost on power failure or kernel crash.  Tests and
#: benchmarks only.
FSYNC_NEVER = "never"
FSYNC_POLICIES = (FSYNC_ALWAYS, FSYNC_NEVER)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

WAL_DIR = "wal"
SNAP_DIR = "snap"
LOCK_FILE = "LOCK"
_SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
_SNAP_RE = re.compile(r"^(\d+)-(\d+)\.snap$")


class JournalError(Exception):
    """The journal cannot be used (damage recovery must not paper over, or a failed write)."""


class JournalCorrupt(JournalError):
    pass


def segment_name(seq: int) -> str:
    return f"{seq:020d}.seg"


def snapshot_name(group: int, index: int) -> str:
    return f"{group}-{index:020d}.snap"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ---------------------------------------------------------------------------------------------
# Recovery results


@dataclass
class RecoveredGroup:
    """What the journal holds for one group.

    ``base`` is the entry just before ``entries`` (index and term only): the compaction point,
    or ``Entry(0, 0)`` for a log that starts at 1.  ``base.index <= snapshot index`` when there
    is a snapshot; entries at or below the snapshot index may still be present (kept for slow
    followers, see `Journal.compact`)."""

    group: int
    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    base: Entry = Entry(0, 0)
    entries: list[Entry] = field(default_factory=list)

    @property
    def conf(self) -> ConfState | None:
        """The voter set stored with the snapshot; None without a snapshot (use the cluster
        configuration's voters then)."""
        return None if self.snapshot is None else self.snapshot.meta.conf

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.base.index


@dataclass
class Truncation:
    """One piece of the journal that recovery cut away."""

    file: str
    offset: int  # the file was cut to this length (0 and deleted=True: the file was removed)
    discarded_bytes: int
    reason: str  # "torn", "corrupt", "no checkpoint", "after a damaged segment"
    deleted: bool = False


@dataclass
class RecoveryReport:
    segments: list[str] = field(default_factory=list)  # segments replayed, oldest first
    records: int = 0
    truncations: list[Truncation] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)  # stale tmp / unreferenced snaps

    @property
    def clean(self) -> bool:
        return not self.truncations

    def describe(self) -> list[str]:
        """One line per truncation, for the caller's log."""
        out = []
        for t in self.truncations:
            if t.deleted:
                out.append(f"journal: removed {t.file} ({t.discarded_bytes} bytes, {t.reason})")
            else:
                out.append(
                    f"journal: truncated {t.file} at {t.offset} "
                    f"({t.discarded_bytes} bytes, {t.reason})"
                )
        return out


@dataclass
class Recovery:
    groups: dict[int, RecoveredGroup]
    report: RecoveryReport


def memory_storage(group: RecoveredGroup, voters: Sequence[int] = ()) -> MemoryStorage:
    """A `MemoryStorage` holding exactly what the journal recovered for `group`.

    `voters` is used only when the group has no snapshot (a fresh group: the voter set comes
    from the cluster configuration)."""
    st = MemoryStorage(voters)
    if group.snapshot is not None:
        st.snap = group.snapshot
    st.hard_state = group.hard_state
    st.ents = [group.base, *group.entries]
    return st


# ---------------------------------------------------------------------------------------------
# Replay state


class _GroupReplay:
    """Per-group state while replaying records, and the journal's live bookkeeping."""

    __slots__ = ("hard_state", "snap", "held", "compacted")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snap: SnapshotRef | None = None
        self.held: list[Entry] = []  # contiguous run of entries, the newest log suffix seen
        self.compacted = 0

    @property
    def snap_index(self) -> int:
        return 0 if self.snap is None else self.snap.meta.index

    def apply_entries(self, entries: Sequence[Entry]) -> None:
        held = self.held
        first = entries[0].index
        if held and held[0].index <= first <= held[-1].index + 1:
            del held[first - held[0].index :]
            held.extend(entries)
        else:
            # Empty, or a gap: entries before the gap were in released segments or are covered
            # by a snapshot recorded later; a real hole is detected when replay ends.
            self.held = list(entries)

    def apply_snapshot(self, ref: SnapshotRef, replace: bool) -> None:
        self.snap = ref
        if replace:
            self.held = []
            self.compacted = ref.meta.index

    def apply_checkpoint(self, cp: GroupCheckpoint) -> None:
        self.hard_state = cp.hard_state
        if cp.snapshot is not None and cp.snapshot.meta.index > self.snap_index:
            self.snap = cp.snapshot

    def finish(self, group: int) -> tuple[Entry, list[Entry]]:
        """(base, entries) for recovery; raises JournalCorrupt on a hole in the log."""
        held = self.held
        meta = None if self.snap is None else self.snap.meta
        s = 0 if meta is None else meta.index
        if held and held[0].index <= s <= held[-1].index and held[s - held[0].index].term == (
            meta.term if meta is not None else 0
        ):
            # Entries reach back over the snapshot and agree with it: keep them all (the first
            # one serves as the compaction point).
            return Entry(held[0].term, held[0].index), held[1:]
        base = Entry(0, 0) if meta is None else Entry(meta.term, meta.index)
        tail = [e for e in held if e.index > s]
        if tail and tail[0].index != s + 1:
            raise JournalCorrupt(
                f"group {group}: entries resume at {tail[0].index} after snapshot/log end {s}"
            )
        return base, tail


@dataclass
class _Segment:
    seq: int
    path: str
    size: int = 0
    max_index: dict[int, int] = field(default_factory=dict)  # group -> largest entry index


def _note_record(groups: dict[int, _GroupReplay], seg: _Segment, segments: list[_Segment],
                 rec: Record, replay: bool) -> None:
    """Apply one record to the group state and the segment bookkeeping.  Entries themselves
    are only kept while replaying (a live journal does not hold a copy of the log)."""
    if isinstance(rec, EntriesRecord):
        g = groups.get(rec.group)
        if g is None:
            g = groups[rec.group] = _GroupReplay()
        if replay:
            g.apply_entries(rec.entries)
        if seg.max_index.get(rec.group, 0) < rec.last_index:
            seg.max_index[rec.group] = rec.last_index
    elif isinstance(rec, HardStateRecord):
        g = groups.get(rec.group)
        if g is None:
            g = groups[rec.group] = _GroupReplay()
        g.hard_state = rec.hard_state
    elif isinstance(rec, SnapshotRecord):
        g = groups.get(rec.group)
        if g is None:
            g = groups[rec.group] = _GroupReplay()
        g.apply_snapshot(rec.ref, rec.replace)
        if rec.replace:
            # every entry of this group written so far is dead
            for s in segments:
                s.max_index.pop(rec.group, None)
    elif isinstance(rec, CheckpointRecord):
        for cp in rec.groups:
            g = groups.get(cp.group)
            if g is None:
                g = groups[cp.group] = _GroupReplay()
            g.apply_checkpoint(cp)


def _list_segments(wal: str) -> list[tuple[int, str]]:
    out = []
    for name in os.listdir(wal):
        m = _SEGMENT_RE.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(wal, name)))
    out.sort()
    return out


def _replay(directory: str, fsync: bool) -> tuple[dict[int, _GroupReplay], list[_Segment],
                                                   RecoveryReport]:
    """Read every segment, cut away a damaged tail (and every segment after it)."""
    wal = os.path.join(directory, WAL_DIR)
    report = RecoveryReport()
    groups: dict[int, _GroupReplay] = {}
    segments: list[_Segment] = []
    found = _list_segments(wal)
    for (a, _), (b, path) in zip(found, found[1:], strict=False):
        if b != a + 1:
            raise JournalCorrupt(f"segment {a + 1} is missing (before {path})")
    changed_dir = False
    for k, (seq, path) in enumerate(found):
        with open(path, "rb") as f:
            data = f.read()
        result = scan(data)
        recs = result.records
        if recs and not (isinstance(recs[0], CheckpointRecord) and recs[0].seq == seq):
            raise JournalCorrupt(f"{path} does not start with its checkpoint record")
        damaged = result.problem is not None or not recs
        if not recs:
            # Torn while the segment was being created (or empty): nothing in it was ever
            # durable, since its first batch never completed.
            os.unlink(path)
            changed_dir = True
            report.truncations.append(
                Truncation(path, 0, len(data), result.problem or "no checkpoint", deleted=True)
            )
        else:
            seg = _Segment(seq, path, result.good_length)
            segments.append(seg)
            report.segments.append(path)
            report.records += len(recs)
            for rec in recs:
                _note_record(groups, seg, segments, rec, True)
            if result.problem is not None:
                with open(path, "r+b") as f:
                    f.truncate(result.good_length)
                    if fsync:
                        os.fsync(f.fileno())
                report.truncations.append(
                    Truncation(path, result.good_length, len(data) - result.good_length,
                               result.problem)
                )
        if damaged:
            for _, later in found[k + 1 :]:
                size = os.path.getsize(later)
                os.unlink(later)
                changed_dir = True
                report.truncations.append(
                    Truncation(later, 0, size, "after a damaged segment", deleted=True)
                )
            break
    if changed_dir and fsync:
        _fsync_dir(wal)
    return groups, segments, report


def _finish(directory: str, groups: dict[int, _GroupReplay], report: RecoveryReport,
            clean_snapshots: bool) -> dict[int, RecoveredGroup]:
    snapdir = os.path.join(directory, SNAP_DIR)
    out: dict[int, RecoveredGroup] = {}
    referenced = set()
    for gid, g in sorted(groups.items()):
        base, entries = g.finish(gid)
        g.compacted = max(g.compacted, base.index)
        snapshot = None
        if g.snap is not None:
            referenced.add(g.snap.file)
            path = os.path.join(snapdir, g.snap.file)
            try:
                with open(path, "rb") as f:
                    sgroup, snapshot = decode_snapshot_file(f.read())
            except (OSError, RecordError) as e:
                raise JournalCorrupt(f"group {gid}: snapshot {path}: {e}") from e
            if sgroup != gid or snapshot.meta != g.snap.meta:
                raise JournalCorrupt(f"group {gid}: {path} does not hold the recorded snapshot")
        out[gid] = RecoveredGroup(gid, g.hard_state, snapshot, base, entries)
        g.held = []  # the journal keeps no copy of the log once recovered
    if clean_snapshots:
        for name in sorted(os.listdir(snapdir)):
            if name.endswith(".tmp") or (_SNAP_RE.match(name) and name not in referenced):
                os.unlink(os.path.join(snapdir, name))
                report.removed_files.append(os.path.join(snapdir, name))
    return out


def _prepare(directory: str) -> None:
    os.makedirs(os.path.join(directory, WAL_DIR), exist_ok=True)
    os.makedirs(os.path.join(directory, SNAP_DIR), exist_ok=True)


def recover(directory: str | os.PathLike, fsync: str = FSYNC_ALWAYS) -> Recovery:
    """Read a journal directory back (creating it if missing).

    Truncates a torn or corrupt tail to the end of the last complete batch and removes every
    segment after a damaged one; what was cut is listed in ``report.truncations``.  Never
    returns part of a record or of a batch.  Do not call this on a directory a `Journal` has
    open: the node runtime uses ``Journal(directory).recovery`` instead."""
    directory = os.fspath(directory)
    _prepare(directory)
    groups, _, report = _replay(directory, fsync == FSYNC_ALWAYS)
    return Recovery(_finish(directory, groups, report, clean_snapshots=True), report)


# ---------------------------------------------------------------------------------------------
# The journal


class Journal:
    """The per-core write-ahead journal.  Opening it runs recovery (see `recovery`)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        fsync: str = FSYNC_ALWAYS,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        self.directory = os.fspath(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._sync = fsync == FSYNC_ALWAYS
        self._wal = os.path.join(self.directory, WAL_DIR)
        self._snapdir = os.path.join(self.directory, SNAP_DIR)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._broken: str | None = None
        _prepare(self.directory)
        self._lockfd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT,
                               0o644)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lockfd)
            raise JournalError(f"{self.directory} is in use by another process") from e
        try:
            groups, segments, report = _replay(self.directory, self._sync)
            recovered = _finish(self.directory, groups, report, clean_snapshots=True)
        except BaseException:
            os.close(self._lockfd)
            raise
        self._groups = groups
        self._segments = segments
        #: What was found on disk when the journal was opened.
        self.recovery = Recovery(recovered, report)
        if segments:
            last = segments[-1]
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        #: Seconds the last `write_batch` spent in fsync (0.0 with fsync="never").
        self.last_fsync_seconds = 0.0

    # -- writing -----------------------------------------------------------------------------
    def write_batch(self, records: Sequence[Record]) -> int:
        """Append `records` as one batch: one write and one fsync of the segment (plus an
        fsync of the directory when a new segment was started).  Returns bytes written.

        Within a batch put a group's entries before its hard state (Raft's order).  A batch
        is recovered whole or not at all."""
        with self._lock:
            return self._write_locked(records)

    def _write_locked(self, records: Sequence[Record]) -> int:
        if self._broken is not None:
            raise JournalError(f"journal failed earlier: {self._broken}")
        if not records:
            self.last_fsync_seconds = 0.0
            return 0
        data = encode_batch(records)  # may raise ValueError: nothing is written then
        seg = self._segments[-1] if self._segments else None
        new_segment = seg is None or seg.size >= self.segment_bytes
        try:
            if new_segment:
                seg = self._start_segment()
                checkpoint = self._checkpoint(seg.seq)
                records = [checkpoint, *records]
                data = encode_record(checkpoint, more=True) + data
            assert seg is not None and self._fd is not None
            _write_all(self._fd, data)
            t0 = time.perf_counter()
            if self._sync:
                os.fsync(self._fd)
                if new_segment:
                    _fsync_dir(self._wal)
            self.last_fsync_seconds = time.perf_counter() - t0 if self._sync else 0.0
        except Exception as e:
            # The file may hold part of the batch: refuse further writes (the runtime must
            # restart the core; recovery cuts the partial batch away).
            self._broken = repr(e)
            raise
        seg.size += len(data)
        for rec in records:
            _note_record(self._groups, seg, self._segments, rec, False)
        return len(data)

    def _checkpoint(self, seq: int) -> CheckpointRecord:
        return CheckpointRecord(
            seq,
            tuple(GroupCheckpoint(gid, g.hard_state, g.snap) for gid, g in sorted(
                self._groups.items())),
        )

    def _start_segment(self) -> _Segment:
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = os.path.join(self._wal, segment_name(seq))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        seg = _Segment(seq, path)
        self._segments.append(seg)
        return seg

    # -- snapshots -----------------------------------------------------------------------------
    def save_snapshot(self, group: int, snapshot: Snapshot, *, replace: bool = False
                      ) -> SnapshotRef:
        """Store `snapshot` for `group`: the image goes to ``snap/`` atomically (tmp file,
        fsync, rename, directory fsync), then a snapshot-reference record is written.

        ``replace=False`` for a snapshot the group made itself (`create_snapshot`: entries
        after it stay); ``replace=True`` for one installed from the leader (`apply_snapshot`:
        the group's log is replaced).  The group's previous snapshot file is deleted.

        The image is encoded, written and fsynced without the journal's lock, so batches of
        records (`write_batch`, from another thread) are not held up behind a large snapshot;
        only the check and the reference record take it.  One snapshot per group at a time
        (the group driver never asks for a second before the first is saved)."""
        index = snapshot.meta.index
        with self._lock:
            self._check_newer(group, index)
        name = snapshot_name(group, index)
        path = os.path.join(self._snapdir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            for part in encode_snapshot_file_parts(group, snapshot):
                f.write(part)
            f.flush()
            if self._sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self._sync:
            _fsync_dir(self._snapdir)
        with self._lock:
            try:
                g = self._check_newer(group, index)
            except ValueError:
                os.unlink(path)
                raise
            old = None if g is None or g.snap is None else g.snap.file
            ref = SnapshotRef(snapshot.meta, name)
            self._write_locked([SnapshotRecord(group, ref, replace)])
            if old is not None and old != name:
                try:
                    os.unlink(os.path.join(self._snapdir, old))
                except FileNotFoundError:
                    pass
            return ref

    def snapshot_data(self, group: int, index: int) -> SnapshotFileData | None:
        """The data of ``group``'s stored snapshot ``index``, read from its file on demand
        (`SnapshotFileData`); None if the group's current snapshot is another one."""
        # No lock (the reactor thread calls this, and a batch holds the lock through its
        # fsync): the group's snapshot reference is replaced whole, never changed in place.
        g = self._groups.get(group)
        ref = None if g is None else g.snap
        if ref is None or ref.meta.index != index:
            return None
        path = os.path.join(self._snapdir, ref.file)
        data = SnapshotFileData(path)
        try:
            offset, length = snapshot_data_span(group, ref.meta, data.size)
        except RecordError:
            data.close()
            raise
        return data.span(offset, length)

    def _check_newer(self, group: int, index: int):
        g = self._groups.get(group)
        current = 0 if g is None else g.snap_index
        if index <= current:
            raise ValueError(f"group {group}: snapshot {index} is not newer than {current}")
        return g

    def compact(self, group: int, index: int) -> None:
        """The group's log no longer needs entries <= `index` (mirrors `MemoryStorage.compact`).
        `index` may not pass the group's snapshot.  Segments are released up to this point.

        Takes no lock (so the reactor thread may call it while a write is in flight): it only
        raises one int, and the snapshot index it checks against only grows."""
        g = self._groups.get(group)
        snap = 0 if g is None else g.snap_index
        if index > snap:
            raise ValueError(f"group {group}: compact to {index} past snapshot {snap}")
        if g is not None and index > g.compacted:
            g.compacted = index

    def release_segments(self) -> list[str]:
        """Delete the oldest segments that hold no entry any group still needs: every entries
        record in them is at or below its group's compaction point (which never passes the
        group's snapshot).  The active segment is kept.  Returns the deleted paths."""
        with self._lock:
            deleted = []
            while len(self._segments) > 1:
                seg = self._segments[0]
                if any(idx > self._watermark(gid) for gid, idx in seg.max_index.items()):
                    break
                os.unlink(seg.path)
                deleted.append(seg.path)
                self._segments.pop(0)
            if deleted and self._sync:
                _fsync_dir(self._wal)
            return deleted

    def holding_back(self) -> list[int]:
        """The groups whose entries keep the oldest segment alive (none while only the active
        segment exists): a group that stopped writing before it snapshotted holds every newer
        segment back too, so the runtime snapshots these groups to release them."""
        with self._lock:
            if len(self._segments) < 2:
                return []
            seg = self._segments[0]
            return sorted(gid for gid, idx in seg.max_index.items()
                          if idx > self._watermark(gid))

    def _watermark(self, group: int) -> int:
        g = self._groups.get(group)
        return 0 if g is None else min(g.compacted, g.snap_index)

    # -- introspection -------------------------------------------------------------------------
    def segments(self) -> list[str]:
        """Paths of the live segments, oldest first (the last one is active)."""
        with self._lock:
            return [s.path for s in self._segments]

    def hard_state(self, group: int) -> HardState:
        g = self._groups.get(group)
        return HardState() if g is None else g.hard_state

    def snapshot_ref(self, group: int) -> SnapshotRef | None:
        g = self._groups.get(group)
        return None if g is None else g.snap

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lockfd >= 0:
                os.close(self._lockfd)
                self._lockfd = -1
            self._broken = self._broken or "closed"

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
