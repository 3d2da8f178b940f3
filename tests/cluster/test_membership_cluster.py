"""Membership changes on a real cluster, as the runbook in docs/operations.md does them: a
fourth node joins a 3-node cluster (``[cluster] join = true``) and ``ursula-admin node add 4``
makes it a learner and then a voter of every group, while producers write and the leader of a
group is killed with SIGKILL in the middle; then ``node remove 1`` moves leadership off node 1
and removes it from every group. Every acknowledged append reads back exactly once from every
remaining member."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time

from cluster_procs import Cluster
from procs import request
from test_cluster import Writer, _check_exactly_once, _read_all

ADMIN = str(pathlib.Path(sys.executable).parent / "ursula-admin")
GROUPS = 4


def admin(nodes, *args, check=True, timeout=240):
    urls = ",".join(n.admin_url for n in nodes)
    result = subprocess.run([ADMIN, "--admin", urls, *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _members(nodes) -> dict[int, tuple[list, list]]:
    """group -> (voters, learners) as each group's leader sees them."""
    statuses = {}
    for node in nodes:
        try:
            status = json.loads(request("GET", node.admin_url + "/__ursula/status",
                                        timeout=3)[2])
        except (OSError, ValueError):
            continue
        for row in status["groups"]:
            if row["role"] == "leader":
                statuses[row["group"]] = (row["voters"], row["learners"])
    return statuses


def test_a_node_joins_and_an_original_node_leaves_under_load(tmp_path):
    cluster = Cluster(tmp_path, size=4, groups=GROUPS, fsync="always",
                      cluster_extra="genesis = 1, 2, 3\n")
    ini = cluster.nodes[3].directory / "node.ini"
    ini.write_text(ini.read_text().replace("[cluster]\n", "[cluster]\njoin = true\n"))
    try:
        _join_and_leave(cluster)
    finally:
        cluster.stop()


def _join_and_leave(cluster):
    first, joiner = cluster.nodes[:3], cluster.nodes[3]
    rest = cluster.nodes[1:]
    stop = threading.Event()
    names = [f"member-{i}" for i in range(8)]
    writers = [Writer(name, lambda: [n for n in first if n.alive], stop) for name in names]
    for node in first:
        node.start()
    cluster.wait_ready(first)
    for name in names:
        assert request("PUT", f"{first[0].url}/v1/stream/{name}", None,
                       {"Content-Type": "text/plain"})[0] in (200, 201)
    for writer in writers:
        writer.start()
    try:
        joiner.start()
        time.sleep(1.0)
        # node add 4, with the leader of group 0 killed (kill -9) a moment after it began
        adding = subprocess.Popen(
            [ADMIN, "--admin", ",".join(n.admin_url for n in cluster.nodes), "node", "add",
             "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        victim = cluster.leader_of(0)
        assert victim is not None and victim is not joiner
        victim.kill()
        time.sleep(1.5)
        victim.start()
        out, errors = adding.communicate(timeout=300)
        print(out, errors)
        assert adding.returncode == 0, out + errors
        assert f"node 4 added to all {GROUPS} groups" in out
        members = _members(cluster.nodes)
        assert len(members) == GROUPS and all(
            voters == [1, 2, 3, 4] and learners == [] for voters, learners in members.values())
        # node remove 1: its leaderships move, then it leaves every group
        result = admin(cluster.nodes, "node", "remove", "1")
        assert f"node 1 removed from all {GROUPS} groups" in result.stdout
        time.sleep(1.0)
        members = _members(rest)
        assert len(members) == GROUPS and all(
            voters == [2, 3, 4] and learners == [] for voters, learners in members.values())
        # the writers go on through the remaining members
        for writer in writers:
            writer.nodes = lambda: [n for n in rest if n.alive]
        time.sleep(2.0)
    finally:
        stop.set()
        for writer in writers:
            writer.join(10)
    total = sum(len(w.acked) for w in writers)
    print(f"membership: {total} appends acknowledged, "
          f"{sum(w.failures for w in writers)} retried")
    assert total > 0
    deadline = time.monotonic() + 30
    for node in rest:  # every remaining member holds every acknowledged append, once
        for writer in writers:
            while True:
                try:
                    body = _read_all(node, writer.name_)
                    _check_exactly_once(body, writer.name_, len(writer.acked))
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
    # and the removed node no longer counts: with it stopped, every group still commits
    cluster.nodes[0].stop()
    for name in names:
        status, _, _ = request("POST", f"{rest[0].url}/v1/stream/{name}", b"after;",
                               {"Content-Type": "text/plain"}, timeout=10)
        assert status == 204, name
