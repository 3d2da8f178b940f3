"""A node's peer address changes on a running cluster (``ursula-admin join-token`` and
``node address``): node 3 stops and comes back on another peer port; nodes 1 and 2 are told
with node 3's join token (a wrong token is refused), node 3 catches up, and node 1, restarted
with its old config, still finds node 3 at its new address (``peers.json``): with node 2
stopped, writes through node 1 need node 3 to commit."""

from __future__ import annotations

import subprocess

from cluster_procs import Cluster, free_ports
from procs import request
from test_cluster import _read_all
from test_membership_cluster import ADMIN, admin


def _append(node, name, body):
    return request("POST", f"{node.url}/v1/stream/{name}", body,
                   {"Content-Type": "text/plain"}, timeout=10)[0]


def test_a_node_comes_back_at_a_new_peer_address(tmp_path):
    cluster = Cluster(tmp_path, size=3, groups=2, fsync="always")
    one, two, three = cluster.nodes
    try:
        cluster.start()
        cluster.wait_ready()
        assert request("PUT", f"{one.url}/v1/stream/moved", None,
                       {"Content-Type": "text/plain"})[0] in (200, 201)
        assert _append(one, "moved", b"a;") == 204
        token = admin([one], "join-token", "3").stdout.strip()
        assert len(token) == 40 and token != admin([one], "join-token", "2").stdout.strip()
        wrong = subprocess.run([ADMIN, "--admin", one.admin_url, "node", "address", "3",
                                "127.0.0.1:1", "--token", "0" * 40], capture_output=True,
                               text=True, timeout=60)
        assert wrong.returncode == 1 and "join token" in wrong.stderr
        three.stop()
        new_port = free_ports(8)
        assert _append(one, "moved", b"b;") == 204
        result = admin([one, two], "node", "address", "3", f"127.0.0.1:{new_port}",
                       "--token", token)
        assert result.stdout.count(f"node 3 is at 127.0.0.1:{new_port}") == 2
        # node 3's own config names its new address (the others keep their old config)
        ini = three.directory / "node.ini"
        ini.write_text(ini.read_text().replace(f"127.0.0.1:{three.peer_port} ",
                                               f"127.0.0.1:{new_port} "))
        three.start()
        cluster.wait_ready([three])
        assert _append(three, "moved", b"c;") == 204
        # node 1 restarts from its old config: peers.json says where node 3 is now
        one.kill()
        one.start()
        cluster.wait_ready([one])
        two.stop()
        assert _append(one, "moved", b"d;") == 204  # a quorum of 1 and 3
        assert _read_all(three, "moved") == b"a;b;c;d;"
    finally:
        cluster.stop()
