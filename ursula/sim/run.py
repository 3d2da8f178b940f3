"""One seeded simulation run: build the cluster, inject faults, heal, check, report.

What lives here: `Simulation` (owns the world, the networks, the replicas, the clients and the
checker, and the fault schedule) and `run_seed()`, which returns a `Result`.  Every random
choice, fault parameters included, is drawn from `random.Random(seed)`: the same seed and
options give the same run, event for event.

Phases: (1) faults for `fault_ms` of simulated time while clients append and read (the
idempotent producers and plain writers of `Client`, and `cas_clients` If-Match writers,
`CasClient`, on the stream of a plain writer);
(2) heal: the network becomes reliable and every crashed node restarts; each client must get
an append acknowledged within `heal_bound_ticks` ticks; (3) clients stop, every replica must
catch up with the leader's commit index, and each replica's streams are checked against
every acknowledgement.

With ``cold=True`` (``--cold``) the leader also moves stream bytes to a simulated cold tier
(``ursula.sim.cold``: pipelined uploads, ColdFlushed through Raft, store outages), and every
read stitches cold chunks to hot bytes; its parameters come from a random stream of their own,
so runs without it are unchanged.

With ``membership=True`` (``--membership``) two spare nodes join the cluster and an operator
(``ursula.sim.membership``) changes the group's membership all through the faults: learners
added and promoted, voters (the leader too) and learners removed, removed nodes' disks wiped
before they join again; at the end every member of the leader's membership must catch up.

With ``compute=True`` (``--compute``) the clients bind the WASM byte counter to their streams
and every replica's materialised state is checked against its own stream, and across replicas
(``ursula.sim.compute``).

May import: the standard library, cbor2, ursula.raft, ursula.stream, ursula.replica,
ursula.compute (through ursula.sim.compute) and ursula.sim.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ursula.raft import LEADER
from ursula.sim.checker import Checker, Violation
from ursula.sim.client import CasClient, Client
from ursula.sim.cold import SimColdStore, SimFlusher, stitched_read
from ursula.sim.membership import SPARES, Operator
from ursula.sim.replica import Replica
from ursula.sim.world import MS, NetParams, Network, World
from ursula.stream.machine import StreamError

#: Deliberately broken rules, to show the checker bites.  Each names what it switches on:
#: ``raft`` flags of `ursula.raft.Config`, ``driver`` rules of `ursula.replica.GroupDriver`
#: (its BROKEN_RULES), a ``cold`` rule of `ursula.sim.cold`, a ``sim`` rule of the simulated
#: node around the driver (`ursula.sim.replica`), or a ``disk`` mode of
#: `ursula.sim.disk.FakeDisk`.
BROKEN_RULES: dict[str, dict] = {
    # the Raft core
    "vote_twice": {"raft": {"unsafe_vote_twice": True}},
    "commit_any_term": {"raft": {"unsafe_commit_any_term": True}},
    "vote_stale_log": {"raft": {"unsafe_vote_stale_log": True}},
    "no_prev_check": {"raft": {"unsafe_no_prev_check": True}},
    "no_truncate": {"raft": {"unsafe_no_truncate": True}},
    "commit_not_capped": {
        "raft": {"unsafe_commit_past_last_new": True, "unsafe_heartbeat_commit_uncapped": True}
    },
    "read_no_quorum": {"raft": {"unsafe_read_no_quorum": True}},
    # the group driver
    "read_without_index": {"driver": {"read_without_index"}},
    "read_before_apply": {"driver": {"read_before_apply"}},
    "ack_before_commit": {"driver": {"ack_before_commit"}},
    "no_request_dedup": {"driver": {"no_request_dedup"}},
    "send_before_persist": {"driver": {"send_before_persist"}},
    "reuse_stale_proposal": {"driver": {"reuse_stale_proposal"}},
    "held_twice": {"driver": {"held_twice"}, "hold_bytes": 1 << 20},
    # the cold tier (they switch it on: ursula.sim.cold)
    "flush_before_upload": {"cold": "flush_before_upload"},
    "chunk_key_per_stream": {"cold": "chunk_key_per_stream"},
    "pack_refs_at_zero": {"cold": "pack_refs_at_zero"},
    # If-Match judged where the request arrives instead of at apply (ursula.sim.replica)
    "ifmatch_at_submit": {"sim": "ifmatch_at_submit"},
    # membership changes (they switch the operator on: ursula.sim.membership)
    "learners_count": {"raft": {"unsafe_learners_count": True}, "membership": True},
    "conf_changes_in_flight": {"raft": {"unsafe_conf_changes_in_flight": True},
                               "membership": True},
    "wiped_node_votes": {"member": "wiped_node_votes", "membership": True},
    "joining_heartbeat_commit": {"raft": {"unsafe_joining_heartbeat_commit": True},
                                 "membership": True, "moves": True},
    "snapshot_retransmit": {"raft": {"unsafe_snapshot_retransmit": True},
                            "membership": True, "moves": True},
    # storage (the fake disk)
    "lazy_fsync": {"disk": "lazy_fsync"},
    "unsynced_vote": {"disk": "unsynced_vote"},
    # the compute extension: one node's reducer differs (ursula.sim.compute)
    "compute_diverges": {"compute": "compute_diverges"},
    "torn_tail_kept": {"disk": "torn_tail_kept"},
}


@dataclass
class Result:
    seed: int
    nodes: int
    violation: str | None = None
    sim_ms: int = 0
    events: int = 0
    acks: int = 0
    reads: int = 0
    commits: int = 0
    crashes: int = 0
    snapshots: int = 0
    leaders: int = 0
    checks: int = 0
    cold_uploads: int = 0  # chunks stored in the simulated cold tier
    refused: int = 0  # If-Match appends answered 412 (the writers' acks are in acks)
    conf_changes: int = 0  # membership changes applied (proposals answered ok)
    moves: int = 0  # group moves finished (learner, promote, transfer, remove)
    transfers: int = 0  # leadership transfers the moves asked for
    broken: str | None = None
    options: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.violation is None

    def replay_command(self) -> str:
        cmd = f"python -m ursula.sim --seed {self.seed} --nodes {self.nodes}"
        if self.broken:
            cmd += f" --broken {self.broken}"
        for k, v in sorted(self.options.items()):
            cmd += f" --{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        return cmd


class Simulation:
    def __init__(
        self,
        seed: int,
        nodes: int = 3,
        broken: str | None = None,
        fault_ms: int = 3000,
        clients: int = 3,
        trace: bool = False,
        cold: bool = False,
        cas_clients: int = 2,
        membership: bool = False,
        compute: bool = False,
        moves: bool = False,
        hold_bytes: int = 0,
    ) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.trace = trace
        self.world = World()
        self.ids = list(range(1, nodes + 1))
        self.checker = Checker()
        self.bucket = "_default"
        self.tick_us = 10 * MS
        self.election_tick = 10
        self.heal_bound_ticks = 300
        self.fault_ms = fault_ms
        self.healed = False
        # fault and tuning parameters, all drawn from the seed
        self.net_params = NetParams(
            loss=rng.choice([0.0, 0.01, 0.05, 0.1]),
            dup=rng.choice([0.0, 0.01, 0.05]),
            max_delay=rng.choice([2, 5, 10]) * MS,
            spike=rng.choice([0.0, 0.02, 0.1]),
        )
        self.net = Network(self.world, random.Random(rng.getrandbits(64)), self.net_params)
        self.client_net = Network(
            self.world, random.Random(rng.getrandbits(64)), NetParams(loss=0.01, max_delay=2 * MS)
        )
        self.wire = rng.random() < 0.25  # sometimes carry every message through cbor2
        self.max_disk_delay = rng.choice([0, 1, 3]) * MS
        self.snapshot_every = rng.choice([10, 40, 150])
        self.compact_keep = rng.choice([0, 5, 50])
        self.read_ratio = rng.choice([0.0, 0.1, 0.3])
        self.think_us = rng.choice([1, 5, 20]) * MS
        self.crash_weight = rng.choice([1, 3])
        self.raft_config = dict(
            election_tick=self.election_tick,
            heartbeat_tick=1,
            max_inflight=rng.choice([1, 4, 64]),
            max_size_per_msg=rng.choice([200, 4096, 1 << 20]),
            snapshot_chunk_size=rng.choice([64, 512, 8192]),
        )
        # the driver's hold of proposals while a Work is in flight (GroupDriver.holding): off by
        # default, so the planted rules' first seeds (tests/sim/test_bites.py) stay where they
        # are; CI runs seeds of its own with the node's value and with a small cap
        self.hold_bytes = hold_bytes
        self.broken = broken
        rule = BROKEN_RULES[broken] if broken else {}
        self.raft_config.update(rule.get("raft", {}))
        self.driver_rules = frozenset(rule.get("driver", ()))
        self.hold_bytes = rule.get("hold_bytes", self.hold_bytes)
        self.disk_mode = rule.get("disk")
        self.sim_rule = rule.get("sim")
        self.cold_rule = rule.get("cold")
        self.cold = cold or self.cold_rule is not None
        self.cold_store = None
        if self.cold:
            # its own random stream: a run without the cold tier is the same as before it
            self.cold_rng = random.Random(seed * 1_000_003 + 17)
            self.cold_store = SimColdStore(self.world, random.Random(self.cold_rng.getrandbits(64)))
            self.cold_hot_bytes = self.cold_rng.choice([0, 64, 256])
            self.cold_chunk_bytes = self.cold_rng.choice([32, 128, 400])
            self.cold_depth = self.cold_rng.choice([1, 2, 4])
        self.compute = None
        if compute or rule.get("compute"):
            if self.cold:
                raise ValueError("--compute and --cold together are not supported (a binding "
                                 "needs the stream's whole history hot)")
            from ursula.sim.compute import SimCompute
            self.compute = SimCompute(self.bucket, rule.get("compute"))
        self.genesis = list(self.ids)  # the group's voters at creation
        self.membership = membership or rule.get("membership", False)
        spares = []
        if self.membership:
            # its own random stream: a run without membership changes is the same as before
            self.member_rng = random.Random(seed * 7_000_003 + 5)
            self.operator = Operator(self, random.Random(self.member_rng.getrandbits(64)),
                                     rule.get("member"), moves or rule.get("moves", False))
            spares = list(range(nodes + 1, nodes + 1 + SPARES))
        skews = [rng.uniform(-0.25, 0.25) for _ in self.ids]
        if spares:
            skews += [self.member_rng.uniform(-0.25, 0.25) for _ in spares]
        # (every disk starts with the genesis membership: a spare is not part of it)
        self.replicas = {i: Replica(self, i, skews[i - 1]) for i in self.ids + spares}
        self.ids = self.ids + spares
        self.clients = [Client(self, k, f"s{k % 2}") for k in range(clients)]
        # If-Match writers, all on one stream with an unconditional writer (s1 when clients > 1)
        self.clients += [CasClient(self, k, "s1" if clients > 1 else "s0")
                         for k in range(clients, clients + cas_clients)]
        self.crashes = 0
        self.freezes = 0
        self.snapshots_installed = 0

    # -- knobs used by replicas and clients -------------------------------------------------------
    def new_flusher(self, replica: Replica) -> SimFlusher:
        return SimFlusher(replica, self.cold_store, self.cold_hot_bytes, self.cold_chunk_bytes,
                          self.cold_depth, self.cold_rule)

    def read_stream(self, machine, stream: str, where: str) -> bytes:
        """A replica's whole stream (its cold chunks from the store); StreamError if none."""
        if self.cold_store is None:
            return machine.read(self.bucket, stream, 0, 1 << 30, self.world.now_ms).data
        return stitched_read(machine, self.cold_store, self.bucket, stream, self.world.now_ms,
                             where)

    def _cold_outage(self) -> None:
        if self.healed:
            return
        rng = self.cold_rng
        self.cold_store.outage(self.world.now + rng.randint(20, 600) * MS)
        self.log("fault cold_outage")
        self.world.after(rng.randint(200, 1500) * MS, self._cold_outage)

    def _member_step(self) -> None:
        if self.healed:
            return
        self.operator.step()
        self.world.after(self.member_rng.randint(50, 300) * MS, self._member_step)

    def disk_delay(self) -> int:
        return self.rng.randint(0, self.max_disk_delay) if self.max_disk_delay else 0

    def client_timeout(self) -> int:
        return self.rng.randint(100, 300) * MS

    def log(self, what: str) -> None:
        if self.trace:
            print(f"{self.world.now_ms:7d}ms  {what}")

    # -- faults ----------------------------------------------------------------------------------
    def _fault(self) -> None:
        if self.healed:
            return
        rng = self.rng
        ids = self.ids
        net = self.net
        kind = rng.choices(
            ["heal", "split", "isolate", "oneway", "crash", "transfer", "lossy", "delay",
             "slow_disk", "freeze"],
            weights=[3, 2, 3, 2, 2 * self.crash_weight, 1, 1, 1, 1, 2],
        )[0]
        now = self.world.now
        if kind == "heal":
            net.heal()
            net.params.loss = self.net_params.loss
            net.params.spike = self.net_params.spike
            net.params.spike_delay = self.net_params.spike_delay
        elif kind == "split":
            side = rng.sample(ids, rng.randint(1, len(ids) - 1))
            net.heal()
            net.split(side, [i for i in ids if i not in side])
        elif kind == "isolate":
            # cut the leader off from its peers; clients still reach it (their network is
            # separate), and some of them are pointed at it, as a stale route would
            victim = self._leader() or rng.choice(ids)
            net.split([victim], [i for i in ids if i != victim])
            for c in self.clients:
                if rng.random() < 0.5:
                    c.target = victim
        elif kind == "oneway":
            a = rng.sample(ids, rng.randint(1, len(ids) - 1))
            net.block_one_way(a, [i for i in ids if i not in a])
        elif kind == "crash":
            up = [i for i in ids if self.replicas[i].up]
            if up:
                victim = self._leader() if rng.random() < 0.5 and self._leader() else rng.choice(up)
                self.replicas[victim].crash()
                self.crashes += 1
                self.world.after(rng.randint(20, 800) * MS, self._restart, victim)
        elif kind == "transfer":
            ldr = self._leader()
            if ldr:
                self.replicas[ldr].transfer_leadership(rng.choice([i for i in ids if i != ldr]))
        elif kind == "lossy":
            net.params.loss = rng.choice([0.2, 0.5])
        elif kind == "delay":
            # delays longer than an election timeout: elections overlap old messages
            net.params.spike = rng.choice([0.1, 0.3, 0.6])
            net.params.spike_delay = rng.randint(150, 800) * MS
        elif kind == "slow_disk":
            victim = self._leader() if rng.random() < 0.5 and self._leader() else rng.choice(ids)
            self.replicas[victim].slow_disk(
                now + rng.randint(200, 3000) * MS, rng.choice([20, 200, 1000, 2500]) * MS
            )
        elif kind == "freeze":
            up = [i for i in ids if self.replicas[i].up]
            if up:
                ldr = self._leader()
                victim = ldr if ldr and rng.random() < 0.6 else rng.choice(up)
                self.replicas[victim].freeze(now + rng.randint(100, 3000) * MS)
                self.freezes += 1
        self.log(f"fault {kind}: blocked={sorted(net.blocked)}")
        self.world.after(rng.randint(30, 400) * MS, self._fault)

    def _restart(self, i: int) -> None:
        r = self.replicas[i]
        if not r.up:
            r.restart()
            if self.membership:
                self.operator.restarted(i)
            self.log(f"restart {i}")

    def _leader(self) -> int | None:
        best = None
        for i, r in self.replicas.items():
            if r.up and not r.frozen and r.node.role == LEADER and (best is None or r.node.term > best[0]):
                best = (r.node.term, i)
        return best[1] if best else None

    def _heal(self) -> None:
        self.healed = True
        self.net.heal()
        self.net.params = NetParams(max_delay=self.net_params.max_delay)
        for i in self.ids:
            self._restart(i)
            r = self.replicas[i]
            r.slow_until = 0
            if r.frozen:
                r.frozen_until = self.world.now
                self.world.after(0, r._thaw, r.incarnation)
        self.log("healed")

    # -- periodic whole-state check --------------------------------------------------------------
    def _audit(self) -> None:
        self.check_replica_data()
        self.world.after(500 * MS, self._audit)

    def check_replica_data(self) -> None:
        for i, r in self.replicas.items():
            if not r.up:
                continue
            for stream in self.checker.acked:
                try:
                    data = self.read_stream(r.machine, stream, f"replica {i}")
                except StreamError:
                    data = b""
                self.checker.check_stream_data(f"replica {i}", stream, data)
            if self.compute is not None:
                self.compute.check_replica(r.machine, f"replica {i}")

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> Result:
        res = Result(self.seed, len(self.genesis), broken=self.broken)
        w = self.world
        try:
            for c in self.clients:
                c.start()
            w.after(self.rng.randint(50, 300) * MS, self._fault)
            w.after(500 * MS, self._audit)
            if self.cold:
                w.after(self.cold_rng.randint(100, 1000) * MS, self._cold_outage)
            if self.membership:
                w.after(self.member_rng.randint(100, 600) * MS, self._member_step)
            w.run_until(self.fault_ms * MS)
            self._heal()
            heal_at = w.now
            bound = heal_at + self.heal_bound_ticks * self.tick_us
            w.run_until(bound, stop=lambda: all(c.acks_after_heal > 0 for c in self.clients))
            if not all(c.acks_after_heal > 0 for c in self.clients):
                self.checker.fail(
                    f"liveness: no acknowledged append within {self.heal_bound_ticks} ticks "
                    f"after the network healed (leader: {self._leader()})"
                )
            for c in self.clients:
                c.stopped = True
            bound = w.now + self.heal_bound_ticks * self.tick_us
            w.run_until(bound, stop=self._converged)
            if not self._converged():
                self.checker.fail(
                    "liveness: replicas did not converge after heal: "
                    + ", ".join(
                        f"{i}:{r.applied}/{r.node.committed}" for i, r in self.replicas.items()
                    )
                )
            self.check_replica_data()
            if self.compute is not None:
                leader = self._leader()
                members = (self.replicas[leader].node.conf_state.members if leader
                           else self.replicas)
                self.compute.check_agreement({i: self.replicas[i].machine for i in members
                                              if self.replicas[i].up})
        except Violation as v:
            res.violation = f"{v} (at {w.now_ms} ms)"
        except AssertionError as e:  # an internal assertion of the raft core
            res.violation = f"raft core assertion: {e} (at {w.now_ms} ms)"
        res.sim_ms = w.now_ms
        res.events = w.events
        res.acks = sum(c.acks for c in self.clients)
        res.reads = sum(c.reads for c in self.clients)
        res.commits = self.checker.max_applied
        res.crashes = self.crashes
        res.snapshots = self.snapshots_installed
        res.leaders = len(self.checker.leader_of_term)
        res.checks = self.checker.checks
        res.refused = self.checker.cas_refused
        res.cold_uploads = self.cold_store.uploads if self.cold_store is not None else 0
        res.conf_changes = self.operator.applied if self.membership else 0
        res.moves = self.operator.moves if self.membership else 0
        res.transfers = self.operator.transfers if self.membership else 0
        return res

    def _converged(self) -> bool:
        if any(c.op is not None for c in self.clients):
            return False
        ldr = self._leader()
        if ldr is None:
            return False
        node = self.replicas[ldr].node
        target = node.committed
        members = node.conf_state.members  # a removed node stays behind, as it should
        return all(self.replicas[i].up and self.replicas[i].applied >= target for i in members)


def run_seed(seed: int, nodes: int = 3, broken: str | None = None, **kw) -> Result:
    return Simulation(seed, nodes, broken, **kw).run()
