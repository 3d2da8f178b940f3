"""What an idle Raft group costs (issue 14's scale model): a benchmark, never a test.

    python bench/scale.py [--groups 4,64,256] [--nodes 3] [--seconds 20] [--out F.json]

For each group count it starts a fresh loopback cluster of ``--nodes`` nodes (one core each,
fsync=always, the default tick of 100 ms: every leader heartbeats every follower ten times a
second), waits until every group has a leader, lets it settle, then samples for ``--seconds``
of idle time: the CPU each node spends (utime + stime of its process tree, % of one core) and
its RSS. It prints those per group count, and the marginal cost of one idle group (the slope
between the smallest and the largest count): CPU per group per node, and memory per group per
node. ``docs/scale.md`` turns the figures into a model of larger clusters.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers  # noqa: E402


def measure(groups: int, nodes: int, seconds: float, settle: float) -> dict:
    spec = {"name": f"scale-{groups}", "label": f"{nodes} nodes, {groups} groups",
            "role": "ursula", "kind": "ursula", "nodes": nodes, "ready": "/__ursula/ready",
            "ini": servers.CLUSTER_INI + f"groups = {groups}\n[storage]\nfsync = always\n"}
    workdir = tempfile.mkdtemp(prefix=f"ursula-scale-{groups}-")
    server = servers.Server(spec, workdir, None)
    server.start(timeout=120)
    try:
        time.sleep(settle)
        before = {pid: servers.tree([pid]) for pid in server.pids()}
        start = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - start
        after = {pid: servers.tree([pid]) for pid in server.pids()}
        per_node = []
        for pid in server.pids():
            ticks = sum(t for t, _ in after[pid].values()) - sum(
                t for t, _ in before[pid].values())
            rss = sum(r for _, r in after[pid].values())
            per_node.append({"cpu_pct": 100.0 * ticks / servers.HZ / elapsed,
                             "rss_mib": rss / (1 << 20)})
    finally:
        server.stop()
    cpu = sum(n["cpu_pct"] for n in per_node) / len(per_node)
    rss = sum(n["rss_mib"] for n in per_node) / len(per_node)
    return {"groups": groups, "nodes": nodes, "cpu_pct_per_node": round(cpu, 2),
            "rss_mib_per_node": round(rss, 1), "per_node": per_node}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", default="4,64,256")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--out")
    args = p.parse_args()
    counts = [int(g) for g in args.groups.split(",")]
    rows = []
    for groups in counts:
        row = measure(groups, args.nodes, args.seconds, args.settle)
        rows.append(row)
        print(f"{groups:6d} groups: {row['cpu_pct_per_node']:6.2f} % CPU per node idle, "
              f"{row['rss_mib_per_node']:7.1f} MiB RSS per node", flush=True)
    lo, hi = rows[0], rows[-1]
    if hi["groups"] > lo["groups"]:
        span = hi["groups"] - lo["groups"]
        cpu = (hi["cpu_pct_per_node"] - lo["cpu_pct_per_node"]) / span
        mem = (hi["rss_mib_per_node"] - lo["rss_mib_per_node"]) * 1024 / span
        print(f"one idle group: {cpu * 10:.3f} ms of CPU per second per node "
              f"({cpu:.4f} % of a core), {mem:.1f} KiB of RSS per node")
        rows.append({"marginal": {"cpu_pct_per_group": cpu, "rss_kib_per_group": mem}})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
