"""Profile ursula's append path under load with py-spy.

    python bench/profile.py [--seconds 20] [--streams 100] [--producer] [--out /tmp/ursula-append]

Starts ursula (the "ursula" entry of servers.py), drives it with wrk and append.lua
(64 connections, 256-byte appends), samples it with `py-spy record --format raw` (collapsed
stacks, no line numbers, idle samples dropped) and prints the functions with the largest
share of samples, by self time and inclusive time, and the self time per package.
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

import servers  # noqa: E402
import workloads  # noqa: E402


def short(frame):
    """'render (/x/site-packages/twisted/web/server.py)' -> 'render (twisted/web/server.py)'."""
    return re.sub(r"\(.*?(site-packages|lib/python3\.\d+|/work/main)/", "(", frame)


def package(frame):
    m = re.search(r"\((\w+)[/.]", short(frame))
    return m.group(1) if m else "?"


def summarize(path, top):
    self_, incl, pkgs, total = (collections.Counter(), collections.Counter(),
                                collections.Counter(), 0)
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        frames = [short(f) for f in stack.split(";") if not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        n = int(n)
        total += n
        self_[frames[-1]] += n
        pkgs[package(frames[-1])] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples")
    for title, counter in (("self", self_), ("inclusive", incl), ("self by package", pkgs)):
        print(f"\ntop {title}" + (" (below 90%: the reactor loop above it is left out)"
                                    if title == "inclusive" else "") + ":")
        shown = [(k, n) for k, n in counter.most_common()
                 if title != "inclusive" or n < 0.9 * total][:top]
        for name, n in shown:
            print(f"  {100 * n / total:5.1f}%  {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--producer", action="store_true", help="send producer headers")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default="/tmp/ursula-append")
    a = p.parse_args()
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    spec = next(s for s in servers.SERVERS if s["name"] == "ursula")
    srv = servers.Server(spec, tempfile.mkdtemp(prefix="ursula-profile-"), refserver=None)
    srv.start(60)
    try:
        prefix = "/v1/stream/profile-"
        c = workloads.Client(srv.base)
        for i in range(a.streams):
            c.call("PUT", f"{prefix}{i}")
        c.close()
        threads = a.conns if a.producer else min(a.conns, os.cpu_count() or 1)
        load = subprocess.Popen(
            ["wrk", f"-t{threads}", f"-c{a.conns}", f"-d{a.seconds + 4}s", "-s",
             os.path.join(os.path.dirname(os.path.abspath(__file__)), "append.lua"),
             srv.base, "--", str(a.streams), prefix, "prof-" if a.producer else "-", "256"],
            stdout=subprocess.PIPE, text=True)
        for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
            subprocess.run([spy, "record", "--pid", str(srv.pids()[0]), "--duration",
                            str(a.seconds // 2), "--rate", str(a.rate), "--nonblocking",
                            "--nolineno", "--format", fmt, "-o", f"{a.out}.{ext}"],
                           check=True, capture_output=True)
        print("wrk:", load.communicate()[0].strip().splitlines()[-1])
    finally:
        srv.stop()
    summarize(f"{a.out}.txt", a.top)


if __name__ == "__main__":
    main()
