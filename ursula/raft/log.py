"""The Raft log: stable storage interface, an in-memory storage, the unstable tail, RaftLog.

What lives here:
- `MemoryStorage`: what the application has persisted (hard state, snapshot, entries after
  the snapshot).  It is both the reference implementation of the storage interface that
  `RaftLog` reads from and the "disk" the simulator keeps across crashes.
- `Unstable`: entries (and possibly a snapshot) the node holds but the application has not
  persisted yet.  These are handed out in `Ready` and dropped from here on `advance`.
- `RaftLog`: stable + unstable viewed as one log, with the committed/applied cursors and the
  Raft rules that touch only the log (consistency check, conflict truncation, commit rule's
  term check, up-to-date comparison, fast back-off search).

Conventions follow etcd/raft: index 0 is a dummy with term 0; storage keeps a dummy entry at
the snapshot index so `term(snapshot.index)` is answerable after compaction.

May import: the standard library and ursula.raft.messages only.
"""

from __future__ import annotations

from ursula.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class StorageError(Exception):
    pass


class Compacted(StorageError):
    """The requested index is below the first available index (it is in a snapshot)."""


class Unavailable(StorageError):
    """The requested index is past the last stored index."""


class SnapshotOutOfDate(StorageError):
    """The snapshot is not newer than the one already stored."""


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """Keep a prefix of `entries` whose total size is <= max_size (always at least one)."""
    if max_size is None or len(entries) <= 1:
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += e.size()
        if total > max_size and i > 0:
            return entries[:i]
    return entries


class MemoryStorage:
    """Persisted Raft state held in memory.  Mutated only by the application, from `Ready`."""

    def __init__(self, voters: tuple[int, ...] | list[int] = ()) -> None:
        self.hard_state = HardState()
        self.snap = Snapshot(SnapshotMeta(0, 0, ConfState(tuple(sorted(voters)))), b"")
        # ents[0] is a dummy standing for the snapshot point.
        self.ents: list[Entry] = [Entry(0, 0)]

    # -- read side, used by RaftLog ------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.snap.meta.conf

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, i: int) -> int:
        off = self.ents[0].index
        if i < off:
            raise Compacted(i)
        if i - off >= len(self.ents):
            raise Unavailable(i)
        return self.ents[i - off].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries [lo, hi)."""
        off = self.ents[0].index
        if lo <= off:
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise Unavailable(hi)
        return limit_size(self.ents[lo - off : hi - off], max_size)

    def snapshot(self) -> Snapshot:
        return self.snap

    # -- write side, called by the application while handling a Ready ---------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace everything with `snap` (a follower installing the leader's snapshot)."""
        if snap.meta.index <= self.snap.meta.index:
            raise SnapshotOutOfDate(snap.meta.index)
        self.snap = snap
        self.ents = [Entry(snap.meta.term, snap.meta.index)]

    def append(self, entries: list[Entry]) -> None:
        """Persist entries, truncating any stored suffix they conflict with."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all already compacted
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self.ents[0].index
        n = len(self.ents)
        if n > offset:
            del self.ents[offset:]
            self.ents.extend(entries)
        elif n == offset:
            self.ents.extend(entries)
        else:
            raise Unavailable(f"gap: have up to {self.last_index()}, got {entries[0].index}")

    def create_snapshot(self, index: int, data: bytes, conf: ConfState | None = None) -> Snapshot:
        """Record the application's state-machine image as of applied `index`."""
        if index <= self.snap.meta.index:
            raise SnapshotOutOfDate(index)
        if index > self.last_index():
            raise Unavailable(index)
        term = self.term(index)
        self.snap = Snapshot(SnapshotMeta(index, term, conf or self.snap.meta.conf), data)
        return self.snap

    def swap_snapshot_data(self, index: int, data) -> bool:
        """Hold ``data`` (the same bytes, stored elsewhere: any object with ``len`` and
        slicing, e.g. read from a file on demand) as the data of snapshot ``index``, if that
        is still the latest; returns whether it was swapped."""
        if self.snap.meta.index != index or len(data) != len(self.snap.data):
            return False
        self.snap = Snapshot(self.snap.meta, data)
        return True

    def compact(self, index: int) -> None:
        """Discard entries up to and including `index` (keeps a dummy at `index`)."""
        off = self.ents[0].index
        if index <= off:
            raise Compacted(index)
        if index > self.last_index():
            raise Unavailable(index)
        i = index - off
        self.ents = [Entry(self.ents[i].term, index)] + self.ents[i + 1 :]


