"""Webhooks on a real 3-node cluster: a receiver gets a wake for each append burst; during a
retry storm (the receiver answers 500) the leader of the subscription's group is killed with
SIGKILL; once the receiver recovers, the new leader carries on from the replicated state:
every stream's acked offset reaches its tail (no wake lost), every delivery is signed with the
one cluster key, and deliveries came from after the kill."""

from __future__ import annotations

import json
import pathlib
import sys
import time

import pytest
from cluster_procs import Cluster

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "integration"))
from procs import request  # noqa: E402
from receiver import Receiver, verify  # noqa: E402

from ursula.core.placement import group_of  # noqa: E402

GROUPS = 4
SUBS = "[subscriptions]\nretry_max_ms = 2000\nreconcile_ms = 1000\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("subs-cluster"), size=3, groups=GROUPS,
                      fsync="always", extra=SUBS)
    cluster.start()
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def get_json(url):
    status, _, body = request("GET", url, timeout=5)
    return status, json.loads(body) if body else None


def test_kill_the_subscription_leader_during_a_retry_storm(cluster):
    receiver = Receiver("done")
    sub_id = "storm"
    group = group_of("_default", f"__ds/subscriptions/{sub_id}", GROUPS)
    leader = cluster.leader_of(group)
    assert leader is not None
    others = [n for n in cluster.nodes if n is not leader]
    base = others[0].url + "/v1/stream"
    body = json.dumps({"type": "webhook", "pattern": "storm/*",
                       "webhook": {"url": receiver.url}, "lease_ttl_ms": 3000}).encode()
    status, _, answer = request("PUT", f"{base}/__ds/subscriptions/{sub_id}", body,
                                {"content-type": "application/json"})
    assert status == 201, answer
    _, jwks = get_json(f"{base}/__ds/jwks.json")
    names = [f"storm/{i}" for i in range(4)]
    tails: dict[str, str] = {}

    def burst(node, n):
        for name in names:
            method = "PUT" if name not in tails else "POST"
            for _ in range(20):  # a write may meet an election: retry (plain appends)
                try:
                    status, head, _ = request(method, f"{node.url}/v1/stream/{name}",
                                              f"{name}:{n};".encode(),
                                              {"content-type": "text/plain"}, timeout=5)
                except OSError:
                    status = 0
                if status in (200, 201, 204):
                    tails[name] = head["stream-next-offset"]
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"append to {name} kept failing ({status})")

    def wait_for(check, timeout):
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)

    try:
        burst(others[0], 0)
        wait_for(lambda: len(receiver.snapshot()) >= 1, 15)
        # the retry storm: the receiver fails every delivery; bursts keep coming
        receiver.mode = "fail"
        for n in range(1, 4):
            burst(others[n % 2], n)
            time.sleep(0.4)
        wait_for(lambda: any(d["answered"] == "fail" for d in receiver.snapshot()), 15)
        failed_before_kill = sum(d["answered"] == "fail" for d in receiver.snapshot())
        leader.kill()
        killed_at = len(receiver.snapshot())
        for n in range(4, 7):
            burst(others[n % 2], n)
            time.sleep(0.3)
        time.sleep(1.0)
        receiver.mode = "done"

        def all_acked():
            try:
                status, view = get_json(f"{others[1].url}/v1/stream/__ds/subscriptions/{sub_id}")
            except OSError:
                return False
            if status != 200:
                return False
            acked = {s["path"]: s["acked_offset"] for s in view["streams"]}
            return all(acked.get(n) == t for n, t in tails.items())
        wait_for(all_acked, 60)
        deliveries = receiver.snapshot()
        new_leader = cluster.leader_of(group)
        print(f"group {group}: leader {leader.node_id} killed, new leader "
              f"{new_leader.node_id if new_leader else None}; {len(deliveries)} deliveries, "
              f"{failed_before_kill} failed before the kill, {len(deliveries) - killed_at} "
              f"after it")
        assert new_leader is not None and new_leader is not leader
        assert len(deliveries) > killed_at  # the new leader delivered
        assert any(d["answered"] == "done" for d in deliveries[killed_at:])
        for delivery in deliveries:
            assert verify(jwks, delivery["signature"], delivery["raw"])
        gens = [d["body"]["generation"] for d in deliveries]
        assert gens == sorted(gens)  # retries repeat a generation, never go back
        # every burst was part of some delivered wake: the last one covers every tail
        last_tails = {}
        for delivery in deliveries:
            for s in delivery["body"]["streams"]:
                last_tails[s["path"]] = max(last_tails.get(s["path"], ""), s["tail_offset"])
        assert all(last_tails.get(n, "") >= t for n, t in tails.items()), (last_tails, tails)
    finally:
        receiver.close()
        leader.start()
