"""The cold tier's stores and chunk cache: memory, local directory, S3 (moto's server)."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer

from ursula.cold import (
    ChunkCache,
    ChunkCorrupt,
    ChunkMissing,
    MemoryColdStore,
    chunk_key,
    decode_chunk,
    encode_chunk,
)
from ursula.cold.local import LocalColdStore


def test_chunk_roundtrip_and_damage():
    blob, crc = encode_chunk(10, 15, b"hello")
    assert decode_chunk(blob, "k", 10, 15, crc) == b"hello"
    with pytest.raises(ChunkCorrupt, match="k"):
        decode_chunk(blob[:-1] + b"X", "k", 10, 15, crc)
    with pytest.raises(ChunkCorrupt):
        decode_chunk(blob, "k", 0, 5, crc)
    with pytest.raises(ChunkCorrupt):
        decode_chunk(b"URSC", "k", 10, 15, crc)
    with pytest.raises(ValueError):
        encode_chunk(0, 4, b"abc")


def test_keys_are_deterministic():
    assert chunk_key(1, 7, "b", "s", 0, 10) == chunk_key(1, 7, "b", "s", 0, 10)
    assert chunk_key(1, 7, "b", "s", 0, 10) != chunk_key(1, 7, "b", "t", 0, 10)


def _results(d):
    out = []
    d.addBoth(out.append)
    return out


def test_memory_store():
    store = MemoryColdStore()
    assert _results(store.put("a/b", b"0123456789")) == [None]
    assert _results(store.get("a/b", 2, 5)) == [b"234"]
    missing = _results(store.get("nope"))
    assert missing[0].check(ChunkMissing)
    store.delete("a/b")
    assert "a/b" not in store.objects
    store.fail = True
    assert _results(store.put("x", b""))[0].check(Exception)


def test_cache_one_fetch_lru_and_cap():
    store = MemoryColdStore()
    refs = []
    for i in range(4):
        blob, crc = encode_chunk(i * 10, i * 10 + 10, bytes([65 + i]) * 10)
        key = f"c{i}"
        store.objects[key] = blob
        refs.append((i * 10, i * 10 + 10, key, crc))
    slow = {}
    real_get = store.get

    def held_get(key, start=0, end=None):  # the fetch answers only when released
        held = defer.Deferred()
        slow[key] = lambda: real_get(key, start, end).chainDeferred(held)
        return held

    store.get = held_get
    cache = ChunkCache(store, cap_bytes=25)
    first, second = _results(cache.get(*refs[0])), _results(cache.get(*refs[0]))
    assert first == [] and second == [] and list(slow) == ["c0"]
    slow.pop("c0")()
    assert first == [b"A" * 10] and second == [b"A" * 10]
    store.get = real_get
    assert _results(cache.get(*refs[0])) == [b"A" * 10]
    assert cache.hits == 1 and cache.misses == 2
    cache.get(*refs[1])
    cache.get(*refs[2])  # over the cap: c0 (least recently used) goes
    assert cache.bytes <= 25 and "c0" not in cache._chunks


def test_cache_never_serves_a_corrupt_chunk():
    store = MemoryColdStore()
    blob, crc = encode_chunk(0, 4, b"good")
    store.objects["k"] = blob[:-4] + b"evil"
    cache = ChunkCache(store)
    result = _results(cache.get(0, 4, "k", crc))
    assert result[0].check(ChunkCorrupt) and cache.corrupt == 1
    store.objects["k"] = blob
    assert _results(cache.get(0, 4, "k", crc)) == [b"good"]


def test_cache_reads_a_chunk_of_a_pack_with_a_ranged_get():
    from ursula.cold.chunks import chunk_ref, pack_key
    store = MemoryColdStore()
    a, crc_a = encode_chunk(0, 3, b"abc")
    b, crc_b = encode_chunk(10, 15, b"hello")
    key = pack_key(0, [(1, 0, 3), (2, 10, 15)])
    assert key == pack_key(0, [(1, 0, 3), (2, 10, 15)]) != pack_key(0, [(1, 0, 3)])
    store.objects[key] = a + b
    asked = []
    real_get = store.get
    store.get = lambda k, start=0, end=None: asked.append((k, start, end)) or real_get(k, start, end)
    cache = ChunkCache(store)
    assert _results(cache.get(10, 15, chunk_ref(key, len(a)), crc_b)) == [b"hello"]
    assert _results(cache.get(0, 3, chunk_ref(key, 0), crc_a)) == [b"abc"]
    assert asked == [(key, len(a), len(a) + len(b)), (key, 0, len(a))]
    wrong = _results(ChunkCache(store).get(0, 3, chunk_ref(key, len(a)), crc_a))  # not its own
    assert wrong[0].check(ChunkCorrupt)


@pytest_twisted.inlineCallbacks
def test_local_store(tmp_path):
    from twisted.internet import reactor
    store = LocalColdStore(reactor, str(tmp_path / "cold"))
    yield store.put("g0/s1/a.chunk", b"0123456789")
    assert (tmp_path / "cold" / "g0" / "s1" / "a.chunk").read_bytes() == b"0123456789"
    assert not list((tmp_path / "cold" / "g0" / "s1").glob("*.tmp*"))
    assert (yield store.get("g0/s1/a.chunk")) == b"0123456789"
    assert (yield store.get("g0/s1/a.chunk", 3, 6)) == b"345"
    yield store.put("g0/s1/a.chunk", b"new")
    assert (yield store.get("g0/s1/a.chunk")) == b"new"
    yield store.delete("g0/s1/a.chunk")
    yield store.delete("g0/s1/a.chunk")
    with pytest.raises(ChunkMissing):
        yield store.get("g0/s1/a.chunk")
    with pytest.raises(Exception, match="relative"):
        yield store.get("../etc/passwd")
    yield store.put("g1/s2/b.chunk", b"b")
    yield store.put("g10/s3/c.chunk", b"c")
    (tmp_path / "cold" / "g1" / "s2" / "d.chunk.tmp99").write_bytes(b"half")  # never listed
    listed = yield store.list("g1/")
    assert [key for key, _ in listed] == ["g1/s2/b.chunk"]
    assert abs(listed[0][1] - (tmp_path / "cold" / "g1" / "s2" / "b.chunk").stat().st_mtime) < 1
    assert [key for key, _ in (yield store.list(""))] == ["g1/s2/b.chunk", "g10/s3/c.chunk"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def moto_s3(monkeypatch):
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url = f"http://127.0.0.1:{port}"
    import boto3
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="cold")
    yield url
    server.stop()


@pytest_twisted.inlineCallbacks
def test_s3_store(moto_s3):
    from twisted.internet import reactor

    from ursula.cold.s3 import S3ColdStore
    store = S3ColdStore(reactor, "cold", prefix="node/", endpoint_url=moto_s3,
                        region="us-east-1")
    blob, crc = encode_chunk(0, 10, b"0123456789")
    yield store.put("g0/s1/a.chunk", blob)
    assert (yield store.get("g0/s1/a.chunk")) == blob
    assert (yield store.get("g0/s1/a.chunk", 32 + 2, 32 + 5)) == b"234"
    cache = ChunkCache(store)
    assert (yield cache.get(0, 10, "g0/s1/a.chunk", crc)) == b"0123456789"
    yield store.put("g1/s2/b.chunk", b"b")
    yield store.put("g10/s3/c.chunk", b"c")
    listed = yield store.list("g1/")
    assert [key for key, _ in listed] == ["g1/s2/b.chunk"]  # without the store's prefix
    assert listed[0][1] > 1_700_000_000
    assert len((yield store.list(""))) == 3
    yield store.delete("g0/s1/a.chunk")
    with pytest.raises(ChunkMissing):
        yield store.get("g0/s1/a.chunk")
