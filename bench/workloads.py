"""The four workloads. Each takes a server base URL and returns a dict of figures.

append / producer  wrk + append.lua: 256-byte POSTs over 64 keep-alive connections to N
                   streams, every answer checked for 2xx; appends/s, latency p50/p99, errors.
sse                sse_fanout.mjs (Node): subscribers on one JSON stream, a writer at ~30
                   appends/s, delivery latency p50/p99/max and delivered / expected.
catchup            fill one stream with 1 MiB POSTs, then read it from offset -1 (following
                   Stream-Next-Offset until Stream-Up-To-Date) again and again; MB/s.

"loadgen_cpu" is the load generator's CPU time over the wall time of its run, in % of one
core (this machine has os.cpu_count() cores), so a saturated generator is visible;
"loadgen_wall" is how long it ran.
"""

import http.client
import json
import os
import resource
import shutil
import subprocess
import time
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
OCTET = "application/octet-stream"


class Client:
    """A tiny keep-alive HTTP client for setup requests and the catch-up reader."""

    def __init__(self, base, timeout=60):
        u = urlsplit(base)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body, headers or {})
                return self.conn.getresponse()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise

    def call(self, method, path, body=None, content_type=OCTET, ok=(200, 201, 204)):
        r = self.request(method, path, body, {"Content-Type": content_type})
        data = r.read()
        if r.status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {r.status} {data[:200]!r}")
        return r

    def close(self):
        if self.conn:
            self.conn.close()


def run_tool(cmd, timeout):
    """Run a load generator; return (last stdout line as JSON, its CPU % of one core, wall s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {(p.stderr or p.stdout)[-500:]}")
    return json.loads(lines[-1]), 100.0 * cpu / wall, wall


def need(tool, hint):
    if not shutil.which(tool):
        raise RuntimeError(f"'{tool}' not found on PATH ({hint})")


def create_streams(base, prefix, count):
    """PUT ``{prefix}0`` .. ``{prefix}{count - 1}`` (the streams append.lua writes to)."""
    c = Client(base)
    for i in range(count):
        c.call("PUT", f"{prefix}{i}")
    c.close()


def append(base, tag, streams, duration, conns, payload, producer=False):
    """Appends/s and latency; with producer=True each connection is its own producer."""
    need("wrk", "apt-get install -y wrk")
    prefix = f"/v1/stream/bench-{tag}-"
    create_streams(base, prefix, streams)
    # One wrk thread per connection for producers: wrk's Lua state is per thread, so this is
    # what makes Producer-Seq per connection and in order. Plain appends use one per core.
    threads = conns if producer else min(conns, os.cpu_count() or 1)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s",
           "--timeout", "10s", "-s", os.path.join(HERE, "append.lua"), base,
           "--", str(streams), prefix, f"p{tag}-" if producer else "-", str(payload)]
    out, cpu, wall = run_tool(cmd, timeout=duration + 60)
    secs = out["duration_us"] / 1e6
    return {
        "appends_s": out["ok"] / secs,
        "p50_ms": out["p50_us"] / 1000, "p99_ms": out["p99_us"] / 1000,
        "errors": out["non2xx"] + out["socket_errors"],
        "ok": out["ok"], "error_codes": out["codes"].strip(), "loadgen_cpu": cpu,
        "loadgen_wall": wall,
    }


def sse(base, tag, subscribers, rate, duration, grace=2.0):
    """Fan-out delivery latency from one writer to many SSE subscribers."""
    need("node", "Node.js 18+")
    path = f"/v1/stream/bench-{tag}"
    c = Client(base)
    c.call("PUT", path, content_type="application/json")
    c.close()
    cmd = ["node", os.path.join(HERE, "sse_fanout.mjs"), base + path,
           str(subscribers), str(rate), str(duration), str(grace)]
    out, cpu, wall = run_tool(cmd, timeout=duration + grace + 120)
    out["delivered_ratio"] = out["delivered"] / out["expected"] if out["expected"] else 0.0
    out["loadgen_cpu"], out["loadgen_wall"] = cpu, wall
    out["ok"] = out["delivered"]
    return out


def catchup(base, tag, size_mb, duration):
    """Fill a stream with size_mb MiB, then time full reads from offset -1."""
    path = f"/v1/stream/bench-{tag}"
    c = Client(base)
    c.call("PUT", path)
    chunk = os.urandom(1 << 20)
    t0 = time.monotonic()
    for _ in range(size_mb):
        c.call("POST", path, chunk)
    fill_s = time.monotonic() - t0
    buf = memoryview(bytearray(1 << 20))
    reads, total, requests = 0, 0, 0
    t0, cpu0 = time.monotonic(), time.thread_time()
    while reads == 0 or time.monotonic() - t0 < duration:
        offset, got = "-1", 0
        while True:
            r = c.request("GET", f"{path}?offset={offset}")
            requests += 1
            if r.status != 200:
                raise RuntimeError(f"GET offset={offset}: HTTP {r.status} {r.read()[:200]!r}")
            while n := r.readinto(buf):
                got += n
            nxt = r.getheader("Stream-Next-Offset")
            if r.getheader("Stream-Up-To-Date") == "true":
                break
            if not nxt or nxt == offset:
                raise RuntimeError(f"catch-up read made no progress at offset {offset}")
            offset = nxt
        if got != size_mb << 20:
            raise RuntimeError(f"read {got} bytes, expected {size_mb << 20}")
        reads, total = reads + 1, total + got
    wall = time.monotonic() - t0
    cpu = time.thread_time() - cpu0
    c.close()
    return {
        "read_mb_s": total / 2**20 / wall, "fill_mb_s": size_mb / fill_s,
        "reads": reads, "get_requests": requests, "ok": reads,
        "loadgen_cpu": 100.0 * cpu / wall, "loadgen_wall": wall,
    }
