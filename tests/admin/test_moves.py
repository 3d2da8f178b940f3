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


# -- the command line's loop (ursula.admin.cli.cmd_place) on the model ---------------------------

class ModelClient:
    """An ``AdminClient`` of one node of the model: its status, and the steps asked of it."""

    def __init__(self, model, node):
        self.model = model
        self.node = node
        self.url = f"http://node{node}"
        self.asked = []

    def status(self):
        from twisted.internet import defer
        return defer.succeed(next(s for s in self.model.statuses() if s["node"] == self.node))

    def _take(self, group, step):
        from twisted.internet import defer
        self.asked.append((group, step))
        self.model.take(group, step)
        return defer.succeed({})

    def host_group(self, group):
        return self._take(group, ("host", self.node))

    def drop_group(self, group):
        return self._take(group, ("drop", self.node))

    def transfer_leader(self, group, to):
        assert self.model.groups[group]["leader"] == self.node  # asked of the leader
        return self._take(group, ("transfer", to))

    def change_membership(self, group, op, node):
        assert self.model.groups[group]["leader"] == self.node
        return self._take(group, ("change", op, node))


def _run_cli(model, argv, within=None):
    import io

    from twisted.internet import task

    from ursula.admin.cli import build_parser, cmd_place
    clock = task.Clock()
    args = build_parser().parse_args(argv + (["--within", str(within)] if within else []))
    clients = [ModelClient(model, n) for n in model.nodes]
    out = io.StringIO()
    results = []
    cmd_place(args, clients, out, io.StringIO(), clock).addBoth(results.append)
    for _ in range(2000):
        if results:
            break
        clock.advance(0.2)
    return results[0], out.getvalue(), clients


def test_the_cli_moves_one_group_and_stops():
    m = Model([1, 2, 3, 4], 3, 4)
    g = next(g for g, r in m.groups.items() if 1 in r["voters"] and 4 not in r["voters"])
    m.groups[g]["leader"] = 1
    result, out, _ = _run_cli(m, ["group", "move", str(g), "--from", "1", "--to", "4"])
    assert result is None, result
    assert f"group {g}: moved from node 1 to node 4" in out
    assert 4 in m.groups[g]["voters"] and 1 not in m.groups[g]["voters"] + m.groups[g]["learners"]
    assert g in m.hosted[4] and g not in m.hosted[1]
    result, out, clients = _run_cli(m, ["group", "move", str(g), "--from", "1", "--to", "4"])
    assert result is None and not any(c.asked for c in clients)  # done: nothing to do again


def test_the_cli_replaces_a_node_and_resumes_after_it_died():
    m = Model([1, 2, 3], 3, 6)
    m.add_node(4)
    # the first run dies after a few rounds (the node driving it went away)
    from ursula.admin.cli import Failed
    result, _, _ = _run_cli(m, ["node", "replace", "2", "4"], within=0.5)
    assert hasattr(result, "check") and result.check(Failed)
    assert any(r["learners"] or len(r["voters"]) != 3 or 4 in r["voters"]
               for r in m.groups.values())  # it stopped half-way
    result, out, _ = _run_cli(m, ["node", "replace", "2", "4"])
    assert result is None, result
    assert "balanced" in out and not m.hosted[2]
    assert all(2 not in r["voters"] and len(r["voters"]) == 3 and not r["learners"]
               for r in m.groups.values())
