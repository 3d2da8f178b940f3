"""Starting and stopping real ``twistd ursula`` processes on loopback for integration tests."""

from __future__ import annotations

import os
import pathlib
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

TWISTD = str(pathlib.Path(sys.executable).parent / "twistd")


def _listen_ports() -> range:
    """Ports to listen on: below the kernel's ephemeral range (or above it), so that no
    outgoing connection of another process (a peer's dial, a test client) can be using one
    as its source port when a restarted node binds it again (seen in CI: a core restarted
    after kill -9 could not bind its peer port, "address already in use", for 40 s)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
            low, high = (int(x) for x in handle.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low > 12000:
        return range(10000, low)
    return range(high + 1, 65536)


_random = random.Random()


def free_port() -> int:
    ports = _listen_ports()
    while True:
        port = _random.choice(ports)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (a node's core k listens for peers on
    its peer port + k), none of which another free_port() of this process hands out."""
    while True:
        first = free_port()
        if first + count <= _listen_ports().stop and all(
                port_is_free(first + k) and first + k not in _handed_out
                for k in range(1, count)):
            _handed_out.update(range(first, first + count))
            return first


_handed_out: set[int] = set()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def lone_voter_cluster(port: int, peer_port: int) -> str:
    """``[cluster]`` text of node 1, the only voter (``genesis = 1``), with a node 2 listed
    and never started: node 1 is ready on its own and listens for peers on ``peer_port``."""
    return (f"\n[cluster]\nnode_id = 1\ngenesis = 1\nsecret = a-test-secret-of-enough-bytes\n"
            f"peers =\n    1 = 127.0.0.1:{peer_port} http://127.0.0.1:{port}\n"
            f"    2 = 127.0.0.1:{free_ports(2)} http://127.0.0.1:{free_port()}\n")


def write_config(directory: pathlib.Path, port: int, extra: str = "") -> pathlib.Path:
    path = directory / "node.ini"
    path.write_text(f"[node]\nlisten = tcp:{port}:interface=127.0.0.1\n"
                    f"admin_listen = tcp:{free_port()}:interface=127.0.0.1\n"
                    f"data_dir = {directory / 'data'}\n{extra}")
    return path


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 5.0):
    """(status, headers, body); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_until_serving(url: str, process: subprocess.Popen | None = None,
                       timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited early with {process.returncode}")
        try:
            request("GET", url + "/__ursula/health", timeout=1.0)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"no server at {url} after {timeout} s")


def start_foreground(config: pathlib.Path | None, cwd: pathlib.Path) -> subprocess.Popen:
    args = [TWISTD, "-n", "ursula"] + (["--config", str(config)] if config else [])
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(process: subprocess.Popen, timeout: float = 15.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
