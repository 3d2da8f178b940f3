"""One-connection append latency of a 3-node cluster, with and without the parallel write.

    python bench/latency.py [--appends 2000] [--rounds 3]

For each round and each mode (``[cluster] parallel_write = true``, then ``false``) it starts a
fresh 3-node cluster on loopback (fsync=always, one core per node), creates one stream, finds
the leader of its group (``/__ursula/groups`` on the admin plane) and sends ``--appends``
sequential 256 B appends on one keep-alive connection, first to the leader, then through a
follower (which forwards to the leader). It prints p50/p90/p99 per mode and path, medians over
rounds. With one connection there is no batching: the figure is the length of the write path
(HTTP, forward, leader fsync, replication, follower fsync, commit, apply, answer).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import twistd_path  # noqa: E402

from ursula.core.placement import group_of  # noqa: E402

INI = """[node]
listen = tcp:{http}:interface=127.0.0.1
admin_listen = tcp:{admin}:interface=127.0.0.1
data_dir = {data}
cores = 1
[cluster]
node_id = {node_id}
groups = 4
secret = ursula-bench-shared-secret-not-for-production
parallel_write = {parallel}
peers =
{peers}
[storage]
fsync = always
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_cluster(workdir: str, parallel: bool):
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    peers = "\n".join(f"    {i + 1} = 127.0.0.1:{peer} http://127.0.0.1:{http_port}"
                      for i, (http_port, peer, _) in enumerate(ports))
    procs = []
    for i, (http_port, _, admin) in enumerate(ports):
        node_dir = os.path.join(workdir, f"node{i + 1}")
        os.makedirs(node_dir)
        ini = os.path.join(node_dir, "node.ini")
        with open(ini, "w") as f:
            f.write(INI.format(http=http_port, admin=admin, data=os.path.join(node_dir, "data"),
                               node_id=i + 1, parallel=str(parallel).lower(), peers=peers))
        procs.append(subprocess.Popen([twistd_path(), "-n", "--logfile",
                                       os.path.join(node_dir, "twistd.log"), "ursula",
                                       "--config", ini], cwd=node_dir,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    deadline = time.monotonic() + 60
    for http_port, _, _ in ports:
        while True:
            try:
                if get(http_port, "/__ursula/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("cluster not ready")
            time.sleep(0.1)
    return procs, ports


def leader_of(ports, group: int) -> int:
    for i, (_, _, admin) in enumerate(ports):
        for g in json.loads(get(admin, "/__ursula/groups")[1])["groups"]:
            if g["group"] == group and g["role"] == "leader":
                return i
    raise RuntimeError(f"group {group} has no leader")


def appends(port: int, name: str, count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = b"x" * 256
    headers = {"Content-Type": "application/octet-stream"}
    out = []
    for _ in range(count):
        started = time.perf_counter()
        conn.request("POST", f"/v1/stream/{name}", body, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 204:
            raise RuntimeError(f"append answered {response.status}")
        out.append((time.perf_counter() - started) * 1000)
    conn.close()
    return out


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def one_round(parallel: bool, count: int) -> dict[str, list[float]]:
    workdir = tempfile.mkdtemp(prefix="ursula-latency-")
    procs, ports = start_cluster(workdir, parallel)
    try:
        name = "latency"
        conn = http.client.HTTPConnection("127.0.0.1", ports[0][0], timeout=10)
        conn.request("PUT", f"/v1/stream/{name}", b"",
                     {"Content-Type": "application/octet-stream"})
        conn.getresponse().read()
        conn.close()
        leader = leader_of(ports, group_of("_default", name, 4))
        deadline = time.monotonic() + 30
        while True:  # warm up (and wait out an election right after the start)
            try:
                appends(ports[leader][0], name, 200)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                leader = leader_of(ports, group_of("_default", name, 4))
        follower = (leader + 1) % 3
        return {"leader": appends(ports[leader][0], name, count),
                "follower": appends(ports[follower][0], name, count)}
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for r in range(args.rounds):
        for parallel in (True, False):
            mode = "parallel write" if parallel else "write, then send"
            for path, values in one_round(parallel, args.appends).items():
                row = (percentile(values, 0.5), percentile(values, 0.9),
                       percentile(values, 0.99))
                figures.setdefault((mode, path), []).append(row)
                print(f"[round {r + 1}] {mode:16s} via {path:8s} p50 {row[0]:.2f} ms  "
                      f"p90 {row[1]:.2f} ms  p99 {row[2]:.2f} ms", flush=True)
    print("\n| mode | sent to | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|---|")
    for (mode, path), rows in figures.items():
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"| {mode} | {path} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
