"""``RaftCore``: the ``ICore`` of a replicated node — G Raft groups, each a ``GroupReplica``,
and the parts that run them, each with one job (and an interface in ``ursula.core.interfaces``):

* ``Scheduler`` (``ursula.core.scheduler``): which groups run this turn, and the ticks; the order
  of the per-turn batchers is stated there;
* ``Forwarder`` (``ursula.core.forwarder``): a command to its group's leader (propose here,
  forward with a request id, wait for a leader, retry, re-route when the leader changes);
* ``ForkCoordinator`` (``ursula.core.forks``): the cross-group fork saga and release delivery;
* ``ReadPath`` (``ursula.core.reads``): the ReadIndex barrier, head, read_applied, list_streams;
* ``Flusher`` (``ursula.core.flusher``), when a cold store is given: carries old hot bytes to
  the cold tier and refuses appends to a group at its hot cap; reads below the hot start are
  stitched by the ``ReadPath`` through a ``ursula.cold.ChunkCache``;
* an ``IPersister`` (``ursula.core.persist``) and an ``IPeerTransport`` (``ursula.wire``).

``RaftCore`` itself is the facade that wires them: lifecycle (start, hand-over, stop, fatal),
the hooks the groups call (persist, send, notify, after_apply, leader_changed), routing of a
command to its group (placement is static: ``ursula.core.placement``; bucket commands go to
every group), the transport's callbacks, stats, and the operations of the admin plane
(``ursula.admin``): leadership transfer, snapshots on demand, drain / undrain (move every
leadership off this node and keep it off), and the consistent group image a backup takes
(``backup_group``: a ReadIndex barrier, then the state machine's snapshot).

Groups this node does not host (``[cluster] replication`` below the node count) are
``RemoteGroup``s (``ursula.core.remote``): their requests are carried to a host; the admin
plane's ``host_group`` / ``drop_group`` start and stop hosting one (a group move).

May import: Twisted, zope.interface, cbor2, ``ursula.raft``, ``ursula.replica``,
``ursula.stream``, ``ursula.cold``, ``ursula.loop``, ``ursula.core``.
"""

from __future__ import annotations

import cbor2
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from ursula.cold.cache import ChunkCache
from ursula.core.batches import BatchSizes
from ursula.core.compute import make_reducer, reducer_stats
from ursula.core.flusher import Flusher
from ursula.core.forks import ForkCoordinator
from ursula.core.forwarder import RETRY_DELAY_S, Forwarder
from ursula.core.group import GroupReplica
from ursula.core.interfaces import ICore, TooManyReaders, Unavailable
from ursula.core.joining import (
    join_token,
    load_addresses,
    parse_address,
    save_addresses,
    token_ok,
)
from ursula.core.persist import MemoryPersister
from ursula.core.placement import group_of, preferred_leader
from ursula.core.reads import ReadPath
from ursula.core.remote import (
    RemoteGroup,
    RemoteSubscription,
    info_from_wire,
    members_of,
    read_from_wire,
    serve,
    view_from_wire,
)
from ursula.core.scheduler import Scheduler
from ursula.core.watchers import WatcherRegistry
from ursula.loop import Timeouts
from ursula.raft import (
    ADD_LEARNER,
    NONE,
    PROMOTE,
    REMOVE,
    ConfChange,
    MemoryStorage,
    decode_message,
    encode_message,
)
from ursula.replica import SnapshotPolicy
from ursula.stream import commands as C
from ursula.stream.machine import StreamError
from ursula.stream.machine import info_wire as info_wire_of

log = Logger()

__all__ = ["RETRY_DELAY_S", "CoreSettings", "MemoryPersister", "RaftCore"]


#: The membership changes of the admin plane, by name.
CONF_CHANGE_OPS = {"add_learner": ADD_LEARNER, "promote": PROMOTE, "remove": REMOVE}


class AdminError(Exception):
    """An admin operation refused: ``status`` is the HTTP status the admin plane answers,
    ``str()`` a one-line reason, ``leader`` the group's leader when that is the reason."""

    def __init__(self, status: int, reason: str, leader: int | None = None):
        super().__init__(reason)
        self.status = status
        self.leader = leader


