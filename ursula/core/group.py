"""``GroupReplica``: the reactor's side of one Raft group — a ``GroupDriver`` (pure) plus the
Deferreds of the requests waiting on it.

All Raft and state-machine logic lives in ``ursula.replica.GroupDriver``, which the simulator
runs too; this class only turns its effects into I/O: a Work goes to the runtime's persister
(its ``send_now`` messages to the transport at once: the leader writes its journal in parallel
with replicating), and the Output that follows the fsync is carried out in the documented order
(send, resolve outcomes, serve reads, wake live readers, save a snapshot); a Work's
``applied_now`` (committed entries that were durable already) is carried out as soon as the
Work is handed to the persister.

The runtime (``ursula.core.cluster.RaftCore``, through its ``Scheduler``) calls ``process()``
once per reactor turn for a group that has work; ``process`` first tells the runtime when the
group's known leader changed (``leader_changed``: the forwarder re-routes on it).

May import: Twisted (Deferreds only), ``ursula.raft``, ``ursula.replica``, ``ursula.stream``,
``ursula.core``.
"""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from ursula.core.interfaces import Unavailable
from ursula.raft import Config
from ursula.replica import GroupDriver, Rejection, SnapshotPolicy
from ursula.replica.driver import HOLD_BYTES, INFLIGHT_ENTRIES
from ursula.stream import encode_command

log = Logger()

#: A snapshot smaller than this stays in memory (a file reader costs a descriptor).
KEEP_SNAPSHOT_BYTES = 256 << 10


class NotLeader(Exception):
    def __init__(self, leader: int):
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class Retry(Unavailable):
    """The proposal may or may not commit (leadership changed, it was overwritten or dropped):
    safe to send again only with the same request id."""


def as_exception(rejection: Rejection) -> Exception:
    if rejection.kind == "not_leader":
        return NotLeader(rejection.leader)
    if rejection.kind == "retry":
        return Retry(rejection.reason)
    return Unavailable(rejection.reason)


