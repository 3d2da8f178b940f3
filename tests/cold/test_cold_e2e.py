"""End to end: a node with a tiny hot cap carries old bytes to the cold tier; catch-up from
the start, SSE from an old offset and reads after a snapshot restore span both tiers; a cold
store outage fills the hot cap (503 with Retry-After), then flushing resumes and nothing
acknowledged is lost; a delete collects the stream's chunks."""

from __future__ import annotations

import base64
import json

import pytest
import pytest_twisted
from twisted.internet import task

from tests.api.api_helpers import call, header
from tests.conftest import make_config
from ursula.cold import MemoryColdStore
from ursula.cold.local import LocalColdStore

KiB = 1024
HOT = 64 * KiB


def _sleep(seconds):
    from twisted.internet import reactor
    return task.deferLater(reactor, seconds, lambda: None)


class ColdNode:
    def __init__(self, tmp_path, store, hot_max=0):
        from twisted.internet import reactor

        from ursula.core.cluster import CoreSettings, MemoryPersister, RaftCore
        from ursula.http.dataplane import data_plane_factory
        from ursula.http.metrics import Metrics
        from ursula.raft import MemoryStorage

        self.store = store
        config = make_config(tmp_path, http={"sse_max_duration_ms": 1000})
        settings = CoreSettings(hot_bytes=HOT, hot_max_bytes=hot_max, chunk_bytes=16 * KiB,
                                cold_cache_bytes=64 * KiB)
        self.core = RaftCore(reactor, 1, 2, {g: MemoryStorage([1]) for g in range(2)},
                             MemoryPersister(), settings=settings, cold_store=store)
        self.core.flusher.interval_s = 0.02
        self.core.start()
        self.metrics = Metrics(self.core)
        self.port = reactor.listenTCP(0, data_plane_factory(self.core, config, reactor,
                                                            self.metrics),
                                      interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def hot(self) -> int:
        return sum(g.machine.total_bytes for g in self.core.groups.values())

    def stop(self):
        self.core.stop()
        return self.port.stopListening()


@pytest.fixture
def cold_node(tmp_path):
    nodes = []

    def start(store=None, **kwargs):
        from twisted.internet import reactor
        node = ColdNode(tmp_path, store or LocalColdStore(reactor, str(tmp_path / "cold")),
                        **kwargs)
        nodes.append(node)
        return node
    yield start
    for node in nodes:
        pytest_twisted.blockon(node.stop())


def _payload(i: int) -> bytes:
    return (b"%06d:" % i) * 800  # 5600 bytes, recognisable


@pytest_twisted.inlineCallbacks
def _wait(predicate, timeout=10.0):
    waited = 0.0
    while not predicate():
        assert waited < timeout, "timed out"
        yield _sleep(0.02)
        waited += 0.02


@pytest_twisted.inlineCallbacks
def _read_all(url: str) -> bytes:
    out, offset = [], "-1"
    while True:
        response, body = yield call("GET", f"{url}?offset={offset}")
        assert response.code == 200, body
        out.append(body)
        offset = header(response, "Stream-Next-Offset")
        if header(response, "Stream-Up-To-Date") == "true":
            return b"".join(out)


@pytest_twisted.inlineCallbacks
def test_bytes_move_to_the_cold_tier_and_read_back(cold_node, tmp_path):
    node = cold_node()
    url = node.url + "/v1/stream/big"
    yield call("PUT", url, None, {"Content-Type": "application/octet-stream"})
    written = []
    refused = 0
    for i in range(100):  # 560 KB through a 64 KiB hot cap
        written.append(_payload(i))
        while True:
            response, _ = yield call("POST", url, written[-1],
                                     {"Content-Type": "application/octet-stream"})
            if response.code != 503:
                break
            # the group is at its cap (4 x HOT) because the flusher is behind (a busy
            # machine): what a client does with Retry-After, nothing was appended
            refused += 1
            assert refused < 500, "the flusher never caught up"
            yield _sleep(0.02)
        assert response.code in (200, 204)
    yield _wait(lambda: node.hot() <= HOT)
    machine = node.core._group_for("_default", "big").machine
    stream = machine.streams[("_default", "big")]
    assert stream.base > 400_000 and len(stream.data) <= HOT
    assert machine.cold_bytes == stream.base
    # (an upload may still be on its way to its ColdFlushed: wait for the two to agree)
    yield _wait(lambda: len(list((tmp_path / "cold").rglob("*.chunk"))) == len(stream.chunks))
    everything = b"".join(written)
    assert (yield _read_all(url)) == everything
    assert node.core.cache.misses > 0
    # a read in the middle of a chunk, and one across the hot start
    response, body = yield call("GET", f"{url}?offset=0000000000000000_{1000:016d}")
    assert body == everything[1000:1000 + len(body)] and body
    # SSE from an old offset delivers the cold bytes, then the hot ones
    response, body = yield call("GET", f"{url}?offset=0000000000000000_{10:016d}&live=sse")
    events = [b for b in body.decode().split("\n\n") if b.startswith("event: data")]
    data = b"".join(base64.b64decode("".join(line[5:] for line in e.split("\n")[1:]))
                    for e in events)
    assert data == everything[10:]
    metrics = node.metrics.render()[0].decode()
    assert "ursula_cold_uploads_total" in metrics and "ursula_hot_bytes{" in metrics
    # a snapshot holds references: a restored machine reads through the same chunks
    from ursula.stream import StreamMachine
    restored = StreamMachine.restore(machine.snapshot())
    assert restored.streams[("_default", "big")].chunks == stream.chunks
    assert len(machine.snapshot()) < 2 * HOT
    # deleting the stream collects its chunks after the delete committed
    response, _ = yield call("DELETE", url)
    assert response.code == 204
    yield _wait(lambda: not list((tmp_path / "cold").rglob("*.chunk")))
    yield _wait(lambda: not machine.cold_garbage)


@pytest_twisted.inlineCallbacks
def test_json_stream_reads_across_tiers(cold_node):
    node = cold_node(store=MemoryColdStore())
    url = node.url + "/v1/stream/j"
    yield call("PUT", url, None, {"Content-Type": "application/json"})
    messages = [{"i": i, "pad": "x" * 300} for i in range(400)]
    for start in range(0, 400, 20):
        response, _ = yield call("POST", url, json.dumps(messages[start:start + 20]).encode(),
                                 {"Content-Type": "application/json"})
        assert response.code in (200, 204)
    yield _wait(lambda: node.hot() <= HOT)
    got = []
    offset = "-1"
    while True:
        response, body = yield call("GET", f"{url}?offset={offset}")
        got.extend(json.loads(body))
        offset = header(response, "Stream-Next-Offset")
        if header(response, "Stream-Up-To-Date") == "true":
            break
    assert got == messages


@pytest_twisted.inlineCallbacks
def test_cold_outage_fills_the_hot_cap_then_recovers(cold_node):
    store = MemoryColdStore()
    node = cold_node(store=store, hot_max=3 * HOT)
    node.core.flusher.backoff_max_s = 0.1
    url = node.url + "/v1/stream/o"
    yield call("PUT", url, None, {"Content-Type": "application/octet-stream"})
    store.fail = True
    acked, refused = [], 0
    for i in range(60):
        response, _ = yield call("POST", url, _payload(i),
                                 {"Content-Type": "application/octet-stream"})
        if response.code == 503:
            assert header(response, "Retry-After")
            refused += 1
        else:
            assert response.code in (200, 204)
            acked.append(_payload(i))
    assert refused > 0 and node.core.flusher.stats()["upload_errors"] > 0
    assert node.hot() <= 3 * HOT + len(_payload(0))
    # reads of hot bytes go on
    assert (yield _read_all(url)) == b"".join(acked)
    store.fail = False
    yield _wait(lambda: node.hot() <= HOT)
    response, _ = yield call("POST", url, b"after", {"Content-Type": "application/octet-stream"})
    assert response.code in (200, 204)
    assert (yield _read_all(url)) == b"".join(acked) + b"after"


@pytest_twisted.inlineCallbacks
def test_a_corrupt_chunk_is_never_served(cold_node):
    store = MemoryColdStore()
    node = cold_node(store=store)
    url = node.url + "/v1/stream/c"
    yield call("PUT", url, None, {"Content-Type": "application/octet-stream"})
    for i in range(30):
        yield call("POST", url, _payload(i), {"Content-Type": "application/octet-stream"})
    yield _wait(lambda: node.hot() <= HOT)
    key = sorted(store.objects)[0]
    store.objects[key] = store.objects[key][:-3] + b"BAD"
    response, body = yield call("GET", f"{url}?offset=-1")
    assert response.code == 503 and b"checksum" in body
    assert node.core.cache.corrupt == 1
