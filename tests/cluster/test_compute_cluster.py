"""The compute extension on a real 3-node cluster of ``twistd ursula`` processes: the State
Protocol module (loaded from ``[compute] modules`` on every node) bound to a JSON stream,
10,000 change messages written with an exactly-once producer, the leader of the stream's group
killed (kill -9) half-way and restarted; then every replica's materialised state (``GET
{stream}/compute/state`` on each node: a linearizable read of that node's own replica) has the
same digest and covers the same offset, and a client that bootstraps ends with the state of a
full replay (in Python and with ``@durable-streams/state``'s ``MaterializedState``)."""

from __future__ import annotations

import json
import pathlib
import sys
import time

from cluster_procs import Cluster

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE.parent / "compute"))
from compute_helpers import (  # noqa: E402
    EXAMPLES,
    client_state,
    materialise,
    node_materialise,
    parse_multipart,
    state_messages,
)
from procs import request  # noqa: E402

from ursula.core.placement import group_of  # noqa: E402
from ursula.protocol.offsets import render_offset  # noqa: E402

GROUPS = 4
STREAM = "doc"
JSON = {"Content-Type": "application/json"}


def _post(nodes, url_path: str, body: bytes, seq: int, deadline: float) -> None:
    """Append with producer headers, retrying the same seq on any failure (exactly once)."""
    turn = seq
    while True:
        live = nodes()
        node = live[turn % len(live)] if live else None
        turn += 1
        status = 0
        if node is not None:
            try:
                status = request("POST", node.url + url_path, body,
                                 {**JSON, "Producer-Id": "writer", "Producer-Epoch": "0",
                                  "Producer-Seq": str(seq)}, timeout=5)[0]
            except OSError:
                status = 0
        if status in (200, 204):
            return
        assert time.monotonic() < deadline, f"append {seq} not acknowledged (last {status})"
        time.sleep(0.1)


def _state(node) -> tuple[str, str, bytes]:
    status, headers, body = request("GET", f"{node.url}/v1/stream/{STREAM}/compute/state",
                                    timeout=10)
    assert status == 200, (status, body)
    return headers["Stream-Compute-Digest"], headers["Stream-Compute-Offset"], body


def test_replicas_hold_the_same_state_after_the_leader_is_killed(tmp_path):
    module = EXAMPLES / "state_protocol.wat"
    cluster = Cluster(tmp_path, size=3, groups=GROUPS, fsync="always",
                      cluster_extra="snapshot_entries = 200\nlog_keep_entries = 20\n",
                      extra=f"[compute]\nmodules = state = {module}\nevery_records = 1500\n")
    cluster.start()
    try:
        cluster.wait_ready()
        first = cluster.nodes[0]
        path = f"/v1/stream/{STREAM}"
        assert request("PUT", first.url + path, None, JSON)[0] == 201
        status, _, body = request("PUT", first.url + path + "/compute",
                                  json.dumps({"module": "state"}).encode(), JSON)
        assert status == 201, body
        messages = state_messages(10_000, seed=29)
        batches = [json.dumps(messages[i:i + 25]).encode() for i in range(0, len(messages), 25)]
        alive = lambda: [n for n in cluster.nodes if n.alive]  # noqa: E731
        deadline = time.monotonic() + 300
        victim = None
        for seq, body in enumerate(batches):
            if seq == len(batches) // 2:
                victim = cluster.leader_of(group_of("_default", STREAM, GROUPS))
                assert victim is not None
                victim.kill()
            if seq == len(batches) * 3 // 4:
                victim.start()  # it catches up from the new leader (log or snapshot)
            _post(alive, path, body, seq, deadline)
        cluster.wait_ready()
        # every replica: the same state over the same offset (polled while the restarted
        # node catches up)
        digests = None
        while time.monotonic() < deadline:
            digests = {n.node_id: _state(n)[:2] for n in cluster.nodes}
            if len(set(digests.values())) == 1:
                break
            time.sleep(0.2)
        assert len(set(digests.values())) == 1, digests
        print(f"killed node {victim.node_id}, the leader of the stream's group; every "
              f"replica's state digest: {next(iter(digests.values()))[0][:16]}...")
        status, _, described = request("GET", first.url + path + "/compute")
        described = json.loads(described)
        assert described["records"] == 10_000 and described["errors"] == 0, described
        assert described["snapshots"] == 6  # at 1500, 3000, ... 9000 records
        # an old offset is gone; a client bootstraps (from the restarted node) and ends with
        # the state of a full replay
        status, headers, _ = request("GET", victim.url + path + "?offset=" + render_offset(0))
        assert status == 410
        status, headers, body = request("GET", victim.url + path + "/bootstrap", timeout=10)
        assert status == 200
        parts = parse_multipart(headers["Content-Type"], body)
        assert len(parts) - 1 == 1000  # the retained updates after the last compaction
        recovered = client_state(parts)
        expected = materialise(messages)
        assert materialise(recovered) == expected
        checked = node_materialise({"bootstrap": recovered, "replay": messages})
        for name, text in checked.items():
            assert {(t, k): v for t, k, v in json.loads(text)} == expected, name
    finally:
        cluster.stop()
