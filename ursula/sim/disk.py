"""The simulated disk of one replica: durable Raft state that survives a crash, and what a
crash does to a write in flight.

What lives here: `FakeDisk`.  Its `storage` (a `MemoryStorage`) is what the `GroupDriver`
reads and writes; the driver writes it only in `persisted()`, which the replica calls once the
simulated fsync delay has passed, so a crash before that loses the Work (it never reached
`storage`).  A snapshot the driver asked to save (`Output.snapshot`) is only durable once
`snapshot_saved` is called; a crash before that reverts to the previous snapshot.

Planted storage faults (``mode``, for the bite tests only; see ursula.sim.run.BROKEN_RULES):

- ``lazy_fsync``: fsync returns before the data is durable; the disk really syncs only every
  few tens of ms, and a crash reverts to the last real sync;
- ``unsynced_vote``: the hard state's vote is written without fsync: a crash forgets it;
- ``torn_tail_kept``: a crash during a write leaves a torn last record that recovery does
  not truncate (its data is cut in half, as if no checksum were checked).

May import: the standard library and ursula.raft.
"""

from __future__ import annotations

from ursula.raft import NONE, Entry, HardState, MemoryStorage

MODES = frozenset({"lazy_fsync", "unsynced_vote", "torn_tail_kept"})


class FakeDisk:
    def __init__(self, voters, mode: str | None = None) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown disk mode {mode}")
        self.mode = mode
        self.storage = MemoryStorage(voters)
        self.synced = self._image()
        self.writing = None  # the Work whose fsync is in progress
        self.saving = None  # (snapshot being saved, the snapshot it replaces)

    def _image(self):
        st = self.storage
        return (st.hard_state, st.snap, list(st.ents))

    # -- events from the replica ---------------------------------------------------------------
    def write_started(self, work) -> None:
        self.writing = work

    def write_done(self) -> None:
        """Called right after ``driver.persisted()`` wrote the Work into ``storage``."""
        self.writing = None

    def snapshot_started(self, snapshot, previous) -> None:
        self.saving = (snapshot, previous)

    def snapshot_done(self) -> None:
        self.saving = None

    def background_sync(self) -> None:
        """lazy_fsync only: the page cache reaches the platter."""
        self.synced = self._image()

    # -- a power cut ---------------------------------------------------------------------------
    def crash(self) -> None:
        st = self.storage
        if self.saving is not None:
            snap, previous = self.saving
            if st.snap is snap:  # not replaced by an installed snapshot meanwhile
                st.snap = previous
            self.saving = None
        mode = self.mode
        if mode == "lazy_fsync" and self.synced is not None:
            hs, snap, ents = self.synced
            st.hard_state, st.snap, st.ents = hs, snap, list(ents)
        elif mode == "unsynced_vote":
            hs = st.hard_state
            st.hard_state = HardState(hs.term, NONE, hs.commit)
        elif mode == "torn_tail_kept" and self.writing is not None and self.writing.entries:
            ents = list(self.writing.entries)
            last = ents[-1]
            ents[-1] = Entry(last.term, last.index, last.data[: len(last.data) // 2])
            try:
                if self.writing.snapshot is None:
                    st.append(ents)
            except Exception:  # noqa: BLE001 - a gap: nothing of it landed
                pass
        self.writing = None
