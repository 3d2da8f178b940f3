"""``RoutedCore``: two cores of one node (two ``RaftCore``s with MemoryPersister, each holding
the groups ``g mod 2 == k``) joined by the local link (``ursula.wire.local``) over
``twisted.test.iosim`` on one ``task.Clock``: every call works through either core, for streams
of every group; reads coalesce; live readers are woken across cores."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task
from twisted.test import iosim

from ursula.core.cluster import CoreSettings, RaftCore
from ursula.core.interfaces import ICore, TooManyReaders, Unavailable
from ursula.core.persist import MemoryPersister
from ursula.core.placement import group_of
from ursula.core.routed import CoreServer, RemoteCoreProxy, RoutedCore, keep_groups
from ursula.raft import MemoryStorage
from ursula.stream import commands as C
from ursula.stream.machine import StreamError
from ursula.wire.local import LocalLink

GROUPS = 4
BUCKET = "_default"
OCTETS = "application/octet-stream"


class TwoCores:
    def __init__(self, max_live_readers: int = 100, cold_store=None, **settings):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        settings = CoreSettings(max_live_readers=max_live_readers, **settings)
        self.rafts = {}
        self.cores = {}
        self.servers = {}
        self.pumps = []
        for k in range(2):
            raft = RaftCore(self.clock, 1, GROUPS, {g: MemoryStorage([1]) for g in range(GROUPS)},
                            MemoryPersister(), None, settings, cold_store=cold_store)
            keep_groups(raft, k, 2)
            proxies = {j: RemoteCoreProxy(j, self.clock) for j in range(2) if j != k}
            self.rafts[k] = raft
            self.cores[k] = RoutedCore(raft, k, 2, proxies)
            self.servers[k] = CoreServer(self.cores[k])
        self.links = {}
        self.pump_of = {}
        for k in range(2):
            for j, proxy in self.cores[k].proxies.items():
                client = LocalLink(proxy, self.clock)
                server = LocalLink(self.servers[j], self.clock)
                pump = iosim.connect(server, iosim.makeFakeServer(server),
                                     client, iosim.makeFakeClient(client), greet=False)
                self.pumps.append(pump)
                self.pump_of[k, j] = pump
                proxy.attach(client)
                self.links[k, j] = client
        for raft in self.rafts.values():
            raft.start()
        for core in self.cores.values():
            for proxy in core.proxies.values():
                proxy.start_polling()
        self.settle()

    def settle(self, rounds: int = 40) -> None:
        for _ in range(rounds):
            self.clock.advance(0.001)
            for pump in self.pumps:
                pump.flush()

    def result(self, d):
        box = []
        d.addBoth(box.append)
        for _ in range(200):
            if box:
                break
            self.settle(1)
        assert box, "no answer"
        if isinstance(box[0], Exception) or hasattr(box[0], "raiseException"):
            box[0].raiseException()
        return box[0]


def stream_on_core(core: int, count: int = 3) -> list[str]:
    names = []
    i = 0
    while len(names) < count:
        name = f"s{i}"
        if group_of(BUCKET, name, GROUPS) % 2 == core:
            names.append(name)
        i += 1
    return names


@pytest.fixture
def two():
    cores = TwoCores()
    yield cores
    for raft in cores.rafts.values():
        raft.stop()


def test_provides_icore(two):
    assert ICore.providedBy(two.cores[0])


def test_every_call_through_either_core(two):
    two.settle()
    assert two.cores[0].is_ready() and two.cores[1].is_ready()
    for owner in range(2):
        for via in range(2):
            for name in stream_on_core(owner, 2):
                name = f"{name}-{via}"
                core = two.cores[via]
                outcome = two.result(core.submit(C.CreateStream(BUCKET, name, OCTETS)))
                assert outcome.error is None and outcome.created
                outcome = two.result(core.submit(C.Append(BUCKET, name, OCTETS, b"hello")))
                assert outcome.error is None and outcome.next_offset == 5
                info = two.result(core.head(BUCKET, name))
                assert info.tail == 5
                result = two.result(core.read_applied(BUCKET, name, 0, 1024))
                assert result.data == b"hello" and result.up_to_date
    listed = two.result(two.cores[0].list_streams(BUCKET, "", 100))
    names = [name for name, _ in listed]
    assert names == sorted(names) and len(names) == 8
    assert len(two.result(two.cores[1].list_streams(BUCKET, "", 3))) == 3


def test_errors_cross_the_link(two):
    name = stream_on_core(1)[0]
    with pytest.raises(StreamError) as error:
        two.result(two.cores[0].head(BUCKET, name))
    assert error.value.code == "not_found"
    with pytest.raises(StreamError):
        two.result(two.cores[0].read_applied(BUCKET, name, 0, 10))
    with pytest.raises(StreamError) as error:
        two.result(two.cores[0].list_streams("nobucket", "", 10))
    assert error.value.code == "bucket_not_found"


def test_buckets_go_to_every_core(two):
    outcome = two.result(two.cores[1].submit(C.CreateBucket("b1")))
    assert outcome.error is None and outcome.created
    assert two.result(two.cores[0].list_streams("b1", "", 10)) == []
    for k in range(2):
        assert "b1" in next(iter(two.rafts[k].groups.values())).machine.buckets


def test_fork_across_cores(two):
    source = stream_on_core(0)[0]
    two.result(two.cores[1].submit(C.CreateStream(BUCKET, source, OCTETS)))
    two.result(two.cores[1].submit(C.Append(BUCKET, source, OCTETS, b"abcdef")))
    fork = next(f"fork{i}" for i in range(100) if group_of(BUCKET, f"fork{i}", GROUPS) % 2 == 1)
    outcome = two.result(two.cores[0].submit(C.CreateStream(
        BUCKET, fork, OCTETS, fork_bucket=BUCKET, fork_stream=source, fork_offset=3)))
    assert outcome.error is None, outcome
    result = two.result(two.cores[0].read_applied(BUCKET, fork, 0, 100))
    assert result.data == b"abc"


def test_identical_reads_in_one_turn_are_one_call(two):
    name = stream_on_core(1)[0]
    two.result(two.cores[0].submit(C.CreateStream(BUCKET, name, OCTETS)))
    two.result(two.cores[0].submit(C.Append(BUCKET, name, OCTETS, b"x" * 10)))
    link = two.links[0, 1]
    before = link.calls_sent
    reads = [two.cores[0].read_applied(BUCKET, name, 0, 100) for _ in range(50)]
    reads.append(two.cores[0].read_applied(BUCKET, name, 5, 100))
    results = [two.result(d) for d in reads]
    assert link.calls_sent - before == 2
    assert link.calls_coalesced >= 49
    assert all(r.data == b"x" * 10 for r in results[:-1]) and results[-1].data == b"x" * 5


def test_live_reader_woken_across_cores(two):
    name = stream_on_core(1)[0]
    core = two.cores[0]
    two.result(core.submit(C.CreateStream(BUCKET, name, OCTETS)))
    woken = []
    result = two.result(core.read_applied(BUCKET, name, 0, 100))
    assert result.up_to_date
    subscription = core.subscribe(BUCKET, name, lambda: woken.append(1))
    assert core.live_readers == 1
    two.settle()
    assert woken == []
    two.result(two.cores[1].submit(C.Append(BUCKET, name, OCTETS, b"new")))
    two.settle()
    assert woken == [1]
    assert core.live_readers == 0
    subscription.cancel()


def test_change_between_read_and_subscribe_is_not_missed(two):
    name = stream_on_core(1)[0]
    core = two.cores[0]
    two.result(core.submit(C.CreateStream(BUCKET, name, OCTETS)))
    two.settle()
    woken, results = [], []
    d = core.read_applied(BUCKET, name, 0, 100)
    d.addCallback(results.append)
    d.addCallback(lambda _: core.subscribe(BUCKET, name, lambda: woken.append(1)))
    two.clock.advance(0)              # the batch is written
    two.pump_of[0, 1].pump()          # ... and read by core 1, which answers (not yet delivered)
    assert not results
    # the append is applied on the owning core after it answered the read
    two.cores[1].submit(C.Append(BUCKET, name, OCTETS, b"late"))
    two.settle(100)
    assert results[0].data == b""
    assert woken == [1]


def test_cancel_and_the_limit_count_where_the_connection_is():
    two = TwoCores(max_live_readers=2)
    name = stream_on_core(1)[0]
    two.result(two.cores[0].submit(C.CreateStream(BUCKET, name, OCTETS)))
    first = two.cores[0].subscribe(BUCKET, name, lambda: None)
    two.cores[0].subscribe(BUCKET, name, lambda: None)
    with pytest.raises(TooManyReaders):
        two.cores[0].subscribe(BUCKET, name, lambda: None)
    assert two.cores[1].live_readers == 0
    first.cancel()
    assert two.cores[0].live_readers == 1
    two.cores[0].subscribe(BUCKET, name, lambda: None)


def test_lost_link_wakes_readers_and_fails_calls(two):
    name = stream_on_core(1)[0]
    two.result(two.cores[0].submit(C.CreateStream(BUCKET, name, OCTETS)))
    woken = []
    two.cores[0].subscribe(BUCKET, name, lambda: woken.append(1))
    link = two.links[0, 1]
    link.transport.loseConnection()
    two.settle()
    assert woken == [1]
    d = two.cores[0].head(BUCKET, name)  # waits for the core to come back, up to the timeout
    two.clock.advance(6)
    with pytest.raises(Unavailable):
        two.result(d)
    assert not two.cores[0].is_ready()


def test_submit_many_in_one_turn_is_one_batch(two):
    names = stream_on_core(1, 5)
    link = two.links[0, 1]
    before = link.batches_sent
    ds = [two.cores[0].submit(C.CreateStream(BUCKET, n, OCTETS)) for n in names]
    results = [two.result(d) for d in ds]
    assert all(r.created for r in results)
    assert link.batches_sent - before <= 2  # one batch (plus, maybe, a ready poll)
    assert isinstance(defer.succeed(None), defer.Deferred)


def test_a_cold_read_of_the_other_cores_stream_is_fetched_here():
    """The owning core names the cold spans of its answer; the asking core fetches them from
    the cold store both share (its own chunk cache), so the flushed MiBs never cross the link:
    the read is whole and in order either way."""
    import os

    from ursula.cold import MemoryColdStore
    two = TwoCores(cold_store=MemoryColdStore(), hot_bytes=32 << 10, chunk_bytes=16 << 10)
    try:
        name = stream_on_core(1, 1)[0]
        asking, owner = two.cores[0], two.cores[1]
        assert two.result(asking.submit(C.CreateStream(BUCKET, name, OCTETS))).created
        data = os.urandom(256 << 10)
        for i in range(0, len(data), 8 << 10):
            two.result(asking.submit(C.Append(BUCKET, name, OCTETS, data[i:i + (8 << 10)])))
        for _ in range(50):  # let the owner's flusher move the older bytes to the cold tier
            two.clock.advance(0.1)
            two.settle(2)
        group = two.rafts[1].groups[group_of(BUCKET, name, GROUPS)]
        assert group.machine.cold_bytes > 128 << 10
        sent = []
        link = two.pump_of[0, 1].server  # the owner's end of core 0's link to it
        real = link.transport.write
        link.transport.write = lambda chunk: (sent.append(len(chunk)), real(chunk))
        got, offset = b"", 0
        while offset < len(data):
            result = two.result(asking.read_applied(BUCKET, name, offset, 64 << 10))
            assert result.start == offset and not result.cold
            got += bytes(result.data)
            offset = result.next_offset
        assert got == data
        assert two.rafts[0].cache.misses > 0  # the asking core fetched the chunks itself
        assert sum(sent) < len(data) // 2  # what crossed was the hot tail and the names
        own = two.result(owner.read_applied(BUCKET, name, 0, len(data)))
        assert bytes(own.data) == data[:len(own.data)] and own.start == 0
    finally:
        for raft in two.rafts.values():
            raft.stop()


def test_a_core_process_exports_its_forwarder_and_peer_metrics(two):
    """With cores > 1 the metrics page is built on the ``RoutedCore``: it has the core's
    forwarder counters, and the peer counters of the core's transport when it has one."""
    from ursula.http.metrics import Metrics
    from ursula.wire.transport import PeerStats
    routed = two.cores[0]
    routed.raft.forwarder.retries = 7
    routed.raft.load_moves = 2
    text = Metrics(routed).render()[0].decode()
    assert "ursula_forward_retries_total 7.0" in text
    assert "ursula_leader_load_moves_total 2.0" in text
    assert "ursula_peer_" not in text  # a node without peers

    class Transport:
        stats = {2: PeerStats(forwards_sent=5)}
    routed.transport = Transport()
    text = Metrics(routed).render()[0].decode()
    assert 'ursula_peer_forwards_sent_total{peer="2"} 5.0' in text
