"""Profile ursula's append path under load with py-spy.

    python bench/profile.py [--server ursula] [--seconds 20] [--streams 100] [--producer]
                            [--out /tmp/ursula-append] [--nodes 0,1,2] [--leaders 1,2,3,1]

Starts ursula (the --server entry of servers.py; the first node of a cluster is sampled), drives it with wrk and append.lua
(64 connections, 256-byte appends), samples it with `py-spy record --format raw` (collapsed
stacks per thread, no line numbers, idle samples dropped) and prints each thread's share of
samples, then for the reactor thread and for the other threads the functions with the
largest share of samples, by self time and inclusive time, and the self time per package.
Writes <out>.txt (collapsed stacks, for flamegraph.pl or speedscope) and <out>.svg.
Needs py-spy (pip install py-spy) and root or ptrace rights.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import placement  # noqa: E402
import servers  # noqa: E402
import workloads  # noqa: E402


def short(frame):
    """'render (/x/site-packages/twisted/web/server.py)' -> 'render (twisted/web/server.py)'."""
    return re.sub(r"\(.*?(site-packages|lib/python3\.\d+|/work/main)/", "(", frame)


def package(frame):
    m = re.search(r"\((\w+)[/.]", short(frame))
    return m.group(1) if m else "?"


def summarize(path, top):
    """Print sample shares per thread, then the top functions of the reactor thread and of
    all other threads (py-spy --threads puts a "thread (id)" frame at the root)."""
    stacks = []
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit():
            continue  # a frame name py-spy could not read (it may even hold a newline)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if frames:
            thread = frames[0] if frames[0].startswith("thread ") else "thread (?)"
            stacks.append((thread, [short(f) for f in frames if not f.startswith("thread ")],
                           int(n)))
    total = sum(n for _, _, n in stacks)
    per_thread = collections.Counter()
    reactor = set()
    for thread, frames, n in stacks:
        per_thread[thread] += n
        if any(f.startswith("ReactorBase.run ") for f in frames):
            reactor.add(thread)
    print(f"{total} samples (idle samples dropped)")
    for thread, n in per_thread.most_common():
        kind = "reactor" if thread in reactor else "other"
        print(f"  {100 * n / total:5.1f}%  {thread} {kind}")
    for title, keep in (("reactor thread", lambda t: t in reactor),
                        ("other threads", lambda t: t not in reactor)):
        self_, incl, pkgs = collections.Counter(), collections.Counter(), collections.Counter()
        for thread, frames, n in stacks:
            if keep(thread) and frames:
                self_[frames[-1]] += n
                pkgs[package(frames[-1])] += n
                for f in set(frames):
                    incl[f] += n
        sub = sum(pkgs.values())
        if not sub:
            continue
        print(f"\n== {title}: {100 * sub / total:.1f}% of samples; shares below are of all "
              "samples ==")
        for name, counter in (("self", self_), ("inclusive", incl), ("self by package", pkgs)):
            shown = [(k, n) for k, n in counter.most_common()
                     if name != "inclusive" or n < 0.9 * sub][:top]
            print(f"top {name}" + (" (frames in 90%+ of the thread's samples left out)"
                                   if name == "inclusive" else "") + ":")
            for k, n in shown:
                print(f"  {100 * n / total:5.1f}%  {k}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="ursula", help="an ursula entry of servers.SERVERS")
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--producer", action="store_true", help="send producer headers")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default="/tmp/ursula-append")
    p.add_argument("--nodes", default="0",
                   help="which nodes of a cluster to sample, a comma list of indexes (0 = the "
                        "one wrk drives), sampled at the same time; <out>.nodeK.* for K > 0")
    p.add_argument("--leaders", default="",
                   help="comma list: the node id that leads group 0, 1, ... (bench/placement.py)")
    a = p.parse_args()
    nodes = [int(n) for n in a.nodes.split(",")]
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    spec = next(s for s in servers.SERVERS if s["name"] == a.server)
    if a.leaders:
        placement.admin_on_unix_sockets()
    workdir = tempfile.mkdtemp(prefix="ursula-profile-")
    srv = servers.Server(spec, workdir, refserver=None)
    srv.start(60)
    try:
        prefix = "/v1/stream/profile-"
        workloads.create_streams(srv.base, prefix, a.streams)
        if a.leaders:
            placement.place_leaders(placement.admin_sockets(workdir, spec.get("nodes", 1)),
                                    a.leaders)
        threads = a.conns if a.producer else min(a.conns, os.cpu_count() or 1)
        load = subprocess.Popen(
            ["wrk", f"-t{threads}", f"-c{a.conns}", f"-d{a.seconds + 4}s", "-s",
             os.path.join(os.path.dirname(os.path.abspath(__file__)), "append.lua"),
             srv.base, "--", str(a.streams), prefix, "prof-" if a.producer else "-", "256"],
            stdout=subprocess.PIPE, text=True)
        for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
            spies = [subprocess.Popen(
                [spy, "record", "--pid", str(srv.pids()[n]), "--duration", str(a.seconds // 2),
                 "--rate", str(a.rate), "--nonblocking", "--nolineno", "--threads",
                 "--format", fmt, "-o", f"{out_path(a.out, n)}.{ext}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in nodes]
            for s in spies:
                if s.wait():
                    raise SystemExit(f"py-spy failed ({s.args})")
        print("wrk:", load.communicate()[0].strip().splitlines()[-1])
    finally:
        srv.stop()
    for n in nodes:
        print(f"\n===== node {n} =====")
        summarize(f"{out_path(a.out, n)}.txt", a.top)


def out_path(out, node):
    return out if node == 0 else f"{out}.node{node}"


if __name__ == "__main__":
    main()
