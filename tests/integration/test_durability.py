"""A single node is a cluster of one: acknowledged appends survive kill -9, restarts and a torn
journal tail."""

from __future__ import annotations

import json
import os
import pathlib
import signal

from procs import TWISTD, free_port, request, stop, wait_until_serving, write_config

from ursula.core.placement import group_of


def _start(directory: pathlib.Path, port: int):
    import subprocess
    return subprocess.Popen([TWISTD, "-n", "--pidfile", "", "ursula", "--config",
                             str(write_config(directory, port))], cwd=directory,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _append_many(url: str, count: int) -> list[bytes]:
    acknowledged = []
    for i in range(count):
        body = b"record-%04d;" % i
        status, _, _ = request("POST", url, body, {"Content-Type": "text/plain",
                                                    "Producer-Id": "p", "Producer-Epoch": "0",
                                                    "Producer-Seq": str(i)})
        assert status == 200
        acknowledged.append(body)
    return acknowledged


def test_acknowledged_appends_survive_kill_9(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stream = url + "/v1/stream/durable"
    process = _start(tmp_path, port)
    try:
        wait_until_serving(url, process)
        assert request("PUT", stream, None, {"Content-Type": "text/plain"})[0] == 201
        acknowledged = _append_many(stream, 200)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = _start(tmp_path, port)
        wait_until_serving(url, process)
        status, headers, body = request("GET", stream + "?offset=-1")
        assert status == 200
        assert body == b"".join(acknowledged)
        # the producer's state survived too: a retry of the last seq is a duplicate
        status, _, _ = request("POST", stream, b"again", {
            "Content-Type": "text/plain", "Producer-Id": "p", "Producer-Epoch": "0",
            "Producer-Seq": "199"})
        assert status == 204
    finally:
        stop(process)


def test_torn_journal_tail_recovers(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stream = url + "/v1/stream/torn"
    process = _start(tmp_path, port)
    try:
        wait_until_serving(url, process)
        request("PUT", stream, None, {"Content-Type": "text/plain"})
        acknowledged = _append_many(stream, 50)
        stop(process)
        wal = tmp_path / "data" / "journal" / "wal"
        if not wal.exists():  # [node] cores > 1: the journal of the core that hosts the group
            group = group_of("_default", "torn", 4)
            hosts = [hosted.parent for hosted in (tmp_path / "data").glob("core-*/hosted.json")
                     if group in json.loads(hosted.read_text())["groups"]]
            assert len(hosts) == 1, hosts
            wal = hosts[0] / "journal" / "wal"
        last = sorted(wal.iterdir())[-1]
        size = last.stat().st_size
        with open(last, "r+b") as handle:
            handle.truncate(size - 7)  # cut the last record in the middle
        process = _start(tmp_path, port)
        wait_until_serving(url, process)
        status, _, body = request("GET", stream + "?offset=-1")
        assert status == 200
        # a prefix of the acknowledged appends, whole records only, nothing invented
        assert b"".join(acknowledged).startswith(body)
        assert body.endswith(b";")
        assert len(body) >= len(b"".join(acknowledged[:-2]))
        status, _, _ = request("POST", stream, b"after;", {"Content-Type": "text/plain"})
        assert status == 204
        assert request("GET", stream + "?offset=-1")[2].endswith(b"after;")
    finally:
        stop(process)


def test_restart_with_other_group_count_is_refused(tmp_path):
    import subprocess
    port = free_port()
    process = _start(tmp_path, port)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
    finally:
        stop(process)
    config = write_config(tmp_path, port, "[cluster]\ngroups = 9\n")
    result = subprocess.run([TWISTD, "-n", "--pidfile", "", "ursula", "--config", str(config)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "[cluster] groups" in result.stderr and "Traceback" not in result.stderr
    assert os.path.exists(tmp_path / "data" / "cluster.json")
