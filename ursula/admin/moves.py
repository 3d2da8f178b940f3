"""Group moves and rebalancing, planned from the cluster's state (pure: no I/O).

``ursula-admin group move / rebalance / node add / node remove / node replace`` (in a cluster
whose groups have fewer voters than it has nodes) run rounds: ask every node for its status,
``view`` it, take the next ``step`` of the move in flight, or ``settle`` a group left half-way
(by this run or an earlier one that stopped), or plan the next move (``plan``). Nothing is
remembered between runs: a run recomputes everything from the state, so it resumes wherever
an earlier one (or the node driving it) died.

A move of group G from A to B is, one step per round, each idempotent:
``host`` (B starts an empty joining replica), ``add_learner`` B, wait until B's match is within
``max_lag`` of the commit, ``promote`` B, ``transfer`` the leadership to B if A leads, ``remove``
A, ``drop`` (A stops hosting G).

May import: the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GroupView:
    group: int
    leader: int | None
    voters: list[int]
    learners: list[int]
    commit: int = 0
    match: dict = field(default_factory=dict)
    hosts: set = field(default_factory=set)  # nodes that host a replica (their status)


@dataclass
class ClusterView:
    nodes: list[int]  # the nodes that answered
    replication: int  # voters per group (0: every node)
    groups: dict[int, GroupView]

    def replicas(self) -> dict[int, int]:
        counts = dict.fromkeys(self.nodes, 0)
        for g in self.groups.values():
            for v in g.voters:
                counts[v] = counts.get(v, 0) + 1
        return counts

    def leaders(self) -> dict[int, int]:
        counts = dict.fromkeys(self.nodes, 0)
        for g in self.groups.values():
            if g.leader:
                counts[g.leader] = counts.get(g.leader, 0) + 1
        return counts


def view(statuses) -> ClusterView:
    """``statuses``: the status documents of the nodes that answered."""
    nodes = sorted(s["node"] for s in statuses)
    replication = max((s.get("replication", 0) for s in statuses), default=0)
    groups: dict[int, GroupView] = {}
    best: dict[int, dict] = {}
    for s in statuses:
        for row in s["groups"]:
            g = row["group"]
            held = best.get(g)
            rank = (row["role"] == "leader", row["term"], row["commit"])
            if held is None or rank > (held["role"] == "leader", held["term"], held["commit"]):
                best[g] = row
    for g, row in best.items():
        leader = (row.get("leader") or None) if row["role"] == "leader" else None
        groups[g] = GroupView(g, leader, sorted(row.get("voters", [])),
                              sorted(row.get("learners", [])), row["commit"],
                              row.get("match", {}))
    for s in statuses:
        for g in s.get("hosted", [r["group"] for r in s["groups"]]):
            if g in groups:
                groups[g].hosts.add(s["node"])
    return ClusterView(nodes, replication, groups)


def move_step(g: GroupView, source: int, dest: int, max_lag: int):
    """The next step of moving ``g`` from ``source`` to ``dest``: None when it is done, else
    ``("wait", why)``, ``("host", node)``, ``("change", op, node)``, ``("transfer", to)`` or
    ``("drop", node)``. Needs the leader's row (``g.leader``) for membership steps."""
    members = set(g.voters) | set(g.learners)
    if dest not in members:
        if source not in members and dest in g.voters:
            return None
        if dest not in g.hosts:
            return ("host", dest)
        if g.leader is None:
            return ("wait", "no leader")
        return ("change", "add_learner", dest)
    if g.leader is None:
        return ("wait", "no leader")
    if dest in g.learners:
        match = g.match.get(str(dest), 0)
        if g.commit - match > max_lag:
            return ("wait", f"learner {dest} at {match} of {g.commit}")
        return ("change", "promote", dest)
    if source in members:
        if g.leader == source:
            return ("transfer", dest)
        return ("change", "remove", source)
    if source in g.hosts:
        return ("drop", source)
    return None


def settle(v: ClusterView, max_lag: int, exclude=(), busy=()):
    """A step that finishes a group a move left half-way (a learner to promote, an extra
    voter to remove, a replica hosted by a node that is no member), or None."""
    replication = v.replication
    counts = v.replicas()
    for g in sorted(v.groups.values(), key=lambda g: g.group):
        if g.group in busy:
            continue
        if g.learners:
            dest = g.learners[0]
            if len(g.voters) >= replication:
                source = _victim(g, counts, exclude, keep=dest)
                return g.group, move_step(g, source, dest, max_lag) or ("wait", "settling")
            return g.group, move_step(g, dest, dest, max_lag) or ("wait", "settling")
        if replication and len(g.voters) > replication and g.leader:
            source = _victim(g, counts, exclude)
            if g.leader == source:
                others = [x for x in g.voters if x != source]
                return g.group, ("transfer", max(others, key=lambda x: g.match.get(str(x), 0)))
            return g.group, ("change", "remove", source)
        members = set(g.voters) | set(g.learners)
        stale = sorted(h for h in g.hosts if h not in members)
        if stale and g.leader:
            return g.group, ("drop", stale[0])
    return None


def _victim(g: GroupView, counts, exclude, keep=None) -> int:
    """The voter a group at one voter too many loses: a node being removed, else the one
    with the most replicas (not the leader on a tie)."""
    voters = [x for x in g.voters if x != keep]
    for x in voters:
        if x in exclude:
            return x
    return max(voters, key=lambda x: (counts.get(x, 0), x != g.leader, x))


def plan(v: ClusterView, nodes=None, exclude=()):
    """The next move towards replicas and leaders per node within one of even over ``nodes``
    (default: the nodes that answered), none on ``exclude``: ``("move", g, source, dest)``,
    ``("transfer", g, to)`` or None (balanced)."""
    targets = sorted(set(nodes or v.nodes) - set(exclude))
    if not targets:
        return None
    counts = v.replicas()
    load = {n: counts.get(n, 0) for n in targets}
    for source in sorted(exclude):
        for g in sorted(v.groups.values(), key=lambda g: g.group):
            if source in g.voters:
                free = [n for n in targets if n not in g.voters]
                if free:
                    return ("move", g.group, source, min(free, key=lambda n: (load[n], n)))
    while True:
        high = max(targets, key=lambda n: (load[n], n))
        low = min(targets, key=lambda n: (load[n], n))
        if load[high] - load[low] <= 1:
            break
        for g in sorted(v.groups.values(), key=lambda g: g.group):
            if high in g.voters and low not in g.voters:
                return ("move", g.group, high, low)
        break
    leaders = v.leaders()
    led = {n: leaders.get(n, 0) for n in targets}
    for high in sorted(targets, key=lambda n: (-led[n], n)):
        for g in sorted(v.groups.values(), key=lambda g: g.group):
            if g.leader != high:
                continue
            to = [x for x in g.voters if x in led and led[x] <= led[high] - 2]
            if to:
                return ("transfer", g.group, min(to, key=lambda x: (led[x], x)))
    return None
