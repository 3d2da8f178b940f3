"""``JournalPersister``: how a group's Ready reaches the per-core journal (an ``IPersister``);
``MemoryPersister``, its fake, keeps nothing.

Entries, hard state and installed snapshots are durable before the Ready's messages are sent
or its entries applied (the Deferred of ``persist`` fires after the fsync). A Ready whose only
change is a higher commit index is written but not waited for: the commit index is re-learned
from the leader after a crash, so losing it is safe, and it saves an fsync per append.

May import: Twisted, zope.interface, ``ursula.storage``, ``ursula.raft``, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ursula.core.interfaces import IPersister
from ursula.storage.records import EntriesRecord, HardStateRecord

log = Logger()

RELEASE_EVERY_COMPACTIONS = 1  # a release only looks at segment watermarks: cheap


@implementer(IPersister)
class MemoryPersister:
    """Keeps nothing: for tests of the runtime without a disk. Counts what it was given."""

    def __init__(self):
        self.persisted = 0
        self.snapshots = 0

    def persist(self, group_id, rd):
        self.persisted += 1
        return defer.succeed(None)

    def save_snapshot(self, group_id, snapshot):
        self.snapshots += 1
        return defer.succeed(None)

    def compacted(self, group_id, index):
        pass


@implementer(IPersister)
class JournalPersister:
    def __init__(self, committer, on_failure=None):
        self.committer = committer
        self.on_failure = on_failure
        # called with the groups that hold the oldest journal segment back after a release
        # (the runtime snapshots them: RaftCore.snapshot_groups)
        self.on_holding_back = None
        self._durable_votes: dict[int, tuple[int, int]] = {}
        self._compactions = 0

    def persist(self, group_id: int, rd):
        records = []
        if rd.entries:
            records.append(EntriesRecord(group_id, tuple(rd.entries)))
        if rd.hard_state is not None:
            records.append(HardStateRecord(group_id, rd.hard_state))
        if rd.snapshot is not None:
            d = self.committer.save_snapshot(group_id, rd.snapshot, replace=True)
            d.addCallback(lambda _: self.committer.append(records))
            return d.addCallback(self._remember, group_id, rd)
        if not records:
            return defer.succeed(None)
        d = self.committer.append(records)
        vote = (rd.hard_state.term, rd.hard_state.vote) if rd.hard_state is not None else None
        if not rd.entries and vote == self._durable_votes.get(group_id):
            # only the commit index moved: no need to wait for the disk
            d.addErrback(self._failed)
            return defer.succeed(None)
        return d.addCallback(self._remember, group_id, rd)

    def _remember(self, _, group_id, rd):
        if rd.hard_state is not None:
            self._durable_votes[group_id] = (rd.hard_state.term, rd.hard_state.vote)

    def _failed(self, failure):
        if self.on_failure is not None:
            self.on_failure(failure, "a journal write failed")
        else:
            log.failure("a journal write failed", failure)

    def save_snapshot(self, group_id: int, snapshot):
        return self.committer.save_snapshot(group_id, snapshot, replace=False)

    def snapshot_data(self, group_id: int, index: int):
        """The data of the group's stored snapshot ``index`` read from its file on demand, or
        None (see ``ursula.storage.snapfile``)."""
        return self.committer.snapshot_data(group_id, index)

    def compacted(self, group_id: int, index: int) -> None:
        self.committer.compact(group_id, index)
        self._compactions += 1
        if self._compactions % RELEASE_EVERY_COMPACTIONS == 0:
            d = self.committer.release_segments()
            d.addCallback(self._released, group_id)
            d.addErrback(self._failed)

    def _released(self, _deleted, compacted_group: int) -> None:
        holding = [g for g in self.committer.holding_back() if g != compacted_group]
        if holding and self.on_holding_back is not None:
            self.on_holding_back(holding)
