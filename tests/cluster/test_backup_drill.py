"""The total-loss drill (docs/operations.md, "Total loss and restore"): a 3-node cluster whose
cold tier is S3 (moto's server), producers writing with producer headers, a backup into the
cold store (``ursula-admin backup create cold:NAME``) while they write, then every node killed
and its data directory deleted. A new cluster is restored from the backup (``backup verify``,
then ``backup restore`` on every node before it starts): every append acknowledged before the
backup started reads back exactly once, in order, and the producers resume with their epoch
and sequence numbers without a duplicate.

``URSULA_DRILL_SECONDS`` (default 3) sets how long the producers write before and after the
backup starts; a longer run by hand: ``URSULA_DRILL_SECONDS=30 pytest -s tests/cluster/...``."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import pytest
from cluster_procs import Cluster
from test_cluster import SMALL_LOG, Writer, _check_exactly_once, _read_all
from test_cluster_s3 import Moto

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "integration"))
from procs import request  # noqa: E402

ADMIN = str(pathlib.Path(sys.executable).parent / "ursula-admin")
BUCKET = "ursula-drill"
GROUPS = 4
SECONDS = float(os.environ.get("URSULA_DRILL_SECONDS", "3"))


def admin(*args, check=True):
    result = subprocess.run([ADMIN, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def drill(tmp_path):
    moto = Moto()
    moto.start()
    moto.client().create_bucket(Bucket=BUCKET)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    extra = ("hot_bytes = 1024\nhot_max_bytes = 65536\n"
             f"[cold]\nbackend = s3\nbucket = {BUCKET}\nprefix = drill/\n"
             f"endpoint_url = {moto.url}\nregion = us-east-1\nchunk_bytes = 2048\n")
    cluster = Cluster(tmp_path, size=3, groups=GROUPS, fsync="always", extra=extra,
                      cluster_extra=SMALL_LOG)
    try:
        yield cluster, moto
    finally:
        cluster.stop()
        moto.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cold_bytes(cluster) -> float:
    import re
    total = 0.0
    for node in cluster.nodes:
        text = node.metrics()
        total += sum(float(v) for v in re.findall(r"^ursula_cold_bytes(?:\{[^}]*\})? (\S+)$",
                                                  text, re.M))
    return total


def _resume(cluster, name: str, next_seq: int, count: int) -> int:
    """Go on writing like the producer would: from its next seq; a 409 that names the seq the
    server expects (appends acknowledged after the backup are not in it) restarts there."""
    seq, written = next_seq, 0
    url = f"{cluster.nodes[written % 3].url}/v1/stream/{name}"
    while written < count:
        status, headers, body = request(
            "POST", url, f"{name}:{seq};".encode(),
            {"Content-Type": "text/plain", "Producer-Id": name, "Producer-Epoch": "0",
             "Producer-Seq": str(seq)}, timeout=10)
        if status == 409 and headers.get("Producer-Expected-Seq"):
            expected = int(headers["Producer-Expected-Seq"])
            assert expected <= seq, (name, expected, seq)
            seq = expected
            continue
        assert status in (200, 204), (name, status, body)
        seq += 1
        written += 1
    return seq


def test_total_loss_then_restore_from_the_backup(drill):
    cluster, moto = drill
    cluster.start()
    cluster.wait_ready()
    names = [f"drill-{i}" for i in range(8)]
    for name in names:
        assert request("PUT", f"{cluster.nodes[0].url}/v1/stream/{name}", None,
                       {"Content-Type": "text/plain"})[0] in (200, 201)
    stop = threading.Event()
    writers = [Writer(name, lambda: [n for n in cluster.nodes if n.alive], stop)
               for name in names]
    for writer in writers:
        writer.start()
    try:
        deadline = time.monotonic() + 30
        while _cold_bytes(cluster) == 0:  # 1 KiB hot per group: the streams go to S3
            assert time.monotonic() < deadline, "nothing reached S3 within 30 s"
            time.sleep(0.2)
        time.sleep(SECONDS)
        config = str(cluster.nodes[0].directory / "node.ini")
        urls = ",".join(n.admin_url for n in cluster.nodes)
        backup_started = time.monotonic()
        created = admin("--admin", urls, "--config", config, "backup", "create", "cold:drill")
        backup_done = time.monotonic()
        time.sleep(min(SECONDS, 2.0))  # appends after the backup: these may be lost
    finally:
        stop.set()
        for writer in writers:
            writer.join(10)
    before = {w.name_: sum(1 for _, _, acked in w.acked if acked < backup_started)
              for w in writers}
    summary = created.stdout.strip().splitlines()[-1]
    print(summary)
    assert " 0 cold chunks" not in summary
    # total loss: every node dies and its disk is gone
    for node in cluster.nodes:
        node.kill()
        shutil.rmtree(node.directory / "data")
    verified = admin("--config", config, "backup", "verify", "cold:drill")
    print(verified.stdout.strip())
    for node in cluster.nodes:
        admin("--config", str(node.directory / "node.ini"), "backup", "restore", "cold:drill",
              "--no-chunks")
    cluster.start()
    cluster.wait_ready()
    restored = {}
    for writer in writers:
        body = _read_all(cluster.nodes[1], writer.name_)
        # exactly once, in order, and holding every append acknowledged before the backup
        _check_exactly_once(body, writer.name_, before[writer.name_])
        restored[writer.name_] = body.count(b";")
        assert _read_all(cluster.nodes[2], writer.name_) == body
    acked = sum(len(w.acked) for w in writers)
    print(f"{sum(before.values())} appends acknowledged before the backup started "
          f"(it took {backup_done - backup_started:.2f} s), {acked} in all; the restored "
          f"cluster holds {sum(restored.values())}")
    # producers resume with their epoch and seq: nothing doubled, nothing skipped
    for writer in writers:
        name = writer.name_
        last = _resume(cluster, name, len(writer.acked), 5)
        duplicate = request("POST", f"{cluster.nodes[0].url}/v1/stream/{name}",
                            f"{name}:0;".encode(),
                            {"Content-Type": "text/plain", "Producer-Id": name,
                             "Producer-Epoch": "0", "Producer-Seq": "0"})
        assert duplicate[0] == 204  # a retry of an old seq is answered, not stored
        body = _read_all(cluster.nodes[0], name)
        _check_exactly_once(body, name, last)
        assert body.count(b";") == last
    for node in cluster.nodes:
        assert "Traceback" not in node.log.read_text()
