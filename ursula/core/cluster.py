"""``RaftCore``: the ``ICore`` of a replicated node — G Raft groups, each a ``GroupReplica``.

Placement is static (``ursula.core.placement``). A command for a group this node leads is
proposed here; on a follower it is forwarded to the leader over the peer transport and the
leader's outcome relayed; while a group has no leader the request waits up to
``leader_wait_s``, then fails with ``Unavailable`` (HTTP 503 + Retry-After). Reads are
linearizable: a ReadIndex round (through the leader) and then the local replica's applied state.
Live readers are woken by local applies, so they see the same events on every node.

Work is batched per reactor turn: every group that has something to do is processed once per
turn, so the persister receives all of a turn's records together (group commit), and the
transport all of a turn's messages together (coalesced heartbeats).

May import: Twisted, zope.interface, cbor2, ``ursula.raft``, ``ursula.replica``,
``ursula.stream``, ``ursula.wire``, ``ursula.core``.
"""

from __future__ import annotations

import dataclasses
import uuid

import cbor2
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from ursula.core.group import GroupReplica, NotLeader
from ursula.core.interfaces import ICore, Unavailable
from ursula.core.placement import group_of
from ursula.core.watchers import WatcherRegistry
from ursula.raft import NONE, decode_message, encode_message
from ursula.replica import SnapshotPolicy
from ursula.stream import commands as C
from ursula.stream import decode_command, encode_command
from ursula.stream.machine import StreamError, outcome_from_wire, outcome_to_wire
from ursula.wire import PeerError

log = Logger()

RETRY_DELAY_S = 0.05


class CoreSettings:
    def __init__(self, tick_ms=100, election_ticks=10, heartbeat_ticks=1,
                 request_timeout_s=5.0, leader_wait_s=3.0, snapshot_entries=5000,
                 snapshot_keep=1000, max_live_readers=10_000, snapshot_log_bytes=64 << 20):
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.request_timeout_s = request_timeout_s
        self.leader_wait_s = leader_wait_s
        self.snapshot_entries = snapshot_entries
        self.snapshot_keep = snapshot_keep
        self.snapshot_log_bytes = snapshot_log_bytes
        self.max_live_readers = max_live_readers


class MemoryPersister:
    """Keeps nothing: for tests of the runtime without a disk."""

    def persist(self, group_id, rd):
        return defer.succeed(None)

    def save_snapshot(self, group_id, snapshot):
        return defer.succeed(None)

    def compacted(self, group_id, index):
        pass


