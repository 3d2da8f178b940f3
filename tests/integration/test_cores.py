"""A node with ``[node] cores = 2``: the supervisor starts two core processes (named in ``ps``),
requests through either core work for streams of every group, kill -9 of one core: the
supervisor restarts it and nothing acknowledged is lost (a producer keeps writing through the
other core meanwhile), and SIGTERM drains both cores."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time

import pytest
from procs import TWISTD, free_port, request, stop, write_config

from ursula.core.placement import group_of

GROUPS = 4
pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")


def _start(directory, port):
    config = write_config(directory, port, f"cores = 2\n\n[cluster]\ngroups = {GROUPS}\n")
    admin = int(config.read_text().split("admin_listen = tcp:")[1].split(":")[0])
    process = subprocess.Popen([TWISTD, "-n", "--pidfile", "", "ursula", "--config",
                                str(config)], cwd=directory, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    return process, admin


def _ready(admin: int, process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the supervisor exited"
        try:
            if request("GET", f"http://127.0.0.1:{admin}/__ursula/ready", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the node did not become ready")


def _children(pid: int) -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                out[int(entry)] = handle.read().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cores(pid: int, timeout: float = 10.0) -> dict[str, int]:
    """core title -> pid of the supervisor's children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {title: p for p, title in _children(pid).items() if "core" in title}
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise AssertionError(f"expected 2 core processes, got {_children(pid)}")


def _names() -> list[str]:
    """Three streams of each group (so both cores own some)."""
    names, i = [], 0
    while len(names) < 3 * GROUPS:
        name = f"st{i}"
        if sum(group_of("_default", n, GROUPS) == group_of("_default", name, GROUPS)
               for n in names) < 3:
            names.append(name)
        i += 1
    return names


def _keepalive_requests(port: int, count: int) -> list[http.client.HTTPConnection]:
    """Several connections (SO_REUSEPORT spreads them over the cores)."""
    return [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)]


def _call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def test_two_cores_serve_restart_and_drain(tmp_path):
    port = free_port()
    process, admin = _start(tmp_path, port)
    try:
        _ready(admin, process)
        cores = _cores(process.pid)
        assert sorted(cores) == ["ursula node 1 core 0/2", "ursula node 1 core 1/2"]
        with open(f"/proc/{process.pid}/cmdline", "rb") as handle:
            assert b"supervisor" in handle.read()

        # every stream, through many connections (so through both cores)
        conns = _keepalive_requests(port, 8)
        names = _names()
        acknowledged = {name: b"" for name in names}
        for i, name in enumerate(names):
            conn = conns[i % len(conns)]
            assert _call(conn, "PUT", f"/v1/stream/{name}", None,
                         {"Content-Type": "text/plain"})[0] == 201
            for j in range(len(conns)):
                body = b"%s-%d;" % (name.encode(), j)
                assert _call(conns[j], "POST", f"/v1/stream/{name}", body,
                             {"Content-Type": "text/plain"})[0] in (200, 204)
                acknowledged[name] += body
        for j, conn in enumerate(conns):
            for name in names:
                status, body = _call(conn, "GET", f"/v1/stream/{name}?offset=-1")
                assert (status, body) == (200, acknowledged[name]), (j, name)
        groups = json.loads(request("GET", f"http://127.0.0.1:{admin}/__ursula/groups")[2])
        assert sorted((g["group"], g["core"]) for g in groups["groups"]) == \
            [(g, g % 2) for g in range(GROUPS)]
        metrics = request("GET", f"http://127.0.0.1:{admin}/__ursula/metrics")[2].decode()
        assert 'ursula_streams{core="0"}' in metrics and 'ursula_streams{core="1"}' in metrics

        # kill -9 of core 1, while a producer keeps writing (retrying a 503 with the same seq)
        victim = cores["ursula node 1 core 1/2"]
        writer = next(n for n in names if group_of("_default", n, GROUPS) % 2 == 0)
        produced = b""
        os.kill(victim, signal.SIGKILL)
        seq = 0
        deadline = time.monotonic() + 20
        for conn in conns:
            conn.close()
        while seq < 40 and time.monotonic() < deadline:
            body = b"p%d;" % seq
            try:
                status, _, _ = request("POST", f"http://127.0.0.1:{port}/v1/stream/{writer}",
                                       body, {"Content-Type": "text/plain", "Producer-Id": "w",
                                              "Producer-Epoch": "0",
                                              "Producer-Seq": str(seq)}, timeout=10)
            except OSError:
                status = None  # the connection went to the dying core: retry
            if status in (200, 204):
                produced += body
                seq += 1
            else:
                assert status in (None, 503), status
                time.sleep(0.05)
        assert seq == 40, "the producer did not keep going"
        acknowledged[writer] += produced
        _ready(admin, process)
        restarted = _cores(process.pid)
        assert restarted["ursula node 1 core 1/2"] != victim
        assert restarted["ursula node 1 core 0/2"] == cores["ursula node 1 core 0/2"]
        for name in names:
            status, _, body = request("GET", f"http://127.0.0.1:{port}/v1/stream/{name}"
                                             f"?offset=-1")
            assert (status, body) == (200, acknowledged[name]), name
        metrics = request("GET", f"http://127.0.0.1:{admin}/__ursula/metrics")[2].decode()
        assert 'ursula_core_restarts_total{core="1"} 1.0' in metrics

        # SIGTERM drains both cores and the supervisor exits cleanly
        pids = list(restarted.values())
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) in (0, -signal.SIGTERM)  # twistd re-raises SIGTERM
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        output = process.stdout.read().decode(errors="replace")
        assert "Traceback" not in output, output[-3000:]
        assert "core 0 stopped" in output and "core 1 stopped" in output
    finally:
        stop(process)