class CoreSettings:
    def __init__(self, tick_ms=100, election_ticks=10, heartbeat_ticks=1,
                 request_timeout_s=5.0, leader_wait_s=3.0, snapshot_entries=5000,
                 snapshot_keep=1000, max_live_readers=10_000, snapshot_log_bytes=16 << 20,
                 snapshot_keep_bytes=4 << 20,
                 hot_bytes=32 << 20, hot_max_bytes=0, chunk_bytes=4 << 20,
                 cold_cache_bytes=64 << 20, parallel_write=True, hold_bytes=1 << 20,
                 inflight_entries=1,
                 flush_depth=4,
                 sweep_interval_s=600.0, orphan_grace_s=600.0, pack_ranges=256,
                 join=False, compute=True, compute_module_cache=64, leader_balance_s=0.0,
                 leader_follow_load_s=0.0):
        self.tick_ms = tick_ms
        self.leader_follow_load_s = leader_follow_load_s  # leaders move to where writes enter
        self.leader_balance_s = leader_balance_s  # leaders go back to their preferred node
        self.parallel_write = parallel_write  # the leader's fsync beside replication
        self.hold_bytes = hold_bytes  # proposals held while a write is in flight (GroupDriver)
        self.inflight_entries = inflight_entries  # ... and while this many entries are uncommitted
        self.election_ticks = election_ticks
        self.heartbeat_ticks = heartbeat_ticks
        self.request_timeout_s = request_timeout_s
        self.leader_wait_s = leader_wait_s
        self.snapshot_entries = snapshot_entries
        self.snapshot_keep = snapshot_keep
        self.snapshot_keep_bytes = snapshot_keep_bytes
        self.snapshot_log_bytes = snapshot_log_bytes
        self.max_live_readers = max_live_readers
        self.hot_bytes = hot_bytes  # per group: flush above this
        self.hot_max_bytes = hot_max_bytes or 4 * hot_bytes  # per group: refuse appends here
        self.chunk_bytes = chunk_bytes
        self.cold_cache_bytes = cold_cache_bytes
        self.flush_depth = flush_depth
        self.sweep_interval_s = sweep_interval_s
        self.orphan_grace_s = orphan_grace_s
        self.pack_ranges = pack_ranges
        self.join = join  # a group on an empty disk joins (raft Config.joining)
        self.compute = compute  # [compute] enabled: the state machines get a WASM reducer
        self.compute_module_cache = compute_module_cache  # compiled modules kept per process


