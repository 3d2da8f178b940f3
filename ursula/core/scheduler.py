"""``Scheduler``: the per-turn batcher of a node's groups (which groups run this turn) and the
Raft ticks.

The order of the three per-turn batchers, stated here and only here (docs/architecture.md
repeats it):

1. **The core's turn** (this module, ``callLater(0)`` armed by the first ``schedule`` of a turn:
   a proposal, a received Raft message, a tick, a persisted Work). It runs
   ``GroupReplica.process()`` once for every scheduled group: the group's queued proposals
   become one entry, and its next Work goes to the persister; a leader's ``send_now``
   messages go to the peer transport at once (the parallel write).
2. **In the next reactor iteration**, the two batchers that step 1 armed, each with its own
   ``callLater(0)``: the peer transport's flush (``PeerTransport.flush``: every peer's items of
   the turn leave as few ``RaftBatch`` boxes as possible) and the group committer's kick
   (``GroupCommitter``: every group's records of the turn become one journal write and one
   fsync, in the thread pool). Both were armed during the same turn, so both run before
   anything armed later; which of the two runs first does not matter: only ``send_now``
   messages (allowed before the leader's fsync) are in the transport's queue at this point.
3. **When the fsync is done** (the thread pool's result, back in the reactor thread), each
   group's ``persisted`` Output is carried out: its messages are queued on the transport (which
   arms its flush again for the next iteration), outcomes are answered, reads released, live
   readers woken, and the group is scheduled again: back to step 1.

A Twisted reactor runs the calls due in one ``runUntilCurrent``; calls armed while it runs wait
for the next iteration. So step 2 always runs after the whole of step 1, and a turn's records
and messages are never split between batches by the order of the groups.

May import: Twisted, zope.interface, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import task
from zope.interface import implementer

from ursula.core.interfaces import IScheduler


@implementer(IScheduler)
class Scheduler:
    def __init__(self, reactor, tick_s: float):
        self.reactor = reactor
        self.tick_s = tick_s
        self.groups: list = []
        self.stopped = False
        self.turns = 0
        self._scheduled: dict[int, object] = {}
        self._turn = None
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = reactor

    def start(self, groups) -> None:
        self.groups = list(groups)
        self._ticker.start(self.tick_s, now=False)
        for group in self.groups:
            self.schedule(group)

    def stop(self) -> None:
        self.stopped = True
        if self._ticker.running:
            self._ticker.stop()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None

    def schedule(self, group) -> None:
        self._scheduled[group.group_id] = group
        if self._turn is None and not self.stopped:
            self._turn = self.reactor.callLater(0, self.run_turn)

    def run_turn(self) -> None:
        self._turn = None
        self.turns += 1
        scheduled, self._scheduled = self._scheduled, {}
        for group in scheduled.values():
            group.process()

    def _tick(self) -> None:
        for group in self.groups:
            group.node.tick()
            self.schedule(group)
