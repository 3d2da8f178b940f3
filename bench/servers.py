"""Servers under test: what to start, how to tell it is ready, how to stop and watch it.

SERVERS is plain data. To benchmark a new variant (an ursula fsync mode, a cluster), add an
entry; an entry with a "pending" reason is listed in the results as missing and not started.

  name     short id used in results and on the command line (--servers)
  label    text for tables and plots
  role     "ursula" or "reference"
  compare  for ursula entries: the reference names the tables divide it by (ratio rows)
  kind     "ursula" (twistd -n ursula --config node.ini) or "ref" (shared/tools/refserver.sh)
  ini      extra node.ini text for ursula ({node_id} and {peers} are filled in per node)
  nodes    ursula process count (>1: a cluster on loopback; the load goes to node 1)
  ready    a path that must answer 200 on every node before a run (default: any answer to
           HEAD /v1/stream/__bench_probe on node 1)
  env      extra environment for the reference server (DATA_DIR is set by "file": True)
  cores    [node] cores of each ursula node (default 1)
  default  False: only run when named in --servers (not part of "all")
  pending  a reason: the entry is listed as not run
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

CLUSTER_INI = """[cluster]
node_id = {node_id}
secret = ursula-bench-shared-secret-not-for-production
peers =
{peers}
"""

SERVERS = [
    {"name": "ursula", "label": "ursula 1 node, fsync=always", "role": "ursula",
     "kind": "ursula", "ini": "[storage]\nfsync = always\n", "compare": ["ref-file", "ref-mem"]},
    {"name": "ursula-nofsync", "label": "ursula 1 node, fsync=never", "role": "ursula",
     "kind": "ursula", "ini": "[storage]\nfsync = never\n", "compare": ["ref-mem"]},
    {"name": "ursula-cores2", "label": "ursula 1 node, 2 cores, fsync=always", "role": "ursula",
     "kind": "ursula", "cores": 2, "ini": "[storage]\nfsync = always\n",
     "compare": ["ref-file", "ref-mem"]},
    {"name": "ursula-3node", "label": "ursula 3 nodes, fsync=always", "role": "ursula",
     "kind": "ursula", "nodes": 3, "ini": CLUSTER_INI + "[storage]\nfsync = always\n",
     "ready": "/__ursula/ready", "compare": ["ref-file", "ref-mem"]},
    {"name": "ursula-3node-spread", "label": "ursula 3 nodes, fsync=always, leaders spread (not following the load)",
     "role": "ursula", "kind": "ursula", "nodes": 3,
     "ini": CLUSTER_INI + "leader_follow_load_ms = 0\n[storage]\nfsync = always\n",
     "ready": "/__ursula/ready", "compare": ["ref-mem"], "default": False},
    {"name": "ursula-3node-serial", "label": "ursula 3 nodes, fsync=always, no parallel write",
     "role": "ursula", "kind": "ursula", "nodes": 3,
     "ini": CLUSTER_INI + "parallel_write = false\n[storage]\nfsync = always\n",
     "ready": "/__ursula/ready", "compare": ["ref-file"], "default": False},
    {"name": "ursula-flushing", "label": "ursula 1 node, fsync=always, 4 MiB hot cap (flusher busy)",
     "role": "ursula", "kind": "ursula",
     "ini": "[storage]\nfsync = always\nnode_hot_bytes = 4194304\n",
     "compare": ["ref-mem"], "default": False},
    {"name": "ref-mem", "label": "reference in-memory", "role": "reference", "kind": "ref"},
    {"name": "ref-file", "label": "reference file-backed", "role": "reference", "kind": "ref",
     "file": True},
]

# The reference server's own defaults (refserver.sh defaults to 500 ms / webhooks on for the
# conformance suite; a 500 ms long-poll timeout also means an SSE heartbeat every 500 ms).
REF_ENV = {"LONG_POLL_TIMEOUT_MS": "30000", "WEBHOOKS": "0"}

NODE_INI = """[node]
listen = tcp:{port}:interface=127.0.0.1
admin_listen = none
cores = {cores}
data_dir = {data_dir}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twistd_path():
    """The twistd next to the Python running the bench, so a fresh venv works."""
    return os.path.join(os.path.dirname(sys.executable), "twistd")


