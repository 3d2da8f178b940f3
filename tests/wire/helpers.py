"""Helpers for the wire tests: N `PeerTransport`s on 127.0.0.1, log capture, sleeping."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from ursula.wire import PeerTransport

SECRET = b"0123456789abcdef0123456789abcdef"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.5, "forward_timeout": 2.0,
        "handshake_timeout": 2.0}


def reactor():
    from twisted.internet import reactor as r
    return r


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor(), seconds, lambda: None)


async def eventually(predicate, timeout: float = 5.0, step: float = 0.01):
    """Wait until `predicate()` is true; fail the test after `timeout` seconds."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await sleep(step)
        waited += step


def endpoint(port: int) -> str:
    return f"tcp:host=127.0.0.1:port={port}"


class Cluster:
    """Transports for node ids 1..n, listening on loopback, wired to each other."""

    def __init__(self):
        self.nodes: dict[int, PeerTransport] = {}
        self.ports: dict[int, int] = {}
        self.received: dict[int, list] = {}

    async def start(self, n: int, secrets=None, tls=None, **options):
        ids = range(1, n + 1)
        opts = {**FAST, **options}
        for i in ids:
            secret = (secrets or {}).get(i, SECRET)
            self.nodes[i] = PeerTransport(i, {j: "" for j in ids}, secret, reactor(),
                                          tls_options=tls, **opts)
            self.received[i] = []
            self.nodes[i].on_raft(lambda peer, items, i=i: self.received[i].append((peer, items)))
            port = await self.nodes[i].listen("tcp:0:interface=127.0.0.1")
            self.ports[i] = port.getHost().port
        for t in self.nodes.values():
            for j in ids:
                if j != t.node_id:
                    t.peers[j] = endpoint(self.ports[j])
        for t in self.nodes.values():
            t.start()
        return self

    async def restart(self, i: int, **options):
        """Stop node `i` and start a fresh transport for it on the same port."""
        old = self.nodes[i]
        await old.stop()
        opts = {**FAST, **options}
        t = PeerTransport(i, dict(old.peers), old.secret, reactor(),
                          tls_options=old.tls_options, **opts)
        self.received[i] = []
        t.on_raft(lambda peer, items: self.received[i].append((peer, items)))
        self.nodes[i] = t
        await t.listen(f"tcp:{self.ports[i]}:interface=127.0.0.1")
        t.start()
        return t

    async def all_connected(self, timeout: float = 5.0):
        def ok():
            return all(t.connected(j) for t in self.nodes.values() for j in t.peers)
        await eventually(ok, timeout)

    async def stop(self):
        await defer.DeferredList([t.stop() for t in self.nodes.values()])


class LogCapture:
    """Collects formatted warnings (and worse) from the ``ursula.wire`` loggers."""

    def __init__(self):
        self.events = []
        globalLogPublisher.addObserver(self)

    def __call__(self, event):
        if event.get("log_namespace", "").startswith("ursula.wire"):
            self.events.append(event)

    def warnings(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] >= LogLevel.warn]

    def close(self):
        globalLogPublisher.removeObserver(self)
