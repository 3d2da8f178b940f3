"""Where a server's CPU goes per append: each node's steady-state CPU, and its peer traffic.

    python bench/cpu.py [--server ursula-3node] [--streams 100] [--seconds 8] [--conns 64]
                        [--leaders 1,2,3,1]

Starts a server of servers.py (each ursula node with an admin listener on a unix socket in
its work directory), creates the streams, then runs wrk with append.lua (256-byte appends)
against the first node and reads, for that window only (start-up and stream creation left
out): every node's CPU from /proc (its process tree: user and system time), and from each
ursula node's metrics the Raft entries it proposed, its journal writes and its peer counters
(``ursula_peer_*_total``). Printed per node: CPU in % of one core and in microseconds per
acknowledged append (and per thread) and its context switches per append, then each counter
per append.
``--leaders`` moves the leader of group g to the g-th node id of the list first (admin
``transfer-leader``, with ``[cluster] leader_follow_load_ms = 0``), so runs compare the same placement: leaders decide where the work is
(by default elections place them). A measuring tool, not a benchmark table:
bench/run.py makes those.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import placement  # noqa: E402
import servers  # noqa: E402
import workloads  # noqa: E402

COUNTERS = ("ursula_proposal_batch_commands_count", "ursula_proposal_batch_commands_sum",
            "ursula_journal_batches_total")
PEER = re.compile(r'^(ursula_peer_\w+_total)\{peer="(\d+)"\} ([0-9.e+]+)$')


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and its children, threads included."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        children = []
    for p in [pid, *map(int, children)]:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / tick, system / tick


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the reactor (each process's main thread) and of the
    other threads (the journal writer, the cold tier's uploads) of ``pid`` and its
    children."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        children = []
    for p in [pid, *map(int, children)]:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                fields = open(f"/proc/{p}/task/{tid}/stat").read().rsplit(")", 1)[1]
            except OSError:
                continue
            name = "reactor" if tid == str(p) else "other threads"
            fields = fields.split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of every thread of ``pid`` and its
    children: each wake-up of another process or thread (a peer's socket, the journal
    thread) costs one, and on a machine as small as the benchmarks' they add up."""
    voluntary = involuntary = 0
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        children = []
    for p in [pid, *map(int, children)]:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                status = open(f"/proc/{p}/task/{tid}/status").read()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def scrape(sock: str) -> dict[str, float]:
    text = subprocess.run(["curl", "-s", "--unix-socket", sock, "http://node/__ursula/metrics"],
                          capture_output=True, text=True, timeout=10).stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = PEER.match(line)
        if m:
            name = m.group(1)[len("ursula_peer_"):-len("_total")]
            out[f"peer {m.group(2)} {name}"] = float(m.group(3))
            continue
        parts = line.split()
        if len(parts) == 2 and parts[0] in COUNTERS:
            out[parts[0]] = float(parts[1])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="ursula-3node")
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--leaders", default="",
                   help="comma list: the node id that leads group 0, 1, ... (default: as elected)")
    a = p.parse_args()
    spec = next(s for s in servers.SERVERS if s["name"] == a.server)
    if spec["kind"] != "ursula":
        raise SystemExit("--server: an ursula entry of servers.SERVERS")
    if a.leaders and "[cluster]\n" in spec["ini"]:
        # a placement to compare: the leaders must not follow the load away from it
        spec = dict(spec, ini=spec["ini"].replace("[cluster]\n",
                                                  "[cluster]\nleader_follow_load_ms = 0\n", 1))
    placement.admin_on_unix_sockets()
    workdir = tempfile.mkdtemp(prefix="ursula-cpu-")
    nodes = spec.get("nodes", 1)
    socks = placement.admin_sockets(workdir, nodes)
    srv = servers.Server(spec, workdir, refserver=None).start(60)
    try:
        prefix = "/v1/stream/cpu-"
        workloads.create_streams(srv.base, prefix, a.streams)
        if a.leaders:
            placement.place_leaders(socks, a.leaders)
        time.sleep(1.0)
        pids = srv.pids()
        before = [scrape(s) for s in socks]
        cpu0 = [cpu_seconds(pid) for pid in pids]
        cs0 = [context_switches(pid) for pid in pids]
        th0 = [thread_cpu(pid) for pid in pids]
        started = time.monotonic()
        out = subprocess.run(
            ["wrk", "-t2", f"-c{a.conns}", f"-d{a.seconds}s", "-s",
             os.path.join(os.path.dirname(os.path.abspath(__file__)), "append.lua"), srv.base,
             "--", str(a.streams), prefix, "-", "256"], capture_output=True, text=True).stdout
        wall = time.monotonic() - started
        cpu1 = [cpu_seconds(pid) for pid in pids]
        cs1 = [context_switches(pid) for pid in pids]
        th1 = [thread_cpu(pid) for pid in pids]
        after = [scrape(s) for s in socks]
    finally:
        srv.stop()
    result = json.loads(out.strip().splitlines()[-1])
    n = result["ok"]
    print(f"{a.server}, {a.streams} streams, {a.conns} connections: {n / wall:,.0f} appends/s, "
          f"p50 {result['p50_us'] / 1000:.1f} ms, p99 {result['p99_us'] / 1000:.1f} ms")
    total = 0.0
    for i in range(nodes):
        user = cpu1[i][0] - cpu0[i][0]
        system = cpu1[i][1] - cpu0[i][1]
        total += user + system
        print(f"node {i + 1}: CPU {100 * (user + system) / wall:.0f} % of a core; per append "
              f"{1e6 * user / n:.0f} us user + {1e6 * system / n:.0f} us system; "
              f"context switches per append {(cs1[i][0] - cs0[i][0]) / n:.2f} voluntary + "
              f"{(cs1[i][1] - cs0[i][1]) / n:.2f} involuntary")
        threads = {name: th1[i][name] - th0[i].get(name, 0.0) for name in th1[i]}
        print("    threads: " + ", ".join(
            f"{name} {1e6 * cpu / n:.0f} us" for name, cpu in
            sorted(threads.items(), key=lambda kv: -kv[1]) if cpu > 0))
        for key in sorted(after[i]):
            delta = after[i][key] - before[i].get(key, 0.0)
            if delta:
                print(f"    {key}: {delta / n:.3f} per append")
    print(f"all nodes: {1e6 * total / n:.0f} us of CPU per append")
    return 0


if __name__ == "__main__":
    sys.exit(main())