class GroupReplica:
    def __init__(self, runtime, group_id: int, node_id: int, storage, raft_config: dict,
                 seed: int, policy: SnapshotPolicy | None = None, parallel_write: bool = True,
                 hold_bytes: int = HOLD_BYTES, reducer=None,
                 inflight_entries: int = INFLIGHT_ENTRIES):
        self.runtime = runtime
        self.group_id = group_id
        self.storage = storage
        self.driver = GroupDriver(group_id, storage, Config(id=node_id, **raft_config),
                                  random.Random(seed), owns=runtime.owns_for(group_id),
                                  policy=policy, parallel_write=parallel_write,
                                  hold_bytes=hold_bytes, reducer=reducer,
                                  inflight_entries=inflight_entries)
        self.node = self.driver.node
        self.releasing = False
        self.leader_waiters: list[Deferred] = []
        self._seen_leader = (self.driver.known_leader, self.driver.is_leader)
        self._release_snapshot_bytes()  # the state machine was restored from them

    # -- state -------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.driver.is_leader

    @property
    def machine(self):
        return self.driver.machine

    @property
    def applied(self) -> int:
        return self.driver.applied

    @property
    def snapshots_installed(self) -> int:
        return self.driver.snapshots_installed

    # -- requests ------------------------------------------------------------------------------

    def propose_conf_change(self, change) -> Deferred:
        """Propose a membership change (leader only); fires once it is applied here, fails at
        once with the driver's rejection (not the leader, a change in flight, one that does not
        apply)."""
        d = Deferred()
        rejection = self.driver.propose_conf_change(d, change)
        if rejection is not None:
            return fail(as_exception(rejection))
        self.runtime.schedule(self)
        return d

    def submit(self, command, request_id: str | None = None) -> Deferred:
        """Propose a command (leader only); fires with its Outcome once applied here."""
        d = Deferred()
        rejection = self.driver.propose(d, encode_command(command), request_id, command)
        if rejection is not None:
            return fail(as_exception(rejection))
        self.runtime.schedule(self)
        return d

    def read_barrier(self) -> Deferred:
        """Fires once this replica has applied everything committed when it was called
        (ReadIndex: linearizable, no log write)."""
        d = Deferred()
        rejection = self.driver.read(d)
        if rejection is not None:
            return fail(as_exception(rejection))
        self.runtime.schedule(self)
        return d

    def wait_for_leader(self) -> Deferred:
        d = Deferred(lambda d: self.leader_waiters.remove(d) if d in self.leader_waiters
                     else None)
        self.leader_waiters.append(d)
        return d

    # -- the Ready loop ----------------------------------------------------------------------

    def process(self) -> None:
        driver = self.driver
        seen = (driver.known_leader, driver.is_leader)
        if seen != self._seen_leader:
            self._seen_leader = seen
            self.runtime.leader_changed(self)
        queued = driver.queued
        rejected = driver.flush(self.runtime.now_ms())
        for d, rejection in rejected:
            _fire(d, rejection)
        if queued and not rejected and not driver.queued:
            self.runtime.batches.observe(queued)
        work = driver.ready()
        if work is None:
            return
        if work.send_now:
            self.runtime.send(self.group_id, work.send_now)
        d = self.runtime.persist(self.group_id, work)
        d.addCallback(self._persisted)
        d.addErrback(self.runtime.fatal, f"group {self.group_id}: persisting a Ready failed")
        if work.applied_now is not None:
            # entries that were durable already: answer them now, not after this write
            self._carry_out(work.applied_now)
            self.runtime.after_apply(self)

    def _carry_out(self, out) -> None:
        """Answer the outcomes and reads of an Output and wake the live readers it changed."""
        for d, result in out.outcomes:
            _fire(d, result)
        for d in out.reads:
            if not d.called:
                d.callback(None)
        if out.installed_snapshot:
            self._release_snapshot_bytes()
            self.runtime.notify_all(self)
        else:
            notify = self.runtime.notify
            for key in out.changed:
                notify(key)

    def _persisted(self, _) -> None:
        out = self.driver.persisted()
        runtime = self.runtime
        if out.messages:
            runtime.send(self.group_id, out.messages)
        self._carry_out(out)
        leader = self.driver.known_leader
        if leader and self.leader_waiters:
            waiters, self.leader_waiters = self.leader_waiters, []
            for d in waiters:
                if not d.called:
                    d.callback(leader)
        if out.snapshot is not None:
            self._save_snapshot(out.snapshot)
        runtime.after_apply(self)
        runtime.schedule(self)

    def snapshot_now(self) -> bool:
        """Snapshot (and fully compact) this group now; False if there is nothing new."""
        snapshot = self.driver.snapshot_now()
        if snapshot is None:
            return False
        self._save_snapshot(snapshot)
        return True

    def take_snapshot(self) -> Deferred | None:
        """Like ``snapshot_now``, for the admin plane: a Deferred of the snapshot's index once
        it is durable, or None if there is nothing new (or a snapshot is being saved)."""
        snapshot = self.driver.snapshot_now()
        if snapshot is None:
            return None
        done = Deferred()
        self._save_snapshot(snapshot, done)
        return done

    def _save_snapshot(self, snapshot, done: Deferred | None = None) -> None:
        def saved(_):
            index = self.driver.snapshot_saved(snapshot)
            self._release_snapshot_bytes()
            self.runtime.compacted(self.group_id, index)
            if done is not None:
                done.callback(index)

        def failed(failure):
            if done is not None:
                done.errback(Unavailable(f"group {self.group_id}: saving a snapshot failed"))
            return failure

        d = self.runtime.save_snapshot(self.group_id, snapshot)
        d.addCallbacks(saved, failed)
        d.addErrback(self.runtime.fatal, f"group {self.group_id}: saving a snapshot failed")

    def _release_snapshot_bytes(self) -> None:
        """Once the group's latest snapshot is durable, its Raft storage holds a reader of the
        snapshot file instead of its bytes (they are needed only to send it to a follower that
        fell behind the log): a snapshot costs memory only while it is being made."""
        snapshot = self.storage.snapshot()
        if not isinstance(snapshot.data, bytes) or len(snapshot.data) < KEEP_SNAPSHOT_BYTES:
            return
        find = getattr(getattr(self.runtime, "persister", None), "snapshot_data", None)
        if find is None:
            return
        try:
            on_disk = find(self.group_id, snapshot.meta.index)
        except (OSError, ValueError) as error:
            log.warn("group {group}: snapshot {index} stays in memory: {error}",
                     group=self.group_id, index=snapshot.meta.index, error=error)
            return
        if on_disk is not None:
            self.storage.swap_snapshot_data(snapshot.meta.index, on_disk)

    def fail_all(self, error: Exception) -> None:
        for d, _ in self.driver.fail_all(Rejection("shutdown", str(error))):
            if not d.called:
                d.errback(error)


def _fire(d: Deferred, result) -> None:
    if d.called:
        return
    if isinstance(result, Rejection):
        d.errback(as_exception(result))
    else:
        d.callback(result)