@implementer(ICore)
class RaftCore:
    def __init__(self, reactor, node_id: int, group_count: int, storages: dict, persister,
                 transport=None, settings: CoreSettings | None = None, cold_store=None,
                 placement=None):
        self.reactor = reactor
        self.node_id = node_id
        self.group_count = group_count
        self.persister = persister
        self.transport = transport
        self.settings = settings or CoreSettings()
        self.watchers = WatcherRegistry(self.settings.max_live_readers)
        self.batches = BatchSizes()
        self.reducer = make_reducer(self.settings.compute, self.settings.compute_module_cache)
        raft_config = {"election_tick": self.settings.election_ticks,
                       "heartbeat_tick": self.settings.heartbeat_ticks}
        self._raft_config = raft_config
        self._policy = SnapshotPolicy(self.settings.snapshot_entries,
                                      self.settings.snapshot_keep,
                                      self.settings.snapshot_log_bytes,
                                      self.settings.snapshot_keep_bytes)
        # the groups hosted here (all of them unless ``placement`` says otherwise); every other
        # group of ``placement.owned`` is a RemoteGroup (ursula.core.remote), made when asked
        self.placement = placement
        self.groups = {g: self._replica(g, storages[g], self.settings.join
                                        and _empty(storages[g]))
                       for g in sorted(storages)}
        self.remote: dict[int, RemoteGroup] = {}
        self._seen: dict = {}  # (bucket, stream) -> what remote reads last saw of it
        self._unknown_logged: set[int] = set()
        self._unknown_peers: set[int] = set()
        # join tokens and peer addresses (ursula.core.joining): set by the node's builder
        self.join_secret = b""
        self.peers_file = ""
        self.peer_port_offset = 0  # core k talks to core k of every peer: peer port + k
        self.scheduler = Scheduler(reactor, self.settings.tick_ms / 1000.0)
        self.timeouts = Timeouts(reactor)  # request timeouts of the forwarder and read path
        self.forwarder = Forwarder(reactor, node_id, transport, self.settings, self.timeouts)
        self.forks = ForkCoordinator(reactor, node_id, self.forwarder, self._group_for,
                                     self.settings.leader_wait_s)
        self.cold_store = cold_store
        self.cache = None
        self.flusher = None
        if cold_store is not None:
            self.cache = ChunkCache(cold_store, self.settings.cold_cache_bytes)
            self.flusher = Flusher(reactor, self.groups, cold_store, self.cache,
                                   self.settings.hot_bytes, self.settings.hot_max_bytes,
                                   self.settings.chunk_bytes, depth=self.settings.flush_depth,
                                   sweep_interval_s=self.settings.sweep_interval_s,
                                   orphan_grace_s=self.settings.orphan_grace_s,
                                   pack_ranges=self.settings.pack_ranges)
        self.reads = ReadPath(reactor, self.groups, self._group_for, self.settings,
                              self.now_ms, self.cache, self.timeouts)
        self.stopped = False
        self.fatal_reason: str | None = None  # why the node stopped itself (its exit code: 1)
        self.draining = False
        self._drain_loop = None
        self._drain_turn = 0
        self._balancer = None
        self._load_follower = None
        self._load_moved: dict[int, float] = {}  # group -> when its leader last followed load
        self.load_moves = 0  # leaderships handed to the node the writes entered
        self._balance_tries: dict[int, tuple[int, float]] = {}  # group -> (tries, not before)
        # ursula.core.subscriptions: told of every stream change and applied Ready
        self.subscription_hooks: list = []
        if hasattr(persister, "on_holding_back"):
            persister.on_holding_back = self.snapshot_groups
        if transport is not None:
            transport.on_raft(self._received)
            transport.on_forward(self._forwarded)

    def _replica(self, g: int, storage, joining: bool) -> GroupReplica:
        return GroupReplica(self, g, self.node_id, storage,
                            {**self._raft_config, "joining": joining},
                            seed=self.node_id * 7919 + g, policy=self._policy,
                            parallel_write=self.settings.parallel_write,
                            hold_bytes=self.settings.hold_bytes,
                            inflight_entries=self.settings.inflight_entries,
                            reducer=self.reducer)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for group in self.groups.values():
            if len(group.node.voters) == 1:
                group.node.campaign()  # a cluster of one elects itself at once
            elif (_empty(group.storage) and not group.node.joining
                  and self.preferred_leader(group) == self.node_id):
                # a new group: its preferred leader asks first, so that the leaders of a new
                # cluster are spread over its nodes (not all on whichever node won the race)
                group.node.campaign()
        self.scheduler.start(self.groups.values())
        if self.flusher is not None:
            self.flusher.start()
        if self.transport is not None and self.settings.leader_balance_s > 0:
            self._balancer = task.LoopingCall(self._balance_leaders)
            self._balancer.clock = self.reactor
            self._balancer.start(self.settings.leader_balance_s, now=False)
        if self.transport is not None and self.settings.leader_follow_load_s > 0:
            self.forwarder.load = {}  # the Forwarder counts where each group's writes come from
            self._load_follower = task.LoopingCall(self._follow_load)
            self._load_follower.clock = self.reactor
            self._load_follower.start(self.settings.leader_follow_load_s, now=False)

    @property
    def draining(self) -> bool:
        """drain(): leadership is moved off this node and kept off. Kept by the Forwarder,
        whose request ids then say so: a draining node's writes draw no leader here."""
        return self.forwarder.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.forwarder.draining = value

    def preferred_leader(self, group) -> int:
        """The node meant to lead ``group`` (``ursula.core.placement.preferred_leader``: the
        leaders spread over the nodes like the replicas)."""
        if self.placement is not None:
            return preferred_leader(self.placement.genesis, self.placement.replication,
                                    group.group_id)
        voters = sorted(group.node.voters)
        return voters[group.group_id % len(voters)]

    def _balance_leaders(self) -> None:
        """Every ``leader_balance_s``: a group led here whose preferred leader is another
        voter, connected and holding the whole log, is handed to it (Raft leadership
        transfer). So the leaders of a cluster spread over its nodes again after a restart, a
        failure or a start where one node won most elections, and every node shares the
        leaders' work. A group that comes back (its preferred node is draining, or keeps
        losing it) is retried after twice the wait each time, up to 64 periods."""
        if self.stopped or self.draining or self.transport is None:
            return
        now = self.reactor.seconds()
        period = self.settings.leader_balance_s
        for group in self.groups.values():
            gid = group.group_id
            node = group.node
            want = self.preferred_leader(group)
            tries, not_before = self._balance_tries.get(gid, (0, 0.0))
            if node.leader == want:
                if now >= not_before:  # it stayed where it belongs: the tries start over
                    self._balance_tries.pop(gid, None)
                continue
            if not group.is_leader or want == self.node_id or want not in node.voters:
                continue
            if now < not_before or node.lead_transferee != NONE:
                continue
            if not self.transport.connected(want) or node.match_of(want) < node.last_index():
                continue  # down, or behind: a transfer would stall the group's writes
            log.info("group {group}: handing leadership to its preferred node {to}", group=gid,
                     to=want)
            self._balance_tries[gid] = (tries + 1, now + period * min(2 ** tries, 64))
            node.transfer_leadership(want)
            self.schedule(group)

    def _follow_load(self) -> None:
        """Every ``leader_follow_load_s``: a group led here whose writes mostly came from one
        other node in the last period (``follow_load_target``) is handed to that node, if it
        is a connected voter about as far along the log as we are. A write that enters the
        node leading its group is proposed at once; one that enters another node costs a
        forward, an answer and a Deferred on both ends (about a third more CPU per append on
        three nodes, docs/benchmarks.md). A group that moved stays put for five periods."""
        load, self.forwarder.load = self.forwarder.load, {}
        if self.stopped or self.draining or self.transport is None:
            return
        now = self.reactor.seconds()
        period = self.settings.leader_follow_load_s
        for gid, counts in load.items():
            group = self.groups.get(gid)
            if group is None or not group.is_leader:
                continue
            node = group.node
            target = follow_load_target(counts, self.node_id)
            if target is None or target not in node.voters or node.lead_transferee != NONE:
                continue
            if now - self._load_moved.get(gid, -1e18) < 5 * period:
                continue
            if (not self.transport.connected(target)
                    or node.last_index() - node.match_of(target) > FOLLOW_LOAD_MAX_LAG):
                continue
            log.info("group {group}: handing leadership to node {to}, where {share:.0%} of its "
                     "writes enter", group=gid, to=target,
                     share=counts[target] / sum(counts.values()))
            self._load_moved[gid] = now
            self.load_moves += 1
            node.transfer_leadership(target)
            self.schedule(group)

    def hand_over(self, timeout_s: float = 3.0):
        """Graceful shutdown: hand every group this node leads to a connected follower
        (Raft leadership transfer: catch it up, then TimeoutNow), so clients see no election
        timeout. Fires when no group is led here any more, or after ``timeout_s``."""
        if self.transport is None:
            return defer.succeed(None)
        self.draining = True  # a group won back meanwhile (another node's balancer) moves on
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
        if self._drain_loop is not None and self._drain_loop.running:
            self._drain_loop.stop()
        if self._balancer is not None and self._balancer.running:
            self._balancer.stop()
        if self._load_follower is not None and self._load_follower.running:
            self._load_follower.stop()
        self.scheduler.stop()
        if self.flusher is not None:
            self.flusher.stop()
        self.forwarder.stop()
        for group in self.groups.values():
            group.fail_all(Unavailable("the node is shutting down"))
        self.timeouts.stop()

    def fatal(self, failure, why: str) -> None:
        log.failure("fatal: {why}; stopping the node", failure, why=why)
        if self.fatal_reason is None:
            self.fatal_reason = why
        if not self.stopped:
            self.stop()
            if getattr(self.reactor, "running", True):
                self.reactor.stop()
            else:  # while starting up (a port that cannot be bound): stop once it runs
                self.reactor.callWhenRunning(self.reactor.stop)

    # -- hooks used by GroupReplica ----------------------------------------------------------

    def schedule(self, group: GroupReplica) -> None:
        self.scheduler.schedule(group)

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
            try:
                self.transport.send_raft(peer, items)
            except ValueError:  # a member whose address this node has not been told yet
                if peer not in self._unknown_peers:
                    self._unknown_peers.add(peer)
                    log.warn("group {group}: node {peer} is a member but its address is "
                             "unknown here (ursula-admin node address)", group=group_id,
                             peer=peer)

    def snapshot_groups(self, group_ids) -> None:
        """Snapshot these groups now (their old entries keep journal segments alive)."""
        if self.stopped:
            return
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if group is not None and group.snapshot_now():
                log.info("group {group}: snapshot taken to release old journal segments",
                         group=group_id)

    def notify(self, key) -> None:
        self.watchers.notify(key)
        for hook in self.subscription_hooks:
            hook.stream_changed(key)

    def notify_all(self, group) -> None:
        self.watchers.notify_all()

    def after_apply(self, group: GroupReplica) -> None:
        self.forks.after_apply(group)
        if self.flusher is not None:
            self.flusher.kick(group)
        for hook in self.subscription_hooks:
            hook.group_applied(group)

    def leader_changed(self, group: GroupReplica) -> None:
        self.forwarder.leader_changed(group)
        if self.draining and group.is_leader:
            self._move_leadership(group)

    def owns_for(self, group_id: int):
        count = self.group_count
        return lambda bucket, stream: group_of(bucket, stream, count) == group_id

    # -- the peer transport's callbacks ----------------------------------------------------

    def _received(self, peer_id, items) -> None:
        for group_id, data in items:
            group = self.groups.get(group_id)
            if group is None:
                # a group not hosted here (moved away, or a stale leader): once per group
                if group_id not in self._unknown_logged:
                    self._unknown_logged.add(group_id)
                    log.info("peer {peer} sent a message for group {group}, not hosted here",
                             peer=peer_id, group=group_id)
                continue
            group.node.step(decode_message(data))
            self.schedule(group)

    def _forwarded(self, group_id, payload: bytes):
        group = self.groups.get(group_id)
        decoded = cbor2.loads(payload) if payload else [""]
        kind = decoded[0]
        if group is None:
            remote = self.remote.get(group_id)
            return cbor2.dumps(["not_member", remote.leader_hint if remote else NONE,
                                remote.members if remote else []])
        if kind == "submit":
            return self.forwarder.answer(group, payload, decoded)
        if kind == "where":
            return cbor2.dumps(["at", group.node.leader, members_of(group)])
        return serve(self, group, decoded)

    # -- groups hosted elsewhere (ursula.core.remote) ----------------------------------------

    def _remote(self, g: int) -> RemoteGroup:
        remote = self.remote.get(g)
        if remote is None:
            initial = self.placement.initial(g) if self.placement is not None else []
            remote = self.remote[g] = RemoteGroup(self, g, initial)
        return remote

    def _owned(self) -> list[int]:
        if self.placement is None:
            return sorted(self.groups)
        return self.placement.owned

    def _all_groups(self) -> list:
        return [self.groups.get(g) or self._remote(g) for g in self._owned()]

    def _saw(self, bucket, stream, info) -> None:
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[(bucket, stream)] = list(info_wire_of(info))

    # -- ICore -------------------------------------------------------------------------------

    @property
    def live_readers(self) -> int:
        return self.watchers.count

    def _group_for(self, bucket: str, stream: str):
        g = group_of(bucket, stream, self.group_count)
        group = self.groups.get(g)
        return group if group is not None else self._remote(g)

    def submit(self, command):
        if isinstance(command, (C.CreateBucket, C.DeleteBucket)):
            return self._submit_everywhere(command)
        group = self._group_for(command.bucket, command.stream)
        if (isinstance(command, C.CreateStream) and command.fork_stream is not None
                and command.inherited is None
                and self._group_for(command.fork_bucket, command.fork_stream) is not group):
            return self.forks.create_fork(command)
        if self.flusher is not None and isinstance(command, _WRITES) and (
                not isinstance(group, RemoteGroup)) and (
                not isinstance(command, C.CreateStream) or command.body):
            full = self.flusher.admit(group)
            if full is not None:
                return defer.fail(Unavailable(full))
        return self.forwarder.submit(group, command,
                                     self.reactor.seconds() + self.settings.leader_wait_s)

    def _submit_everywhere(self, command):
        deadline = self.reactor.seconds() + self.settings.leader_wait_s
        d = defer.gatherResults([self.forwarder.submit(g, command, deadline)
                                 for g in self._all_groups()], consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure.raiseException())
        return d.addCallback(_combine_bucket_outcomes)

    def head(self, bucket, stream):
        group = self._group_for(bucket, stream)
        if isinstance(group, RemoteGroup):
            d = group.call("head", [bucket, stream]).addCallback(info_from_wire)
            return d.addCallback(self._saw_info, bucket, stream)
        return self.reads.head(bucket, stream)

    def _saw_info(self, info, bucket, stream):
        self._saw(bucket, stream, info)
        return info

    def read_applied(self, bucket, stream, offset, max_bytes):
        group = self._group_for(bucket, stream)
        if isinstance(group, RemoteGroup):
            d = group.call("read", [bucket, stream, offset, max_bytes]).addCallback(
                read_from_wire)
            return d.addCallback(lambda r: self._saw_info(r.info, bucket, stream) and r)
        return self.reads.read_applied(bucket, stream, offset, max_bytes)

    def list_streams(self, bucket, after, limit):
        if not self.remote and (self.placement is None
                                or len(self.groups) == len(self.placement.owned)):
            return self.reads.list_streams(bucket, after, limit)
        parts = [self.reads.list_streams(bucket, after, limit)] if self.groups else []
        for g in self._owned():
            if g not in self.groups:
                parts.append(self._remote(g).call("list", [bucket, after, limit]).addCallback(
                    lambda items: None if items is None else
                    [(name, info_from_wire(info)) for name, info in items]))
        return merge_listings(parts, limit)

    def read_spans(self, bucket, stream, offset, max_bytes):
        """``read_applied`` with the cold part named (``ReadResult.cold``), not fetched: for
        another core of this node, which fetches it from the cold store they share."""
        if isinstance(self._group_for(bucket, stream), RemoteGroup):
            return self.read_applied(bucket, stream, offset, max_bytes)
        return self.reads.read_applied(bucket, stream, offset, max_bytes, stitch=False)

    def stitch(self, result):
        """A ReadResult with its cold spans fetched (through this core's chunk cache)."""
        return self.reads.stitch(result)

    def view(self, bucket, stream, kind, max_bytes):
        group = self._group_for(bucket, stream)
        if isinstance(group, RemoteGroup):
            return group.call("view", [bucket, stream, kind, max_bytes]).addCallback(
                view_from_wire)
        return self.reads.view(bucket, stream, kind, max_bytes)

    def subscribe(self, bucket, stream, callback):
        group = self._group_for(bucket, stream)
        if isinstance(group, RemoteGroup):
            if self.watchers.count >= self.watchers.limit:
                raise TooManyReaders()
            return RemoteSubscription(group, (bucket, stream),
                                      self._seen.get((bucket, stream), []), callback)
        return self.watchers.add((bucket, stream), callback)

    def is_ready(self) -> bool:
        return all(group.node.leader != NONE for group in self.groups.values())

    def stats(self) -> dict:
        machines = [group.machine for group in self.groups.values()]
        return {"streams": sum(m.stream_count for m in machines),
                "bytes": sum(m.total_bytes for m in machines),
                "cold_bytes": sum(m.cold_bytes for m in machines),
                "live_readers": self.watchers.count, **reducer_stats(self.reducer)}

    def group_stats(self) -> list[dict]:
        out = []
        for group in self.groups.values():
            node = group.node
            out.append({"group": group.group_id, "term": node.term, "leader": node.leader,
                        "role": node.role, "commit": node.committed, "applied": group.applied,
                        "snapshot": group.storage.snapshot().meta.index,
                        "snapshots_installed": group.snapshots_installed,
                        "hot_bytes": group.machine.total_bytes,
                        "cold_bytes": group.machine.cold_bytes,
                        "flush_lag_bytes": (self.flusher.lag_bytes(group)
                                            if self.flusher is not None else 0),
                        "voters": list(node.voters), "learners": list(node.learners),
                        **({"match": {str(m): p.match
                                      for m, p in node.tracker.progress.items()}}
                           if node.role == "leader" else {})})
        return out


    # -- the admin plane (ursula.admin) -------------------------------------------------

    def _admin_group(self, group_id: int) -> GroupReplica:
        group = self.groups.get(group_id)
        if group is None:
            raise AdminError(404, f"group {group_id} is not held here (groups: "
                                  f"{', '.join(map(str, sorted(self.groups)))})")
        return group

    def _connected_peers(self, group: GroupReplica) -> list[int]:
        if self.transport is None:
            return []
        return [v for v in group.node.voters
                if v != self.node_id and self.transport.connected(v)]

    def node_status(self) -> dict:
        """This node (or core) as the admin plane's ``/__ursula/status`` shows it."""
        placement = self.placement
        return {"node": self.node_id, "draining": self.draining,
                "group_count": self.group_count, "groups": self.group_stats(),
                "hosted": sorted(self.groups),
                "replication": (0 if placement is None or placement.every_node
                                else placement.voters_per_group),
                "genesis": placement.genesis if placement is not None else []}

    def host_group(self, group_id: int):
        """Host a replica of a group here from now on: an empty one that joins (it neither
        votes nor campaigns until the group's leader has added it and promoted it; it catches
        up from the leader's log or snapshot). Idempotent: ``{"group", "hosted", "new"}``."""
        try:
            if self.placement is None or group_id not in self.placement.owned:
                raise AdminError(404, f"group {group_id} is not one of this process's groups")
        except AdminError as error:
            return defer.fail(error)
        if group_id in self.groups:
            return defer.succeed({"group": group_id, "hosted": True, "new": False})
        storage = MemoryStorage(self.placement.initial(group_id))
        group = self._replica(group_id, storage, True)
        self.groups[group_id] = group
        self.remote.pop(group_id, None)
        self._unknown_logged.discard(group_id)
        self.placement.save_hosted(self.groups)
        if not self.stopped:
            self.scheduler.groups.append(group)
            self.schedule(group)
        log.info("group {group}: hosted here from now on (joining)", group=group_id)
        return defer.succeed({"group": group_id, "hosted": True, "new": True})

    def join_token(self, node: int):
        """The token with which node ``node`` may register its peer address."""
        if not self.join_secret:
            return defer.fail(AdminError(409, "a node of its own has no cluster secret"))
        return defer.succeed({"node": node, "token": join_token(self.join_secret, node)})

    def set_peer_address(self, node: int, address: str, token: str):
        """Node ``node`` is at ``address`` (``host:port``, its peer port) from now on: the
        transport dials it there (a node that joined, or moved), and ``peers.json`` keeps it
        over ``[cluster] peers`` across restarts. 403 for a wrong join token, 400 for a bad
        address."""
        try:
            if not self.join_secret or not token_ok(self.join_secret, node, token):
                raise AdminError(403, f"token: not the join token of node {node}")
            try:
                host, port = parse_address(address)
            except ValueError as error:
                raise AdminError(400, str(error)) from None
        except AdminError as error:
            return defer.fail(error)
        if node != self.node_id and self.transport is not None:
            self.transport.set_peer(node, f"tcp:host={host}:port={port + self.peer_port_offset}")
        if self.peers_file:
            addresses = load_addresses(self.peers_file)
            addresses[node] = (host, port)
            save_addresses(self.peers_file, addresses)
        log.info("node {node} is at {host}:{port} from now on", node=node, host=host, port=port)
        return defer.succeed({"node": node, "address": f"{host}:{port}"})

    def drop_group(self, group_id: int):
        """Stop hosting a group whose membership no longer has this node (``ursula-admin``
        asks only once the group's leader has removed it): its requests fail over to the
        hosts, its journal records are released after a last snapshot. Refused (409) while
        this node leads the group. Idempotent: ``{"group", "hosted": False}``."""
        group = self.groups.get(group_id)
        if group is None:
            return defer.succeed({"group": group_id, "hosted": False})
        if group.is_leader:
            return defer.fail(AdminError(409, f"node {self.node_id} leads group {group_id}: "
                                              f"remove it from the group first"))
        if self.placement is None:
            return defer.fail(AdminError(409, "every group is hosted on every node "
                                              "([cluster] replication covers all nodes)"))
        del self.groups[group_id]
        if group in self.scheduler.groups:
            self.scheduler.groups.remove(group)
        self.scheduler._scheduled.pop(group_id, None)
        group.fail_all(Unavailable(f"group {group_id} moved away from this node"))
        self.placement.save_hosted(self.groups)
        index = group.storage.snapshot().meta.index
        if index:
            self.persister.compacted(group_id, index)
        remote = self._remote(group_id)
        remote.learn(NONE, [m for m in members_of(group) if m != self.node_id])
        log.info("group {group}: no longer hosted here", group=group_id)
        return defer.succeed({"group": group_id, "hosted": False})

    def transfer_leader(self, group_id: int, to: int, timeout_s: float | None = None):
        """Move the leadership of a group this node leads to voter ``to``; a Deferred of the
        new leader once it leads (``AdminError`` 409 if this node does not lead the group,
        400 for a node that is not a voter, 503 if it has not moved within ``timeout_s``)."""
        try:
            group = self._admin_group(group_id)
            voters = group.node.voters
            if to not in voters:
                raise AdminError(400, f"node {to} is not a voter of group {group_id} (voters: "
                                      f"{', '.join(map(str, voters))})")
            if to == self.node_id and group.is_leader:
                return defer.succeed(to)
            if not group.is_leader:
                leader = group.node.leader
                raise AdminError(409, f"node {self.node_id} does not lead group {group_id} "
                                      f"(leader: {leader or 'unknown'})", leader or None)
            if to not in self._connected_peers(group):
                raise AdminError(503, f"node {to} is not connected to node {self.node_id}")
        except AdminError as error:
            return defer.fail(error)
        group.node.transfer_leadership(to)
        self.schedule(group)
        if timeout_s is None:
            timeout_s = 2 * self.settings.tick_ms * self.settings.election_ticks / 1000 + 1
        deadline = self.reactor.seconds() + timeout_s

        def check():
            if group.node.leader == to and not group.is_leader:
                return to
            if self.reactor.seconds() >= deadline:
                raise AdminError(503, f"group {group_id}: node {to} did not take the lead "
                                      f"within {timeout_s:.1f} s")
            return task.deferLater(self.reactor, 0.02, check)
        return check()

    def change_membership(self, group_id: int, op: str, node: int):
        """Propose a membership change of a group this node leads (``op``: ``add_learner``,
        ``promote`` or ``remove``, one server at a time); a Deferred of the group's members
        once it is applied here (``AdminError`` 409 if this node does not lead the group or
        another change is in flight, 400 for a change that does not apply)."""
        ops = CONF_CHANGE_OPS
        try:
            if op not in ops:
                raise AdminError(400, f"membership change {op!r}: one of "
                                      f"{', '.join(sorted(ops))}")
            group = self._admin_group(group_id)
            if not group.is_leader:
                leader = group.node.leader
                raise AdminError(409, f"node {self.node_id} does not lead group {group_id} "
                                      f"(leader: {leader or 'unknown'})", leader or None)
        except AdminError as error:
            return defer.fail(error)

        def refused(failure):
            # a change that does not apply: 400; not the leader any more, or another change
            # in flight (or the new leader's first entry not yet committed): 409, try again
            status = 400 if failure.check(Unavailable) else 409
            raise AdminError(status, f"group {group_id}: {op} {node}: "
                                     f"{failure.getErrorMessage()}", group.node.leader or None)

        def members(_):
            node_ = group.node
            return {"group": group_id, "voters": list(node_.voters),
                    "learners": list(node_.learners)}
        return group.propose_conf_change(ConfChange(ops[op], node)).addCallbacks(
            members, refused)

    def snapshot_group(self, group_id: int):
        """Snapshot this replica of a group now (and compact its log); a Deferred of
        ``{"group", "index", "taken"}`` once the snapshot is durable (``taken`` False when
        nothing was applied since the last one, or one is being saved)."""
        try:
            group = self._admin_group(group_id)
        except AdminError as error:
            return defer.fail(error)
        d = group.take_snapshot()
        if d is None:
            return defer.succeed({"group": group_id, "taken": False,
                                  "index": group.storage.snapshot().meta.index})
        return d.addCallback(lambda index: {"group": group_id, "taken": True, "index": index})

    def drain(self, timeout_s: float = 30.0):
        """Move the leadership of every group off this node and keep it off (a group this
        node wins again is handed over at once) until ``undrain``. A Deferred of the groups
        still led here when it gave up waiting (``[]``: drained)."""
        if self.transport is None:
            return defer.fail(AdminError(409, "a node of its own has no other node to lead"))
        self.draining = True
        if self._drain_loop is None or not self._drain_loop.running:
            self._drain_loop = task.LoopingCall(self._drain_tick)
            self._drain_loop.clock = self.reactor
            self._drain_loop.start(max(0.05, self.settings.tick_ms / 1000 * 3), now=True)
        deadline = self.reactor.seconds() + timeout_s

        def check():
            led = sorted(g.group_id for g in self.groups.values() if g.is_leader)
            if not led or not self.draining or self.reactor.seconds() >= deadline:
                return led
            return task.deferLater(self.reactor, 0.05, check)
        return check()

    def undrain(self) -> None:
        """This node may lead groups again (elections decide; nothing moves back at once)."""
        self.draining = False
        if self._drain_loop is not None and self._drain_loop.running:
            self._drain_loop.stop()
        self._drain_loop = None

    def _drain_tick(self) -> None:
        if not self.draining or self.stopped:
            return
        self._drain_turn += 1
        for group in self.groups.values():
            if group.is_leader:
                self._move_leadership(group)

    def _move_leadership(self, group: GroupReplica) -> None:
        targets = self._connected_peers(group)
        if not targets or group.node.lead_transferee != NONE:
            return  # nobody to take it, or a transfer is under way (it times out by itself)
        group.node.transfer_leadership(
            targets[(group.group_id + self._drain_turn) % len(targets)])
        self.schedule(group)

    def backup_group(self, group_id: int):
        """A consistent image of a group for a backup: after a ReadIndex barrier (so it holds
        everything committed before the call, wherever the leader is), the state machine's
        snapshot (streams, hot bytes, cold chunk references, producers, subscriptions). A
        Deferred of ``{"group", "index", "term", "data"}``."""
        try:
            group = self._admin_group(group_id)
        except AdminError as error:
            return defer.fail(error)

        def image(_):
            return {"group": group_id, "index": group.applied, "term": group.node.term,
                    "data": group.machine.snapshot()}
        return self.reads.barrier(group).addCallback(image)


