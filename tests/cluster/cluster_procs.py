"""Real multi-node clusters of ``twistd ursula`` processes on loopback, for cluster tests."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "integration"))

from procs import TWISTD, free_port, free_ports, request  # noqa: E402


class ClusterNode:
    def __init__(self, node_id: int, directory: pathlib.Path, http_port: int, peer_port: int,
                 admin_port: int):
        self.node_id = node_id
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.directory = directory
        self.http_port = http_port
        self.peer_port = peer_port
        self.url = f"http://127.0.0.1:{http_port}"
        self.process: subprocess.Popen | None = None
        self.log = directory / "twistd.log"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--logfile", str(self.log), "ursula", "--config",
             str(self.directory / "node.ini")], cwd=self.directory,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self) -> None:
        """kill -9: no shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def tree(self) -> list[int]:
        """The node's pids: the twistd process and its core processes (and theirs)."""
        pids, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            parent = frontier.pop()
            try:
                children = pathlib.Path(f"/proc/{parent}/task/{parent}/children").read_text()
            except OSError:
                continue
            for child in children.split():
                pids.append(int(child))
                frontier.append(int(child))
        return pids

    def freeze(self) -> None:
        """SIGSTOP to every process of the node: it stops dead, its sockets stay open (a long
        GC, swap, a VM pause)."""
        self._frozen = self.tree()
        for pid in self._frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in getattr(self, "_frozen", [self.process.pid]):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._frozen = []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()  # a frozen process cannot exit
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> str:
        return request("GET", self.admin_url + "/__ursula/metrics", timeout=3)[2].decode()

    def leads(self) -> set[int]:
        text = self.metrics()
        return {int(g) for g, v in re.findall(r'ursula_raft_is_leader\{group="(\d+)"[^}]*\} (\S+)',
                                              text) if float(v) == 1.0}


class Cluster:
    def __init__(self, base: pathlib.Path, size: int = 3, groups: int = 4, fsync: str = "never",
                 extra: str = "", cluster_extra: str = ""):
        """``cluster_extra``: more ``[cluster]`` keys; ``extra``: text after ``[storage]``'s
        fsync line (more ``[storage]`` keys, then other sections)."""
        self.nodes: list[ClusterNode] = []
        # each core k of a node listens for peers on its peer port + k: keep those free too
        ports = [(free_port(), free_ports(8), free_port()) for _ in range(size)]
        peers = "\n".join(f"    {i + 1} = 127.0.0.1:{peer} http://127.0.0.1:{http}"
                          for i, (http, peer, _) in enumerate(ports))
        for i, (http, peer, admin) in enumerate(ports):
            directory = base / f"node{i + 1}"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "node.ini").write_text(
                f"[node]\nlisten = tcp:{http}:interface=127.0.0.1\ndata_dir = {directory}/data\n"
                f"admin_listen = tcp:{admin}:interface=127.0.0.1\n"
                f"[http]\nlong_poll_timeout_ms = 500\n"
                f"[cluster]\nnode_id = {i + 1}\ngroups = {groups}\n"
                f"secret = test-secret-0123456789\n"
                f"peers =\n{peers}\n{cluster_extra}[storage]\nfsync = {fsync}\n{extra}")
            self.nodes.append(ClusterNode(i + 1, directory, http, peer, admin))

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_ready(self, nodes=None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes or self.nodes:
            while True:
                try:
                    if request("GET", node.url + "/__ursula/ready", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if not node.alive:
                    raise AssertionError(f"node {node.node_id} exited: "
                                         f"{node.process.stderr.read().decode()[-2000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {node.node_id} not ready after {timeout} s")
                time.sleep(0.1)

    def leader_of(self, group: int) -> ClusterNode | None:
        for node in self.nodes:
            if node.alive:
                try:
                    if group in node.leads():
                        return node
                except OSError:
                    continue
        return None

    def follower_of(self, group: int) -> ClusterNode:
        leader = self.leader_of(group)
        return next(n for n in self.nodes if n.alive and n is not leader)
