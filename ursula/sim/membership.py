"""Membership changes in the simulator (``Simulation(membership=True)``, ``--membership``): an
operator that adds learners, promotes them, removes voters (the leader among them) and
learners, and wipes the disk of a removed node before it joins again, while every other fault
goes on.

What lives here: `Operator`. The cluster has two spare nodes besides the group's genesis
voters; they start with the genesis membership on an empty disk, which they are not part of
(as a node that joins does), and learn every change from the leader's log or snapshot. Some
steps are (with ``moves=True``, ``--moves``) group moves (as ``ursula-admin group move`` takes them): a learner, its promotion,
a leadership transfer away from the source if it leads (TimeoutNow), the source's removal,
each step derived from the leader's membership at the time, so faults and changes of leader
in between are survived. A step
asks the highest-term leader's membership what may change: a non-member joins as a learner, a
learner is promoted, a voter (at least two stay) or a learner is removed, a removed node's
disk is wiped (it rejoins later with the same id and no data). Sometimes a second change is
proposed right after the first (the Raft core refuses it while the first is not applied; the
planted rule ``conf_changes_in_flight`` takes it). A node restarted on its wiped disk joins
(``ursula.raft.Config.joining``): it neither votes nor campaigns until promoted again, for it
has lost the votes it cast; the planted twin ``wiped_node_votes`` lets it vote at once. The Raft core's answer to every proposal is
logged with the run's trace.

The checks need nothing new: every replica's log must match every other's, leaders must hold
every committed entry, and each replica's streams (a removed or lagging one's a prefix) must
hold every acknowledged append once; at the end every member of the leader's membership must
catch up.

May import: the standard library, ursula.raft and ursula.sim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ursula.raft import ADD_LEARNER, PROMOTE, REMOVE, ConfChange
from ursula.sim.disk import FakeDisk

if TYPE_CHECKING:
    from ursula.sim.run import Simulation

SPARES = 2  # nodes beyond the genesis voters


class Operator:
    def __init__(self, sim: Simulation, rng, rule: str | None = None,
                 moves: bool = False) -> None:
        self.with_moves = moves  # group moves on (``--moves``)
        self.sim = sim
        self.rng = rng
        self.rule = rule  # a planted twin: ``wiped_node_votes`` (a wiped node joins as if new)
        self.wiped: set[int] = set()
        self.proposed = 0
        self.applied = 0
        self.wipes = 0
        self.move: tuple[int, int, int] | None = None  # (from, to, steps taken) in flight
        self.moves = 0  # moves finished
        self.transfers = 0  # leadership transfers asked for by moves

    def step(self) -> None:
        sim = self.sim
        leader = sim._leader()
        if leader is None:
            return
        replica = sim.replicas[leader]
        conf = replica.node.conf_state
        rng = self.rng
        outside = [i for i in sim.ids if i not in conf.members]
        if self.move is not None:
            self.move_step(leader, conf)
            return
        if (self.with_moves and outside and len(conf.voters) >= 2 and not conf.learners
                and rng.random() < 0.3):
            # a group move (ursula-admin group move): from a voter (the leader half the time)
            source = leader if rng.random() < 0.5 else rng.choice(conf.voters)
            self.move = (source, rng.choice(outside), 0)
            sim.log(f"member: move {self.move[0]} -> {self.move[1]}")
            self.move_step(leader, conf)
            return
        options: list[tuple[int, int] | tuple[str, int]] = []
        if outside:
            options.append((ADD_LEARNER, rng.choice(outside)))
        if conf.learners:
            options.append((PROMOTE, rng.choice(conf.learners)))
            options.append((REMOVE, rng.choice(conf.learners)))
        if len(conf.voters) > 2:
            options.append((REMOVE, rng.choice(conf.voters)))
        wipeable = [i for i in outside if sim.replicas[i].up]
        if wipeable and rng.random() < 0.2:
            options.append(("wipe", rng.choice(wipeable)))
        if not options:
            return
        op, node = rng.choice(options)
        if op == "wipe":
            self.wipe(node)
            return
        self.propose(leader, ConfChange(op, node))
        if rng.random() < 0.3:  # a second change at once: refused unless the rule is broken
            more = [o for o in options if o[0] != "wipe" and o != (op, node)]
            if more:
                op2, node2 = rng.choice(more)
                self.propose(leader, ConfChange(op2, node2))

    def move_step(self, leader: int, conf) -> None:
        """The next step of the move in flight, from the leader's membership (as
        ``ursula.admin.moves.move_step``): learner, promotion, leadership transfer away from
        the source (TimeoutNow), removal. Given up after 40 steps (faults can stall it)."""
        source, dest, steps = self.move
        self.move = (source, dest, steps + 1)
        if steps >= 40:
            self.sim.log(f"member: move {source} -> {dest} given up")
            self.move = None
            return
        if dest not in conf.members:
            if source not in conf.members:
                self.move = None  # something else removed both: nothing left to move
                return
            self.propose(leader, ConfChange(ADD_LEARNER, dest))
        elif dest in conf.learners:
            self.propose(leader, ConfChange(PROMOTE, dest))
        elif source in conf.members:
            if source == leader:
                self.transfers += 1
                self.sim.log(f"member: transfer {leader} -> {dest}")
                self.sim.replicas[leader].transfer_leadership(dest)
            else:
                self.propose(leader, ConfChange(REMOVE, source))
        else:
            self.moves += 1
            self.sim.log(f"member: move {source} -> {dest} done")
            self.move = None

    def propose(self, leader: int, change: ConfChange) -> None:
        replica = self.sim.replicas[leader]
        self.proposed += 1
        self.sim.log(f"member: propose {change} at {leader}")

        def answered(answer, change=change):
            if answer[0] == "ok":
                self.applied += 1
            self.sim.log(f"member: {change} -> {answer[0]}")

        def now():
            rejection = replica.driver.propose_conf_change(answered, change)
            if rejection is not None:
                self.sim.log(f"member: {change} refused ({rejection.reason})")

        replica.event(replica.incarnation, now)

    def wipe(self, node: int) -> None:
        """A node that is no member any more loses its disk; it comes back empty."""
        sim = self.sim
        replica = sim.replicas[node]
        replica.crash()
        replica.disk = FakeDisk(sim.genesis, sim.disk_mode)
        self.wiped.add(node)
        self.wipes += 1
        sim.log(f"member: wipe {node}")
        sim.world.after(self.rng.randint(20, 300) * 1000, sim._restart, node)

    def restarted(self, node: int) -> None:
        """As a real node does: one that starts on an empty disk in a group that exists joins
        (``Config.joining``: no votes, no campaigns until it is promoted again)."""
        replica = self.sim.replicas[node]
        storage = replica.storage
        if (node in self.wiped and self.rule != "wiped_node_votes"
                and storage.hard_state.term == 0 and len(storage.ents) == 1
                and storage.snap.meta.index == 0):
            replica.node.joining = True