class Server:
    """A running server under test (one or more processes in their own process groups)."""

    def __init__(self, spec, workdir, refserver):
        self.spec, self.workdir, self.refserver = spec, workdir, refserver
        self.procs, self.port = [], None

    def start(self, timeout):
        os.makedirs(self.workdir, exist_ok=True)
        nodes = self.spec.get("nodes", 1)
        ports = [free_port() for _ in range(nodes)]
        peer_ports = [free_port() for _ in range(nodes)]
        peers = "\n".join(f"    {j + 1} = 127.0.0.1:{pp} http://127.0.0.1:{hp}"
                          for j, (hp, pp) in enumerate(zip(ports, peer_ports, strict=True)))
        self.port, self.ports = ports[0], ports
        for i, port in enumerate(ports):
            node_dir = os.path.join(self.workdir, f"node{i}")
            os.makedirs(node_dir, exist_ok=True)
            env = dict(os.environ)
            if self.spec["kind"] == "ursula":
                ini = os.path.join(node_dir, "node.ini")
                with open(ini, "w") as f:
                    f.write(NODE_INI.format(port=port, data_dir=os.path.join(node_dir, "data"),
                                            cores=self.spec.get("cores", 1)))
                    f.write(self.spec.get("ini", "").format(node_id=i + 1, peers=peers))
                cmd = [twistd_path(), "-n", "ursula", "--config", ini]
            else:
                env.update(REF_ENV, **self.spec.get("env", {}))
                if self.spec.get("file"):
                    env["DATA_DIR"] = os.path.join(node_dir, "data")
                cmd = ["bash", self.refserver, str(port)]
            log = open(os.path.join(node_dir, "server.log"), "wb")
            self.procs.append(subprocess.Popen(
                cmd, cwd=node_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True))
            log.close()
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while True:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"server exited with {p.returncode}: {self.log_tail()}")
            if self.ready():
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s: {self.log_tail()}")
            time.sleep(0.1)

    def ready(self):
        if "ready" not in self.spec:
            return probe(self.port) is not None
        return all(probe(p, "GET", self.spec["ready"]) == 200 for p in self.ports)

    def log_tail(self, n=600):
        try:
            with open(os.path.join(self.workdir, "node0", "server.log"), "rb") as f:
                return f.read()[-n:].decode(errors="replace").strip()
        except OSError as e:
            return str(e)

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def probe(port, method="HEAD", path="/v1/stream/__bench_probe"):
    """The HTTP status of one request, or None while nothing answers."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request(method, path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except (OSError, http.client.HTTPException):
        return None


# --- watching a process tree through /proc -------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")
HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])  # ppid, utime + stime (ticks)


def tree(roots):
    """pid -> (cpu ticks, rss bytes) for the roots and all their descendants."""
    children, info = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid, ticks = _stat(d)
                with open(f"/proc/{d}/statm") as f:
                    rss = int(f.read().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
            info[int(d)] = (ticks, rss)
    out, todo = {}, [r for r in roots if r in info]
    while todo:
        pid = todo.pop()
        out[pid] = info[pid]
        todo.extend(children.get(pid, []))
    return out


def machine_busy():
    """CPU ticks all cores spent busy (not idle or iowait) since boot."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:]]
    return sum(t) - t[3] - t[4]


class Monitor:
    """Samples a server's process tree every 100 ms: peak RSS and CPU time during a phase,
    and the whole machine's busy CPU (all processes, % of one core) to show disturbance."""

    def __init__(self, pids, interval=0.1):
        self.pids, self.interval = pids, interval
        self.peak, self.cpu = 0, {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        t = tree(self.pids)
        self.peak = max(self.peak, sum(rss for _, rss in t.values()))
        for pid, (ticks, _) in t.items():
            self.cpu[pid] = ticks

    def _run(self):
        while not self.stopped.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self.cpu0, self.t0, self.busy0 = dict(self.cpu), time.monotonic(), machine_busy()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        self._sample()
        self.wall = time.monotonic() - self.t0
        ticks = sum(t - self.cpu0.get(pid, 0) for pid, t in self.cpu.items())
        self.cpu_pct = 100.0 * ticks / HZ / self.wall if self.wall else 0.0
        self.machine_pct = 100.0 * (machine_busy() - self.busy0) / HZ / self.wall
        self.peak_rss_mb = self.peak / 2**20