@implementer(ICore)
class RaftCore:
    def __init__(self, reactor, node_id: int, group_count: int, storages: dict, persister,
                 transport=None, settings: CoreSettings | None = None):
        self.reactor = reactor
        self.node_id = node_id
        self.group_count = group_count
        self.persister = persister
        self.transport = transport
        self.settings = settings or CoreSettings()
        self.watchers = WatcherRegistry(self.settings.max_live_readers)
        raft_config = {"election_tick": self.settings.election_ticks,
                       "heartbeat_tick": self.settings.heartbeat_ticks}
        policy = SnapshotPolicy(self.settings.snapshot_entries, self.settings.snapshot_keep,
                                self.settings.snapshot_log_bytes)
        self.groups = {
            g: GroupReplica(self, g, node_id, storages[g], raft_config, seed=node_id * 7919 + g,
                            policy=policy)
            for g in range(group_count)
        }
        self._scheduled: dict[int, GroupReplica] = {}
        self._turn = None
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = reactor
        self.stopped = False
        if transport is not None:
            transport.on_raft(self._received)
            transport.on_forward(self._forwarded)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker.start(self.settings.tick_ms / 1000.0, now=False)
        for group in self.groups.values():
            if len(group.node.voters) == 1:
                group.node.campaign()  # a cluster of one elects itself at once
            self.schedule(group)

    def hand_over(self, timeout_s: float = 3.0):
        """Graceful shutdown: hand every group this node leads to a connected follower
        (Raft leadership transfer: catch it up, then TimeoutNow), so clients see no election
        timeout. Fires when no group is led here any more, or after ``timeout_s``."""
        if self.transport is None:
            return defer.succeed(None)
        deadline = self.reactor.seconds() + timeout_s
        for group in self.groups.values():
            if not group.is_leader:
                continue
            targets = [v for v in group.node.voters
                       if v != self.node_id and self.transport.connected(v)]
            if targets:
                group.node.transfer_leadership(targets[group.group_id % len(targets)])
                self.schedule(group)

        def check():
            if (not any(g.is_leader for g in self.groups.values())
                    or self.reactor.seconds() >= deadline):
                return None
            return task.deferLater(self.reactor, 0.05, check)
        return check()

    def stop(self) -> None:
        self.stopped = True
        if self._ticker.running:
            self._ticker.stop()
        for group in self.groups.values():
            group.fail_all(Unavailable("the node is shutting down"))

    def fatal(self, failure, why: str) -> None:
        log.failure("fatal: {why}; stopping the node", failure, why=why)
        if not self.stopped:
            self.stop()
            self.reactor.stop()

    # -- the per-turn loop -------------------------------------------------------------------

    def schedule(self, group: GroupReplica) -> None:
        self._scheduled[group.group_id] = group
        if self._turn is None and not self.stopped:
            self._turn = self.reactor.callLater(0, self._run_turn)

    def _run_turn(self) -> None:
        self._turn = None
        scheduled, self._scheduled = self._scheduled, {}
        for group in scheduled.values():
            group.process()

    def _tick(self) -> None:
        for group in self.groups.values():
            group.node.tick()
            self.schedule(group)

    # -- hooks used by GroupReplica ----------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def persist(self, group_id, rd):
        return self.persister.persist(group_id, rd)

    def save_snapshot(self, group_id, snapshot):
        return self.persister.save_snapshot(group_id, snapshot)

    def compacted(self, group_id, index) -> None:
        self.persister.compacted(group_id, index)

    def send(self, group_id: int, messages) -> None:
        if self.transport is None:
            return
        by_peer: dict[int, list] = {}
        for message in messages:
            by_peer.setdefault(message.dst, []).append((group_id, encode_message(message)))
        for peer, items in by_peer.items():
            self.transport.send_raft(peer, items)

    def notify(self, key) -> None:
        self.watchers.notify(key)

    def notify_all(self, group) -> None:
        self.watchers.notify_all()

    def after_apply(self, group: GroupReplica) -> None:
        if group.machine.pending_releases and group.is_leader and not group.releasing:
            self._deliver_releases(group)

    def owns_for(self, group_id: int):
        count = self.group_count
        return lambda bucket, stream: group_of(bucket, stream, count) == group_id

    # -- forks across groups ---------------------------------------------------------------

    @defer.inlineCallbacks
    def _create_fork(self, command: C.CreateStream):
        """A fork whose source lives in another group: acquire the source there (validation,
        a live-fork reference, the inherited prefix), create the fork here, release the
        reference if the fork was not created."""
        deadline = self.reactor.seconds() + self.settings.leader_wait_s
        source_group = self._group_for(command.fork_bucket, command.fork_stream)
        target_group = self._group_for(command.bucket, command.stream)
        fork_id = f"{self.node_id}-{uuid.uuid4().hex}"
        acquired = yield self._submit_to(source_group, C.AcquireFork(
            command.fork_bucket, command.fork_stream, fork_id, command.content_type,
            command.fork_offset, command.fork_sub_offset), deadline)
        if acquired.error:
            return acquired
        created = None
        try:
            created = yield self._submit_to(
                target_group, dataclasses.replace(command, fork_id=fork_id,
                                                  inherited=acquired.fork.to_wire()),
                self.reactor.seconds() + self.settings.leader_wait_s)
        finally:
            if created is None or created.error or not created.created:
                release = C.ReleaseFork(command.fork_bucket, command.fork_stream, fork_id)
                yield self._submit_to(source_group, release,
                                      self.reactor.seconds() + self.settings.leader_wait_s)
        return created

    @defer.inlineCallbacks
    def _deliver_releases(self, group: GroupReplica):
        """Forks dropped in ``group`` whose sources live elsewhere: tell the sources."""
        group.releasing = True
        try:
            releases = list(group.machine.pending_releases)
            for bucket, stream, fork_id in releases:
                yield self._submit_to(self._group_for(bucket, stream),
                                      C.ReleaseFork(bucket, stream, fork_id),
                                      self.reactor.seconds() + self.settings.leader_wait_s)
            yield self._submit_to(group, C.AckReleases(tuple(r[2] for r in releases)),
                                  self.reactor.seconds() + self.settings.leader_wait_s)
        except Exception as error:  # retried after the next apply on this leader
            log.info("delivering fork releases failed ({error}); will retry", error=error)
        finally:
            group.releasing = False

    # -- the peer transport's callbacks ----------------------------------------------------

    def _received(self, peer_id, items) -> None:
        for group_id, data in items:
            group = self.groups.get(group_id)
            if group is None:
                log.warn("peer {peer} sent a message for unknown group {group}", peer=peer_id,
                         group=group_id)
                continue
            group.node.step(decode_message(data))
            self.schedule(group)

    def _forwarded(self, group_id, payload: bytes):
        """A follower forwarded a command: propose it if we lead, else say who does."""
        group = self.groups.get(group_id)
        kind, raw = cbor2.loads(payload)
        if group is None or kind != "submit":
            return cbor2.dumps(["error", "unknown group or request"])
        if not group.is_leader:
            return cbor2.dumps(["not_leader", group.node.leader])
        d = self._with_timeout(group.submit(decode_command(raw)))
        d.addCallback(lambda outcome: cbor2.dumps(["ok", outcome_to_wire(outcome)]))
        d.addErrback(lambda failure: cbor2.dumps(["unavailable",
                                                  failure.getErrorMessage()[:200]]))
        return d

    # -- ICore -------------------------------------------------------------------------------

    @property
    def live_readers(self) -> int:
        return self.watchers.count

    def _group_for(self, bucket: str, stream: str) -> GroupReplica:
        return self.groups[group_of(bucket, stream, self.group_count)]

    def _with_timeout(self, d):
        def timed_out(failure):
            failure.trap(defer.CancelledError, defer.TimeoutError)
            raise Unavailable("the request timed out waiting for the cluster")
        return d.addTimeout(self.settings.request_timeout_s, self.reactor).addErrback(timed_out)

    def submit(self, command):
        if isinstance(command, (C.CreateBucket, C.DeleteBucket)):
            return self._submit_everywhere(command)
        group = self._group_for(command.bucket, command.stream)
        if (isinstance(command, C.CreateStream) and command.fork_stream is not None
                and command.inherited is None
                and self._group_for(command.fork_bucket, command.fork_stream) is not group):
            return self._create_fork(command)
        return self._submit_to(group, command, self.reactor.seconds() + self.settings.leader_wait_s)

    def _submit_to(self, group: GroupReplica, command, deadline: float):
        if self.stopped:
            return defer.fail(Unavailable("the node is shutting down"))
        if group.is_leader:
            return self._with_timeout(group.submit(command))
        leader = group.node.leader
        if leader == NONE or self.transport is None:
            return self._after_leader(group, deadline).addCallback(
                lambda _: self._submit_to(group, command, deadline))
        if not self.transport.connected(leader):
            # nothing was sent: safe to wait for the connection (or a new leader) and retry
            return self._retry_later(deadline).addCallback(
                lambda _: self._submit_to(group, command, deadline))
        payload = cbor2.dumps(["submit", encode_command(command)])
        d = self.transport.forward(leader, group.group_id, payload)

        def answered(data):
            kind, value = cbor2.loads(data)
            if kind == "ok":
                return outcome_from_wire(value)
            if kind == "not_leader":
                return self._retry_later(deadline).addCallback(
                    lambda _: self._submit_to(group, command, deadline))
            raise Unavailable(f"the leader could not apply the request: {value}")

        def unreachable(failure):
            # The request was sent: it may or may not have been applied, so it is not retried
            # here (clients retry safely with producer headers).
            failure.trap(PeerError)
            raise Unavailable(f"forwarding to the leader failed: {failure.getErrorMessage()}")
        return d.addCallbacks(answered, unreachable)

    def _retry_later(self, deadline: float):
        if self.reactor.seconds() + RETRY_DELAY_S > deadline:
            return defer.fail(Unavailable("no leader could be reached; retry"))
        return task.deferLater(self.reactor, RETRY_DELAY_S, lambda: None)

    def _after_leader(self, group: GroupReplica, deadline: float):
        remaining = deadline - self.reactor.seconds()
        if remaining <= 0:
            return defer.fail(Unavailable(f"group {group.group_id} has no leader; retry"))
        d = group.wait_for_leader()

        def no_leader(failure):
            failure.trap(defer.CancelledError, defer.TimeoutError)
            raise Unavailable(f"group {group.group_id} has no leader; retry")
        return d.addTimeout(remaining, self.reactor).addErrback(no_leader)

    def _submit_everywhere(self, command):
        deadline = self.reactor.seconds() + self.settings.leader_wait_s
        d = defer.gatherResults([self._submit_to(g, command, deadline)
                                 for g in self.groups.values()], consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure.raiseException())
        return d.addCallback(_combine_bucket_outcomes)

    def _barrier(self, group: GroupReplica, deadline: float | None = None):
        """Wait until the local replica may serve a linearizable read."""
        if deadline is None:
            deadline = self.reactor.seconds() + self.settings.leader_wait_s
        d = group.read_barrier()

        def not_leader(failure):
            failure.trap(NotLeader)
            return self._after_leader(group, deadline).addCallback(
                lambda _: self._barrier(group, deadline))
        return self._with_timeout(d.addErrback(not_leader))

    def _query(self, bucket, stream, fn):
        group = self._group_for(bucket, stream)
        return self._barrier(group).addCallback(lambda _: fn(group.machine))

    def head(self, bucket, stream):
        return self._query(bucket, stream, lambda m: m.head(bucket, stream, self.now_ms()))

    def read(self, bucket, stream, offset, max_bytes):
        return self._query(bucket, stream,
                           lambda m: m.read(bucket, stream, offset, max_bytes, self.now_ms()))

    def read_local(self, bucket, stream, offset, max_bytes):
        machine = self._group_for(bucket, stream).machine
        return machine.read(bucket, stream, offset, max_bytes, self.now_ms())

    def list_streams(self, bucket, after, limit):
        groups = list(self.groups.values())
        d = defer.gatherResults([self._barrier(g) for g in groups], consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure.raiseException())

        def merge(_):
            found = []
            missing = 0
            for group in groups:
                try:
                    found.extend(group.machine.list_streams(bucket, after, limit, self.now_ms()))
                except StreamError:
                    missing += 1
            if missing == len(groups):
                raise StreamError("bucket_not_found")
            return sorted(found, key=lambda item: item[0])[:limit]
        return d.addCallback(merge)

    def subscribe(self, bucket, stream, callback):
        return self.watchers.add((bucket, stream), callback)

    def is_ready(self) -> bool:
        return all(group.node.leader != NONE for group in self.groups.values())

    def stats(self) -> dict:
        machines = [group.machine for group in self.groups.values()]
        return {"streams": sum(m.stream_count for m in machines),
                "bytes": sum(m.total_bytes for m in machines),
                "live_readers": self.watchers.count}

    def group_stats(self) -> list[dict]:
        out = []
        for group in self.groups.values():
            node = group.node
            out.append({"group": group.group_id, "term": node.term, "leader": node.leader,
                        "role": node.role, "commit": node.committed, "applied": group.applied,
                        "snapshot": group.storage.snapshot().meta.index,
                        "snapshots_installed": group.snapshots_installed})
        return out


def _combine_bucket_outcomes(outcomes):
    errors = [o.error for o in outcomes if o.error]
    if "bucket_not_empty" in errors:
        return next(o for o in outcomes if o.error == "bucket_not_empty")
    if errors and len(errors) == len(outcomes):
        return outcomes[0]
    result = outcomes[0].__class__()
    result.created = any(o.created for o in outcomes)
    return result
