"""A real 3-node cluster whose cold tier is S3 (moto's server, started here on a free loopback
port): a hot cap of a few KiB per group, so the leaders upload chunks all the time.

* the leader of busy groups is killed with SIGKILL while it uploads: every acknowledged append
  is read back, exactly once and in order, from every node (the restarted one too, which
  catches up by snapshot and reads the old bytes from S3);
* S3 goes away under load (the moto server stops) and comes back: appends go on until the hot
  cap, then 503 with Retry-After; once S3 answers again the writers (retrying with the same
  producer seq) resume, and nothing acknowledged is lost or doubled.

Each test prints what it measured."""

from __future__ import annotations

import os
import pathlib
import re
import socket
import sys
import threading
import time

import pytest
from cluster_procs import Cluster
from test_cluster import SMALL_LOG, Writer, _check_exactly_once, _read_all

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "integration"))
from procs import request  # noqa: E402

from ursula.core.placement import group_of  # noqa: E402

GROUPS = 4
BUCKET = "ursula-cluster"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Moto:
    """moto's S3 server in this process; stop() and start() again keep its objects (moto's
    backends live in the process, not in the server thread)."""

    def __init__(self):
        self.server_mod = pytest.importorskip("moto.server")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self):
        self.server = self.server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                                         verbose=False)
        self.server.start()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def objects(self) -> int:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return sum(len(page.get("Contents", [])) for page in pages)


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory):
    moto = Moto()
    moto.start()
    moto.client().create_bucket(Bucket=BUCKET)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    extra = ("hot_bytes = 4096\nhot_max_bytes = 65536\n"
             f"[cold]\nbackend = s3\nbucket = {BUCKET}\nprefix = t1\n"
             f"endpoint_url = {moto.url}\nregion = us-east-1\nchunk_bytes = 4096\n")
    cluster = Cluster(tmp_path_factory.mktemp("s3cluster"), size=3, groups=GROUPS,
                      fsync="always", extra=extra, cluster_extra=SMALL_LOG)
    cluster.start()
    try:
        cluster.wait_ready()
        yield cluster, moto
    finally:
        cluster.stop()
        moto.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _metric(node, name: str) -> float:
    try:
        text = node.metrics()
    except OSError:
        return 0.0
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _uploads(cluster) -> float:
    return sum(_metric(n, "ursula_cold_uploads_total") for n in cluster.nodes if n.alive)


class Writers:
    """Writer threads that are always stopped, whatever the test does."""

    def __init__(self, names, nodes):
        self.stop = threading.Event()
        self.all = [Writer(name, nodes, self.stop) for name in names]

    def __enter__(self):
        for writer in self.all:
            writer.start()
        return self

    def halt(self):
        self.stop.set()
        for writer in self.all:
            writer.join(10)

    def __exit__(self, *exc):
        self.halt()


def _fill_names() -> list[str]:
    """One stream name per group."""
    names, seen = [], set()
    for i in range(1000):
        name = f"fill-{i}"
        group = group_of("_default", name, GROUPS)
        if group not in seen:
            seen.add(group)
            names.append(name)
    return names


def _create(cluster, names):
    for name in names:
        assert request("PUT", f"{cluster.nodes[0].url}/v1/stream/{name}", None,
                       {"Content-Type": "text/plain"})[0] in (200, 201)
    assert {group_of("_default", n, GROUPS) for n in names} == set(range(GROUPS))
    return names


def test_leader_killed_during_uploads_loses_nothing(s3_cluster):
    cluster, moto = s3_cluster
    names = [f"cold-{i}" for i in range(12)]
    _create(cluster, names)
    with Writers(names, lambda: [n for n in cluster.nodes if n.alive]) as running:
        writers = running.all
        deadline = time.monotonic() + 30
        while _uploads(cluster) < 20:
            assert time.monotonic() < deadline, "no uploads to S3 within 30 s"
            time.sleep(0.2)
        victim = cluster.leader_of(group_of("_default", names[0], GROUPS))
        assert victim is not None
        uploads_before = _uploads(cluster)
        victim.kill()  # while its groups upload: the hot cap is a few KiB
        time.sleep(4.0)
        running.halt()
    survivors = [n for n in cluster.nodes if n is not victim]
    total = sum(len(w.acked) for w in writers)
    print(f"killed node {victim.node_id} after {uploads_before:.0f} uploads; {total} "
          f"acknowledged appends; {moto.objects()} objects in S3")
    for node in survivors:
        for writer in writers:
            _check_exactly_once(_read_all(node, writer.name_), writer.name_, len(writer.acked))
    assert sum(_metric(n, "ursula_cold_bytes") for n in survivors) > 0
    victim.start()
    cluster.wait_ready([victim])
    started = time.monotonic()
    for writer in writers:
        expected = _read_all(survivors[0], writer.name_)
        while _read_all(victim, writer.name_) != expected:
            assert time.monotonic() - started < 30, "the restarted node did not catch up"
            time.sleep(0.2)
    print(f"restarted node {victim.node_id} serves every stream (cold bytes from S3) after "
          f"{time.monotonic() - started:.2f} s")
    assert "Traceback" not in victim.log.read_text()


def test_s3_outage_under_load_then_recovery(s3_cluster):
    cluster, moto = s3_cluster
    names = [f"outage-{i}" for i in range(8)]
    _create(cluster, names)
    fillers = _fill_names()
    _create(cluster, fillers)
    filling = threading.Event()

    def fill(name):  # 4 KiB appends to one stream of each group: its hot bytes reach the cap
        blob = b"f" * 4096
        while not filling.is_set():
            try:
                request("POST", f"{cluster.nodes[0].url}/v1/stream/{name}", blob,
                        {"Content-Type": "text/plain"}, timeout=5)
            except OSError:
                pass
            time.sleep(0.01)
    threads = [threading.Thread(target=fill, args=(n,), daemon=True) for n in fillers]
    with Writers(names, lambda: list(cluster.nodes)) as running:
        writers = running.all
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        errors_before = sum(_metric(n, "ursula_cold_upload_errors_total")
                            for n in cluster.nodes)
        moto.stop()
        down_at = time.monotonic()
        time.sleep(5.0)
        acked_while_down = sum(len([a for a in w.acked if a[1] > down_at]) for w in writers)
        refused = sum(w.failures for w in writers)
        errors = sum(_metric(n, "ursula_cold_upload_errors_total") for n in cluster.nodes)
        # a 503 answer says why: the group is at its hot cap
        status, headers, body = request("POST", f"{cluster.nodes[0].url}/v1/stream/{names[0]}",
                                        b"probe;", {"Content-Type": "text/plain"}, timeout=5)
        moto.start()
        up_at = time.monotonic()
        time.sleep(8.0)
        running.halt()
        filling.set()
    acked_after = sum(len([a for a in w.acked if a[1] > up_at]) for w in writers)
    print(f"S3 down 5 s: {acked_while_down} appends acknowledged meanwhile, {refused} refused "
          f"(retried), {errors - errors_before:.0f} upload errors; probe answered {status}; "
          f"{acked_after} appends acknowledged after S3 came back")
    assert errors > errors_before, "the outage was not noticed"
    assert refused > 0, "the hot cap was never reached while S3 was down"
    assert status in (204, 503)
    if status == 503:
        assert b"hot" in body and "retry-after" in {k.lower() for k in headers}
    assert acked_after > 0, "appends did not resume after S3 came back"
    for writer in writers:
        body = _read_all(cluster.nodes[1], writer.name_)
        if writer.name_ == names[0] and status == 204:
            body = body.replace(b"probe;", b"")
        _check_exactly_once(body, writer.name_, len(writer.acked))
