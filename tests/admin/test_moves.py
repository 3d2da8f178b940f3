"""``ursula.admin.moves``: the plan of group moves, driven against a model of the cluster that
applies each step as the admin plane would (and sometimes forgets the run: a new one resumes
from the state alone)."""

from __future__ import annotations

import random

import pytest

from ursula.admin import moves
from ursula.core.placement import initial_voters


class Model:
    def __init__(self, nodes, replication, groups):
        self.nodes = list(nodes)
        self.replication = replication
        self.groups = {g: {"voters": initial_voters(nodes, replication, g), "learners": [],
                           "match": {}} for g in range(groups)}
        for g, row in self.groups.items():
            row["leader"] = row["voters"][g % len(row["voters"])]
        self.hosted = {n: {g for g, r in self.groups.items() if n in r["voters"]}
                       for n in nodes}

    def add_node(self, n):
        self.nodes.append(n)
        self.hosted[n] = set()

    def statuses(self):
        out = []
        for n in self.nodes:
            rows = []
            for g in sorted(self.hosted[n]):
                r = self.groups[g]
                lead = r["leader"] == n
                rows.append({"group": g, "role": "leader" if lead else "follower",
                             "leader": r["leader"], "term": 1, "commit": 100,
                             "voters": list(r["voters"]), "learners": list(r["learners"]),
                             **({"match": {str(m): 100 for m in r["voters"] + r["learners"]}}
                                if lead else {})})
            out.append({"node": n, "groups": rows, "hosted": sorted(self.hosted[n]),
                        "replication": self.replication, "genesis": [1, 2, 3]})
        return out

    def take(self, group, step):
        r = self.groups[group]
        kind = step[0]
        if kind == "host":
            self.hosted[step[1]].add(group)
        elif kind == "drop":
            assert r["leader"] != step[1]
            assert step[1] not in r["voters"] + r["learners"]
            self.hosted[step[1]].discard(group)
        elif kind == "transfer":
            assert step[1] in r["voters"]
            r["leader"] = step[1]
        elif kind == "change":
            op, node = step[1], step[2]
            if op == "add_learner":
                assert node in self.hosted[node] or group in self.hosted[node]
                r["learners"].append(node)
            elif op == "promote":
                r["learners"].remove(node)
                r["voters"] = sorted(r["voters"] + [node])
            else:
                assert node != r["leader"]
                r["voters"] = [v for v in r["voters"] if v != node]
                r["learners"] = [v for v in r["learners"] if v != node]
            # one server at a time: never below the replication, never two above it
            assert self.replication <= len(r["voters"]) <= self.replication + 1


def drive(model, nodes=None, exclude=(), forget=0.0, seed=0, limit=2000):
    rng = random.Random(seed)
    current = None
    for _ in range(limit):
        v = moves.view(model.statuses())
        if current is not None:
            step = moves.move_step(v.groups[current[0]], current[1], current[2], 10)
            if step is None:
                current = None
                continue
            model.take(current[0], step)
        else:
            settled = moves.settle(v, 10, exclude)
            if settled is not None:
                model.take(*settled)
                continue
            planned = moves.plan(v, nodes, exclude)
            if planned is None:
                return v
            if planned[0] == "move":
                current = planned[1:]
            else:
                model.take(planned[1], ("transfer", planned[2]))
        if rng.random() < forget:
            current = None  # the driving node died: a new run knows only the state
    raise AssertionError("no balance reached")


def _even(counts, nodes):
    values = [counts.get(n, 0) for n in nodes]
    return max(values) - min(values) <= 1


@pytest.mark.parametrize("forget", [0.0, 0.3])
def test_grow_from_three_to_five_then_remove_one(forget):
    m = Model([1, 2, 3], 3, 6)
    m.replication = 3
    m.add_node(4)
    m.add_node(5)
    m.statuses_genesis = [1, 2, 3]
    v = drive(m, forget=forget, seed=1)
    assert _even(v.replicas(), [1, 2, 3, 4, 5]) and _even(v.leaders(), [1, 2, 3, 4, 5])
    assert all(len(g.voters) == 3 and not g.learners for g in v.groups.values())
    v = drive(m, exclude={1}, forget=forget, seed=2)
    assert v.replicas().get(1, 0) == 0 and not m.hosted[1]
    assert _even(v.replicas(), [2, 3, 4, 5]) and _even(v.leaders(), [2, 3, 4, 5])
    for g, row in m.groups.items():  # every member hosts, no one else does
        assert {n for n in m.nodes if g in m.hosted[n]} == set(row["voters"])


def test_move_step_sequence():
    g = moves.GroupView(0, 1, [1, 2, 3], [], 100, {"1": 100, "2": 100, "3": 100}, {1, 2, 3})
    assert moves.move_step(g, 1, 4, 10) == ("host", 4)
    g.hosts.add(4)
    assert moves.move_step(g, 1, 4, 10) == ("change", "add_learner", 4)
    g.learners = [4]
    g.match["4"] = 50
    assert moves.move_step(g, 1, 4, 10)[0] == "wait"
    g.match["4"] = 95
    assert moves.move_step(g, 1, 4, 10) == ("change", "promote", 4)
    g.learners, g.voters = [], [1, 2, 3, 4]
    assert moves.move_step(g, 1, 4, 10) == ("transfer", 4)
    g.leader = 4
    assert moves.move_step(g, 1, 4, 10) == ("change", "remove", 1)
    g.voters = [2, 3, 4]
    assert moves.move_step(g, 1, 4, 10) == ("drop", 1)
    g.hosts.discard(1)
    assert moves.move_step(g, 1, 4, 10) is None
