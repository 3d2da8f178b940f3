"""``ursula-admin`` against a real 3-node cluster (each node the supervisor of its core
processes): status, transfer-leader, snapshot, and the runbook's rolling restart with drain
(docs/operations.md): drain a node, stop it (SIGTERM), start it, undrain it; producers write
all along, and every acknowledged append is read back exactly once."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest
from cluster_procs import Cluster
from test_cluster import Writer, _check_exactly_once, _read_all

ADMIN = str(pathlib.Path(sys.executable).parent / "ursula-admin")
GROUPS = 4


def admin(cluster, *args, nodes=None, check=True):
    urls = ",".join(n.admin_url for n in (nodes or cluster.nodes))
    result = subprocess.run([ADMIN, "--admin", urls, *args], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("admin"), size=3, groups=GROUPS, fsync="always")
    cluster.start()
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def _view(cluster):
    return json.loads(admin(cluster, "status", "--json").stdout)


def _leaders(view) -> dict[int, int]:
    return {g["group"]: g["leader"] for g in view["groups"]}


def test_status_shows_every_node_and_group(cluster):
    result = admin(cluster, "status")
    print(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "ADMIN", "CORES"]
    assert sorted(int(line.split()[0]) for line in lines[1:4]) == [1, 2, 3]
    view = _view(cluster)
    assert len(view["groups"]) == GROUPS
    for group in view["groups"]:
        assert group["leader"] in (1, 2, 3)
        assert sorted(r["node"] for r in group["replicas"]) == [1, 2, 3]
        assert [r["role"] for r in group["replicas"]].count("leader") == 1
    assert all(n["group_count"] == GROUPS and not n["draining"] for n in view["nodes"])


def test_transfer_leader_and_snapshot(cluster):
    leader = _leaders(_view(cluster))[1]
    to = next(n for n in (1, 2, 3) if n != leader)
    result = admin(cluster, "transfer-leader", "1", "--to", str(to))
    assert f"node {to} leads now" in result.stdout
    assert _leaders(_view(cluster))[1] == to
    refused = admin(cluster, "transfer-leader", "1", "--to", "9", check=False)
    assert refused.returncode == 1 and "not a voter" in refused.stderr
    assert refused.stderr.count("\n") == 1
    result = admin(cluster, "snapshot", "--group", "2")
    assert result.stdout.count("group 2:") == 3  # every node snapshots its replica


def test_rolling_restart_with_drain_loses_nothing(cluster):
    names = [f"rolling-{i}" for i in range(8)]
    for name in names:
        assert cluster.nodes[0].alive
        from procs import request
        assert request("PUT", f"{cluster.nodes[0].url}/v1/stream/{name}", None,
                       {"Content-Type": "text/plain"})[0] in (200, 201)
    stop = threading.Event()
    writers = [Writer(name, lambda: [n for n in cluster.nodes if n.alive], stop)
               for name in names]
    for writer in writers:
        writer.start()
    timings = []
    try:
        for node in cluster.nodes:  # the runbook: one node at a time
            started = time.monotonic()
            result = admin(cluster, "drain", "--node", str(node.node_id))
            assert "drained" in result.stdout
            view = _view(cluster)
            assert next(n for n in view["nodes"] if n.get("node") == node.node_id)["leads"] == []
            assert node.node_id not in _leaders(view).values()
            node.stop()  # SIGTERM: it leads nothing, so nothing waits for an election
            node.start()
            cluster.wait_ready([node])
            deadline = time.monotonic() + 30
            while True:  # a restarted node serves (and is not draining: it restarted)
                status = admin(cluster, "status", "--json", nodes=[node], check=False)
                if status.returncode == 0:
                    break
                assert time.monotonic() < deadline, status.stderr
                time.sleep(0.2)
            admin(cluster, "undrain", "--node", str(node.node_id))
            timings.append(time.monotonic() - started)
        time.sleep(1.0)
    finally:
        stop.set()
        for writer in writers:
            writer.join(10)
    total = sum(len(w.acked) for w in writers)
    print(f"rolling restart of 3 nodes with drain: {total} appends acknowledged, "
          f"{sum(w.failures for w in writers)} retried; per node "
          f"{', '.join(f'{t:.1f} s' for t in timings)}")
    assert total > 0
    for writer in writers:
        _check_exactly_once(_read_all(cluster.nodes[0], writer.name_), writer.name_,
                            len(writer.acked))


def test_replacing_a_dead_nodes_disk(cluster):
    """The runbook: the node whose disk died is gone; once both survivors hold every committed
    entry, each group's leadership moves to the other survivor (a new leader forgets what the
    dead node had acknowledged); then the node starts with an empty data directory and catches
    up from the leaders."""
    import shutil

    from procs import request
    name = "replaced-disk"
    assert request("PUT", f"{cluster.nodes[0].url}/v1/stream/{name}", None,
                   {"Content-Type": "text/plain"})[0] in (200, 201)
    for i in range(50):
        assert request("POST", f"{cluster.nodes[0].url}/v1/stream/{name}", f"r:{i};".encode(),
                       {"Content-Type": "text/plain"})[0] == 204
    victim = cluster.nodes[2]
    victim.kill()
    shutil.rmtree(victim.directory / "data")  # the disk is gone
    others = [n for n in cluster.nodes if n is not victim]
    alive = {n.node_id for n in others}
    deadline = time.monotonic() + 30
    while True:  # 1. every group led by a survivor, both survivors holding every commit
        view = json.loads(admin(cluster, "status", "--json", nodes=others).stdout)
        if all(g["leader"] in alive and all(r["commit_lag"] == 0 and r["apply_lag"] == 0
                                            for r in g["replicas"]) for g in view["groups"]):
            break
        assert time.monotonic() < deadline, json.dumps(view["groups"])
        time.sleep(0.2)
    for group in view["groups"]:  # 2. a new leader for every group
        to = next(n for n in alive if n != group["leader"])
        admin(cluster, "transfer-leader", str(group["group"]), "--to", str(to), nodes=others)
    victim.start()  # 3. the new disk: an empty data directory
    cluster.wait_ready([victim])
    expected = _read_all(cluster.nodes[0], name)
    deadline = time.monotonic() + 30
    while True:  # 4. it catches up in every group (its cores may still be starting)
        result = admin(cluster, "status", "--json", check=False)
        view = json.loads(result.stdout) if result.stdout.strip() else {"groups": []}
        mine = [r for g in view["groups"] for r in g["replicas"] if r["node"] == victim.node_id]
        if result.returncode == 0 and len(mine) == GROUPS and all(r["commit_lag"] == 0 and r["apply_lag"] == 0
                                       for r in mine):
            break
        assert time.monotonic() < deadline, json.dumps(view["groups"])
        time.sleep(0.2)
    assert _read_all(victim, name) == expected and expected.count(b";") == 50