def test_more_cores_than_groups_is_a_config_error(tmp_path):
    config = write_config(tmp_path, free_port(), "cores = 8\n\n[cluster]\ngroups = 4\n")
    result = subprocess.run([TWISTD, "-n", "--pidfile", "", "ursula", "--config", str(config)],
                            cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode != 0
    assert b"[node] cores" in result.stderr and b"Traceback" not in result.stderr


def test_a_core_that_cannot_bind_its_peer_port_exits_1_and_is_restarted(tmp_path):
    """Core 1's peer port (peer port + 1) is taken: the core stops with exit code 1 and a
    one-line reason (not a clean 0), the supervisor restarts it with back-off, and once the
    port is free the node becomes ready."""
    import socket
    import threading

    from procs import free_ports, lone_voter_cluster
    port, peer = free_port(), free_ports(2)
    extra = "cores = 2\n" + lone_voter_cluster(port, peer) + f"groups = {GROUPS}\n"
    config = write_config(tmp_path, port, extra)
    admin = int(config.read_text().split("admin_listen = tcp:")[1].split(":")[0])
    holder = socket.socket()
    holder.bind(("127.0.0.1", peer + 1))
    holder.listen()
    process = subprocess.Popen([TWISTD, "-n", "--pidfile", "", "ursula", "--config",
                                str(config)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    lines: list[str] = []
    seen = threading.Event()

    def read():
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if "core 1 exited" in line:
                seen.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(30), "".join(lines)[-3000:]
        exited = next(line for line in lines if "core 1 exited" in line)
        assert "exit code 1" in exited, exited
        assert any("ursula core 1: stopped: cannot listen for peers" in line
                   for line in lines), "".join(lines)[-3000:]
        holder.close()
        _ready(admin, process, timeout=40)
        assert request("PUT", f"http://127.0.0.1:{port}/v1/stream/back", None,
                       {"Content-Type": "text/plain"})[0] == 201
    finally:
        holder.close()
        stop(process)
