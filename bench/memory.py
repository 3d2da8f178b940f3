"""Memory, restart and cold-tier catch-up of one ursula node as the data grows (issue 10's
targets): a benchmark, never a test.

    python bench/memory.py [--sizes 0.5,1,2] [--config hot64,embedded] [--s3] [--out F.json]

For each configuration and size (GiB) it starts a fresh node (``twistd -n ursula``), appends
that much to one stream in 1 MiB POSTs over 4 connections, and prints:

* peak RSS of the node's process tree while appending, and the fill rate (MB/s);
* after ``kill -9`` and a restart: the time until the node answers again, and its RSS then;
* a catch-up read of the whole stream from offset -1 (nearly all of it in the cold tier):
  MB/s, and the RSS it peaked at.

Configurations: ``hot64`` = ``[storage] node_hot_bytes = 64 MiB`` (a 64 MiB hot cap for the
node); ``embedded`` = no ``[storage]`` section at all (the defaults of ``twistd -n ursula``,
listening on a free port instead of 4437); ``nocold`` = ``[cold] backend = none`` (no cold
tier: everything stays in memory), the fill rate without a flusher to compare with. ``hot64`` and
``embedded`` use the local cold directory
(``<data_dir>/cold``). ``--s3`` adds ``s3``: the same as ``hot64`` with ``[cold] backend = s3``
against a moto server started here (``moto[server]``, from the test extras), for the catch-up
figure from S3.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers  # noqa: E402

MiB = 1 << 20
CHUNK = MiB
CONNS = 4

CONFIGS = {
    "hot64": "[storage]\nnode_hot_bytes = 67108864\n",
    "embedded": "",
    "nocold": "[cold]\nbackend = none\n",
    "s3": ("[storage]\nnode_hot_bytes = 67108864\n[cold]\nbackend = s3\nbucket = ursula-bench\n"
           "endpoint_url = {endpoint}\nregion = us-east-1\n"),
}


def start_node(workdir, port, extra):
    os.makedirs(workdir, exist_ok=True)
    ini = os.path.join(workdir, "node.ini")
    with open(ini, "w") as f:
        f.write(f"[node]\nlisten = tcp:{port}:interface=127.0.0.1\nadmin_listen = none\n"
                f"cores = 1\ndata_dir = {os.path.join(workdir, 'data')}\n")
        f.write(extra)
    log = open(os.path.join(workdir, "server.log"), "ab")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    proc = subprocess.Popen([servers.twistd_path(), "-n", "ursula", "--config", ini],
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    log.close()
    t0 = time.monotonic()
    while servers.probe(port) is None:
        if proc.poll() is not None:
            raise RuntimeError(f"ursula exited: see {workdir}/server.log")
        if time.monotonic() - t0 > 300:
            raise RuntimeError("ursula did not answer within 300 s")
        time.sleep(0.02)
    return proc, time.monotonic() - t0


def rss_mb(proc):
    return sum(rss for _, rss in servers.tree([proc.pid]).values()) / MiB


def request(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def fill(port, path, total):
    """Append ``total`` bytes in 1 MiB POSTs over CONNS connections; returns seconds."""
    payload = b"u" * CHUNK
    count = total // CHUNK
    lock = threading.Lock()
    state = {"next": 0, "error": None}

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if state["next"] >= count or state["error"]:
                    break
                state["next"] += 1
            for _attempt in range(100):
                c.request("POST", path, body=payload,
                          headers={"Content-Type": "application/octet-stream"})
                r = c.getresponse()
                r.read()
                if r.status == 503:  # the hot cap: the cold tier is behind
                    time.sleep(0.05)
                    continue
                if r.status >= 300:
                    state["error"] = f"POST answered {r.status}"
                break
        c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(CONNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if state["error"]:
        raise RuntimeError(state["error"])
    return time.monotonic() - t0


def catch_up(port, path):
    """Read the stream from -1 to its end; returns (bytes, seconds)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    offset, got = "-1", 0
    t0 = time.monotonic()
    while True:
        c.request("GET", f"{path}?offset={offset}")
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"catch-up read answered {r.status}: {data[:200]!r}")
        got += len(data)
        offset = r.getheader("Stream-Next-Offset")
        if r.getheader("Stream-Up-To-Date") == "true":
            break
    c.close()
    return got, time.monotonic() - t0


def peak_during(proc, fn):
    peak = [rss_mb(proc)]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            try:
                peak[0] = max(peak[0], rss_mb(proc))
            except OSError:
                pass
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        done.set()
        t.join()
    return result, max(peak[0], rss_mb(proc))


def start_moto():
    from moto.server import ThreadedMotoServer
    port = servers.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    import boto3
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(
        Bucket="ursula-bench")
    return server, endpoint


def run_case(config, gib, root, moto_endpoint=None):
    workdir = tempfile.mkdtemp(prefix=f"mem-{config}-{gib}-", dir=root)
    port = servers.free_port()
    extra = CONFIGS[config].format(endpoint=moto_endpoint or "")
    proc, _ = start_node(workdir, port, extra)
    path = "/v1/stream/memory-bench"
    status, _ = request(port, "PUT", path, headers={"Content-Type": "application/octet-stream"})
    assert status in (200, 201), status
    total = int(gib * 1024) * MiB
    seconds, fill_peak = peak_during(proc, lambda: fill(port, path, total))
    time.sleep(2)  # let the flusher settle
    settled = rss_mb(proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc, restart_s = start_node(workdir, port, extra)
    time.sleep(1)
    restart_rss = rss_mb(proc)
    (got, read_s), read_peak = peak_during(proc, lambda: catch_up(port, path))
    if got != total:
        raise RuntimeError(f"read back {got} bytes of {total}")
    disk = subprocess.run(["du", "-sm", os.path.join(workdir, "data")], capture_output=True,
                          text=True).stdout.split()[0]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"config": config, "GiB": gib, "fill_MB_s": round(total / seconds / 1e6, 1),
            "peak_rss_MB_filling": round(fill_peak), "rss_MB_settled": round(settled),
            "restart_s": round(restart_s, 2), "rss_MB_after_restart": round(restart_rss),
            "catchup_MB_s": round(total / read_s / 1e6, 1),
            "peak_rss_MB_reading": round(read_peak), "data_dir_MB": int(disk)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="0.5,1,2", help="GiB per case (comma list)")
    p.add_argument("--config", default="hot64,embedded", help="comma list of " +
                   ", ".join(CONFIGS))
    p.add_argument("--s3", action="store_true", help="also the s3 configuration (moto)")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--dir", default=None, help="where the data directories go (default /tmp)")
    a = p.parse_args()
    configs = a.config.split(",") + (["s3"] if a.s3 and "s3" not in a.config else [])
    moto = endpoint = None
    if "s3" in configs:
        moto, endpoint = start_moto()
    rows = []
    cols = ["config", "GiB", "fill_MB_s", "peak_rss_MB_filling", "rss_MB_settled", "restart_s",
            "rss_MB_after_restart", "catchup_MB_s", "peak_rss_MB_reading", "data_dir_MB"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    try:
        for config in configs:
            for size in [float(s) for s in a.sizes.split(",")]:
                row = run_case(config, size, a.dir, endpoint)
                rows.append(row)
                print("| " + " | ".join(str(row[c]) for c in cols) + " |", flush=True)
    finally:
        if moto is not None:
            moto.stop()
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "command": " ".join(sys.argv)}, f, indent=1)


if __name__ == "__main__":
    main()
