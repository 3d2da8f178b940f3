"""``twistd ursula`` as users run it: foreground, daemonised with pidfile and logfile, SIGTERM,
the embedded default config, and clear one-line errors for bad config values."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from procs import (
    TWISTD,
    free_port,
    port_is_free,
    request,
    start_foreground,
    stop,
    wait_until_serving,
    write_config,
)


def test_foreground_serves_and_exits_cleanly_on_sigterm(tmp_path):
    port = free_port()
    process = start_foreground(write_config(tmp_path, port), tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        status, _, _ = request("PUT", url + "/v1/stream/it", b"hi", {"Content-Type": "text/plain"})
        assert status == 201
        status, _, body = request("GET", url + "/v1/stream/it?offset=-1")
        assert status == 200 and body == b"hi"
    finally:
        code = stop(process)
    # twistd shuts the reactor down cleanly, then exits by the signal it received.
    assert code in (0, -signal.SIGTERM)
    assert b"Server Shut Down." in process.stdout.read()
    assert (tmp_path / "data").is_dir()


def test_daemon_with_pidfile_and_logfile(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port)
    pidfile, logfile = tmp_path / "ursula.pid", tmp_path / "ursula.log"
    result = subprocess.run([TWISTD, "--pidfile", str(pidfile), "--logfile", str(logfile),
                             "ursula", "--config", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url)
        pid = int(pidfile.read_text())
        status, _, _ = request("PUT", url + "/v1/stream/d", None, {"Content-Type": "text/plain"})
        assert status == 201
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pidfile.exists()
        with pytest.raises(OSError):  # nothing listens any more
            request("GET", url + "/__ursula/health", timeout=2)
        assert "ursula serving the Durable Streams API" in logfile.read_text()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("extra, key", [
    ("[http]\nlong_poll_timeout_ms = soon\n", "[http] long_poll_timeout_ms"),
    ("[limits]\nmax_body_bytes = -1\n", "[limits] max_body_bytes"),
    ("[node]\nlisten = nonsense:1\n", "[node] listen"),
    ("[limits]\nmax_bodee = 1\n", "[limits] max_bodee"),
])
def test_bad_config_stops_start_up_with_one_line(tmp_path, extra, key):
    config = tmp_path / "node.ini"
    config.write_text(f"[node]\ndata_dir = {tmp_path / 'data'}\n" + extra.replace(
        "[node]\n", "") if extra.startswith("[node]") else f"[node]\ndata_dir = {tmp_path}\n"
        + extra)
    result = subprocess.run([TWISTD, "-n", "ursula", "--config", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0], result.stderr


def test_missing_config_file_is_one_line(tmp_path):
    result = subprocess.run([TWISTD, "-n", "ursula", "--config", str(tmp_path / "nope.ini")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "nope.ini" in result.stderr


def test_embedded_default_without_config(tmp_path):
    if not port_is_free(4437):
        pytest.skip("port 4437 is taken by another process on this machine")
    process = start_foreground(None, tmp_path)
    try:
        wait_until_serving("http://127.0.0.1:4437", process)
        status, _, _ = request("PUT", "http://127.0.0.1:4437/v1/stream/default", None,
                               {"Content-Type": "text/plain"})
        assert status == 201
    finally:
        assert stop(process) in (0, -signal.SIGTERM)
    assert (tmp_path / "ursula-data").is_dir()


def test_a_fatal_stop_exits_1_with_its_reason(tmp_path):
    """A one-process node whose peer port is taken stops itself: exit code 1 (so that
    systemd's Restart=on-failure restarts it) and the reason on stderr, not a clean 0."""
    import socket

    from procs import free_ports, lone_voter_cluster
    port, peer = free_port(), free_ports(1)
    extra = "cores = 1\n" + lone_voter_cluster(port, peer)
    holder = socket.socket()
    holder.bind(("127.0.0.1", peer))
    holder.listen()
    try:
        result = subprocess.run([TWISTD, "-n", "--pidfile", "", "ursula", "--config",
                                 str(write_config(tmp_path, port, extra))], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "ursula: stopped: cannot listen for peers" in result.stderr, result.stderr[-2000:]