class Unstable:
    """Entries from `offset` on (and maybe a snapshot) that are not yet persisted."""

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        if self.maybe_term(i) == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces (part of) what is already persisted; storage truncates when these land.
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + list(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """Storage + unstable as one log, with the commit and apply cursors."""

    def __init__(self, storage: MemoryStorage, max_apply_size: int | None = None) -> None:
        self.storage = storage
        self.unstable = Unstable(storage.last_index() + 1)
        # The application restores its state machine from the stored snapshot, so everything up
        # to the snapshot index counts as committed and applied (the snapshot may be newer than
        # the compaction point).
        base = max(storage.first_index() - 1, storage.snapshot().meta.index)
        self.committed = base
        self.applied = base
        self.max_apply_size = max_apply_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(first={self.first_index()} last={self.last_index()} "
            f"committed={self.committed} applied={self.applied} "
            f"unstable@{self.unstable.offset}+{len(self.unstable.entries)})"
        )

    # -- indexes and terms -----------------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int | None:
        """Term of entry i, or None if it is compacted away or past the end."""
        if i < self.first_index() - 1 or i > self.last_index():
            return None
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        try:
            return self.storage.term(i)
        except StorageError:
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def match_term(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log (last_index, last_term) at least as up to date?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    # -- appending -------------------------------------------------------------------------------
    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """First index whose term differs from ours (or that we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest i <= index with term(i) <= term, and that term (0 if unknown)."""
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """AppendEntries consistency check and append.  Returns the last new index, or None
        if our log does not contain (prev_index, prev_term)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(f"conflict at {ci} <= committed {self.committed}")
            self.append(list(ents[ci - (prev_index + 1) :]))
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise AssertionError(f"append at {ents[0].index} overwrites committed {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    # -- reading ---------------------------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry] | None:
        """Entries [lo, hi); None if lo is compacted."""
        if lo < self.first_index():
            return None
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        ents: list[Entry] = []
        off = self.unstable.offset
        if lo < off:
            try:
                ents = self.storage.entries(lo, min(hi, off), max_size)
            except Compacted:
                return None
            if len(ents) < min(hi, off) - lo:
                return ents  # size-limited
        if hi > off:
            u = self.unstable.slice(max(lo, off), hi)
            ents = ents + u if ents else u
        return limit_size(ents, max_size)

    def entries_from(self, i: int, max_size: int | None = None) -> list[Entry] | None:
        return self.slice(i, self.last_index() + 1, max_size)

    def all_entries(self) -> list[Entry]:
        ents = self.entries_from(self.first_index())
        assert ents is not None
        return ents

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- commit / apply --------------------------------------------------------------------------
    def commit_to(self, c: int) -> None:
        if c > self.committed:
            if c > self.last_index():
                raise AssertionError(f"commit {c} past last index {self.last_index()}")
            self.committed = c

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Figure 2 commit rule: only an entry of the current term is committed by counting."""
        if max_index > self.committed and self.term(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed_entries(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 <= lo:
            return []
        ents = self.slice(lo, self.committed + 1, self.max_apply_size)
        assert ents is not None, (lo, self)
        return ents

    def applied_to(self, i: int) -> None:
        if i > self.applied:
            self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def stable_last_index(self) -> int:
        """Last index that the application has persisted."""
        return self.unstable.offset - 1

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.unstable.restore(snap)