_WRITES = (C.Append, C.AppendBatch, C.CreateStream)


#: A leader follows its group's load only to a node at most this many entries behind it.
FOLLOW_LOAD_MAX_LAG = 16
#: ... and only after at least this many writes in a period.
FOLLOW_LOAD_MIN_WRITES = 100


def follow_load_target(counts: dict[int, int], me: int) -> int | None:
    """The node a group led by ``me`` should move to, from its writes of the last period by
    the node they entered (``counts``): the one with more than half of them and more than
    twice ``me``'s own, after at least FOLLOW_LOAD_MIN_WRITES; else None. Writes spread over
    the nodes (a load balancer in front) move nothing, and a moved leader does not come back
    unless the load does."""
    total = sum(counts.values())
    if total < FOLLOW_LOAD_MIN_WRITES:
        return None
    node, most = max(((n, c) for n, c in counts.items() if n != me), key=lambda nc: nc[1],
                     default=(None, 0))
    if node is None or 2 * most <= total or most <= 2 * counts.get(me, 0):
        return None
    return node


def _empty(storage) -> bool:
    """Whether a group's storage holds nothing yet (a new or wiped disk)."""
    return (storage.hard_state.term == 0 and storage.last_index() == 0
            and storage.snapshot().meta.index == 0)


def merge_listings(parts, limit: int):
    """One bucket listing from the Deferred listings of several places (groups hosted here and
    elsewhere, or other cores): a place without the bucket counts as empty, the bucket is
    missing only if every place says so; names sorted, at most ``limit``."""
    def missing(failure):
        failure.trap(StreamError)
        if failure.value.code != "bucket_not_found":
            return failure
        return None
    d = defer.gatherResults([p.addErrback(missing) for p in parts], consumeErrors=True)
    d.addErrback(lambda failure: failure.value.subFailure.raiseException())

    def merge(results):
        if all(r is None for r in results):
            raise StreamError("bucket_not_found")
        found = [item for r in results if r for item in r]
        return sorted(found, key=lambda item: item[0])[:limit]
    return d.addCallback(merge)


def _combine_bucket_outcomes(outcomes):
    errors = [o.error for o in outcomes if o.error]
    if "bucket_not_empty" in errors:
        return next(o for o in outcomes if o.error == "bucket_not_empty")
    if errors and len(errors) == len(outcomes):
        return outcomes[0]
    result = outcomes[0].__class__()
    result.created = any(o.created for o in outcomes)
    return result
