"""Disk and restart bounded by bytes, not by the data: a node appends far more than its hot
bytes to one stream while its other groups stay idle; the busy group's snapshots compact its
log, and the idle groups that kept the oldest journal segment alive are snapshotted too, so
the journal keeps only a few segments and a restart replays only them."""

from __future__ import annotations

import pathlib
import signal

from procs import free_port, request, start_foreground, stop, wait_until_serving, write_config

SEGMENT = 64 * 1024
EXTRA = (
    "[cluster]\ngroups = 4\nsnapshot_log_bytes = 131072\nlog_keep_bytes = 16384\n"
    f"[storage]\nsegment_bytes = {SEGMENT}\nhot_bytes = 65536\n"
    "[cold]\nchunk_bytes = 32768\n")


def _start(directory: pathlib.Path, port: int):
    # cores = 1: the journal under data/journal (extra lands in [node] first)
    return start_foreground(write_config(directory, port, "cores = 1\n" + EXTRA), directory)


def test_journal_segments_are_released_while_other_groups_idle(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stream = url + "/v1/stream/big"
    process = _start(tmp_path, port)
    try:
        wait_until_serving(url, process)
        assert request("PUT", stream, None, {"Content-Type": "application/octet-stream"})[0] \
            == 201
        blob = b"b" * 16384
        total = 0
        for _ in range(256):  # 4 MiB: 64 segments' worth
            status, _, _ = request("POST", stream, blob,
                                   {"Content-Type": "application/octet-stream"}, timeout=10)
            assert status == 204, status
            total += len(blob)
        wal = tmp_path / "data" / "journal" / "wal"
        segments = sorted(wal.iterdir())
        journal_bytes = sum(p.stat().st_size for p in segments)
        print(f"{total >> 10} KiB appended: {len(segments)} journal segments, "
              f"{journal_bytes >> 10} KiB of journal")
        assert journal_bytes < total // 4, "the journal grows with the data"
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = _start(tmp_path, port)
        wait_until_serving(url, process)
        status, headers, body = request("GET", stream + "?offset=-1", timeout=10)
        got = bytearray(body)
        while headers.get("Stream-Up-To-Date") != "true":
            status, headers, body = request(
                "GET", f"{stream}?offset={headers['Stream-Next-Offset']}", timeout=10)
            got += body
        assert status == 200 and bytes(got) == blob * 256
    finally:
        stop(process)
