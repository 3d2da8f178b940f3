"""Groups placed on 3 of 5 nodes, on a real cluster (``[cluster] replication = 3``): three
nodes start, producers write through every node (also through nodes that host none of the
stream's group: their requests are carried to a host); two nodes join, ``ursula-admin
rebalance`` moves groups to them (a group's leader is killed with SIGKILL while a move is
half-way, and restarted), then ``node remove 1`` moves every replica off node 1. Every
acknowledged append reads back exactly once from every replica of its group, and the moves
finish with replicas and leaders per node within one of even.

CI size: 5 groups, 8 producers. ``URSULA_PLACEMENT_GROUPS`` / ``URSULA_PLACEMENT_WRITERS``
make it bigger for a run by hand."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from cluster_procs import Cluster
from procs import request
from test_cluster import Writer, _check_exactly_once, _read_all
from test_membership_cluster import ADMIN, admin

from ursula.core.placement import group_of

GROUPS = int(os.environ.get("URSULA_PLACEMENT_GROUPS", "5"))
WRITERS = int(os.environ.get("URSULA_PLACEMENT_WRITERS", "8"))


def _statuses(nodes) -> dict[int, dict]:
    out = {}
    for node in nodes:
        if not node.alive:
            continue
        try:
            out[node.node_id] = json.loads(request("GET", node.admin_url + "/__ursula/status",
                                                   timeout=3)[2])
        except (OSError, ValueError):
            continue
    return out


def _leader_rows(nodes) -> dict[int, dict]:
    rows = {}
    for node_id, status in _statuses(nodes).items():
        for row in status["groups"]:
            if row["role"] == "leader" and (row["group"] not in rows
                                            or row["term"] > rows[row["group"]]["term"]):
                rows[row["group"]] = {**row, "node": node_id}
    return rows


def test_five_nodes_grow_rebalance_and_shrink_under_load(tmp_path):
    cluster = Cluster(tmp_path, size=5, groups=GROUPS, fsync="always",
                      cluster_extra="genesis = 1, 2, 3\nreplication = 3\n")
    for joiner in cluster.nodes[3:]:
        ini = joiner.directory / "node.ini"
        ini.write_text(ini.read_text().replace("[cluster]\n", "[cluster]\njoin = true\n"))
    try:
        _grow_and_shrink(cluster)
    finally:
        cluster.stop()


def _grow_and_shrink(cluster):
    first = cluster.nodes[:3]
    everyone = cluster.nodes
    stop = threading.Event()
    names = [f"place-{i}" for i in range(WRITERS)]
    for node in first:
        node.start()
    cluster.wait_ready(first)
    for name in names:
        assert request("PUT", f"{first[0].url}/v1/stream/{name}", None,
                       {"Content-Type": "text/plain"})[0] in (200, 201)
    writers = [Writer(name, lambda: [n for n in everyone if n.alive], stop) for name in names]
    for writer in writers:
        writer.start()
    try:
        for joiner in everyone[3:]:
            joiner.start()
        cluster.wait_ready(everyone)
        time.sleep(1.0)
        assert all(s["hosted"] == [] for i, s in _statuses(everyone).items() if i > 3)
        rebalancing = subprocess.Popen(
            [ADMIN, "--admin", ",".join(n.admin_url for n in everyone), "rebalance",
             "--within", "240"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # kill -9 the leader of a group while a move of that group is half-way
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            for row in _leader_rows(everyone).values():
                if row["learners"] or len(row["voters"]) > 3:
                    victim = next(n for n in everyone if n.node_id == row["node"])
                    break
            time.sleep(0.05)
        assert victim is not None, "no move seen half-way"
        victim.kill()
        time.sleep(1.5)
        victim.start()
        out, errors = rebalancing.communicate(timeout=300)
        print(out, errors)
        assert rebalancing.returncode == 0, out + errors
        assert "balanced" in out
        rows = _leader_rows(everyone)
        assert len(rows) == GROUPS
        assert all(len(r["voters"]) == 3 and not r["learners"] for r in rows.values())
        replicas = {n.node_id: sum(n.node_id in r["voters"] for r in rows.values())
                    for n in everyone}
        assert max(replicas.values()) - min(replicas.values()) <= 1, replicas
        # node 1 leaves: every replica it holds moves to the others
        result = admin(everyone, "node", "remove", "1", "--within", "240")
        print(result.stdout)
        rows = _leader_rows(everyone)
        assert all(1 not in r["voters"] + r["learners"] for r in rows.values())
        assert _statuses(everyone[:1])[1]["hosted"] == []
        rest = everyone[1:]
        for writer in writers:
            writer.nodes = lambda: [n for n in rest if n.alive]
        time.sleep(2.0)
    finally:
        stop.set()
        for writer in writers:
            writer.join(10)
    total = sum(len(w.acked) for w in writers)
    print(f"placement: {total} appends acknowledged, "
          f"{sum(w.failures for w in writers)} retried")
    assert total > 0
    statuses = _statuses(cluster.nodes)
    deadline = time.monotonic() + 30
    for writer in writers:
        group = group_of("_default", writer.name_, GROUPS)
        hosts = [n for n in cluster.nodes if group in statuses[n.node_id]["hosted"]]
        assert len(hosts) == 3, (group, [n.node_id for n in hosts])
        for node in hosts:  # a host answers from its own replica
            while True:
                try:
                    _check_exactly_once(_read_all(node, writer.name_), writer.name_,
                                        len(writer.acked))
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
