"""``ursula_peer_*_total{peer}``: the peer transport's counters on the metrics page."""

from __future__ import annotations

from ursula.http.metrics import Metrics
from ursula.wire.transport import PeerStats


class _Transport:
    def __init__(self):
        self.stats = {2: PeerStats(bytes_sent=1234, raft_messages_sent=7, forwards_sent=3),
                      3: PeerStats(forwards_failed=1, connects=2)}


class _Core:
    def __init__(self):
        self.transport = _Transport()

    def stats(self):
        return {"streams": 0, "bytes": 0, "live_readers": 0}


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not on the page")


def test_every_peer_counter_is_exported_per_peer():
    core = _Core()
    metrics = Metrics(core)
    text = metrics.render()[0].decode()
    assert _value(text, 'ursula_peer_bytes_sent_total{peer="2"}') == 1234
    assert _value(text, 'ursula_peer_raft_messages_sent_total{peer="2"}') == 7
    assert _value(text, 'ursula_peer_forwards_sent_total{peer="2"}') == 3
    assert _value(text, 'ursula_peer_forwards_failed_total{peer="3"}') == 1
    assert _value(text, 'ursula_peer_connects_total{peer="3"}') == 2
    core.transport.stats[2].bytes_sent += 100  # read when scraped, not when registered
    assert _value(metrics.render()[0].decode(), 'ursula_peer_bytes_sent_total{peer="2"}') == 1334
    names = {f.name for f in PeerStats.__dataclass_fields__.values()}
    assert all(f"ursula_peer_{name}_total" in text for name in names)


def test_a_node_without_peers_has_no_peer_series():
    class Alone(_Core):
        def __init__(self):
            self.transport = None
    assert "ursula_peer_" not in Metrics(Alone()).render()[0].decode()


def test_forwarder_retries_reroutes_and_load_moves_are_exported():
    class _Forwarder:
        retries, reroutes = 5, 2

    class Clustered(_Core):
        def __init__(self):
            super().__init__()
            self.forwarder = _Forwarder()
            self.load_moves = 3
    core = Clustered()
    metrics = Metrics(core)
    text = metrics.render()[0].decode()
    assert _value(text, "ursula_forward_retries_total") == 5
    assert _value(text, "ursula_forward_reroutes_total") == 2
    assert _value(text, "ursula_leader_load_moves_total") == 3
    core.forwarder.reroutes = 4
    assert _value(metrics.render()[0].decode(), "ursula_forward_reroutes_total") == 4
