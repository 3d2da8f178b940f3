"""Flusher: pipelined uploads, ColdFlushed proposed in plan order, failures and leadership,
with a fake group (a real StreamMachine whose proposals commit when the test says) and a store
whose uploads finish when the test says."""

from __future__ import annotations

from twisted.internet import defer, task

from ursula.cold.chunks import decode_chunk
from ursula.core.flusher import Flusher
from ursula.stream import StreamMachine
from ursula.stream import commands as C

B, OCT = "_default", "application/octet-stream"
KiB = 1024


class NotLeader(Exception):
    pass


class FakeGroup:
    def __init__(self):
        self.group_id = 0
        self.is_leader = True
        self.machine = StreamMachine()
        self.proposed: list[tuple[object, defer.Deferred]] = []

    def submit(self, command):
        d = defer.Deferred()
        if not self.is_leader:
            d.errback(NotLeader())
            return d
        self.proposed.append((command, d))
        return d

    def commit_all(self):
        while self.proposed:
            command, d = self.proposed.pop(0)
            d.callback(self.machine.apply(command, 1))

    def lose_all(self):
        while self.proposed:
            _, d = self.proposed.pop(0)
            d.errback(NotLeader())


class ManualStore:
    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.pending: list[tuple[str, bytes, defer.Deferred]] = []

    def put(self, key, data):
        d = defer.Deferred()
        self.pending.append((key, bytes(data), d))
        return d

    def finish(self, index=0, ok=True):
        key, data, d = self.pending.pop(index)
        if ok:
            self.objects[key] = data
            d.callback(None)
        else:
            d.errback(OSError("the store is down"))

    def delete(self, key):
        self.objects.pop(key, None)
        return defer.succeed(None)


def _setup(total=40 * KiB, depth=3):
    clock = task.Clock()
    group = FakeGroup()
    group.machine.apply(C.CreateStream(B, "s", OCT), 1)
    data = bytes(range(256)) * (total // 256)
    for i in range(0, total, 4 * KiB):
        group.machine.apply(C.Append(B, "s", OCT, data[i:i + 4 * KiB]), 1)
    store = ManualStore()
    flusher = Flusher(clock, {0: group}, store, hot_bytes=8 * KiB, max_hot_bytes=64 * KiB,
                      chunk_bytes=8 * KiB, depth=depth, backoff_max_s=1.0)
    return clock, group, store, flusher, data


def _drain(clock, group, store, flusher):
    """Let every poll, upload and proposal finish (the leader stays, nothing fails)."""
    for _ in range(100):
        clock.advance(1.0)
        flusher.poll()
        while store.pending or group.proposed:
            if store.pending:
                store.finish(0)
            group.commit_all()


def _stream(group):
    return group.machine.streams[(B, "s")]


def test_uploads_run_side_by_side_and_are_proposed_in_plan_order():
    clock, group, store, flusher, data = _setup()
    flusher.poll()
    assert [key.rsplit("/", 1)[1] for key, _, _ in store.pending] == [
        "0000000000000000-0000000000002000.chunk", "0000000000002000-0000000000004000.chunk",
        "0000000000004000-0000000000006000.chunk"]  # depth 3, consecutive ranges
    store.finish(1)  # the second upload ends first: nothing may be proposed yet
    assert group.proposed == []
    store.finish(0)  # now the first and the second, in order
    assert [(c.start, c.end) for c, _ in group.proposed] == [(0, 8 * KiB), (8 * KiB, 16 * KiB)]
    group.commit_all()
    assert _stream(group).base == 16 * KiB
    # two chunks done: one more planned past the one still uploading, which is all that
    # stands above hot_bytes (24 KiB hot, 16 KiB of it in flight)
    assert [key.rsplit("/", 1)[1][:16] for key, _, _ in store.pending] == [
        "0000000000004000", "0000000000006000"]
    while store.pending:
        store.finish(0)
        group.commit_all()
    stream = _stream(group)
    assert stream.base == 32 * KiB and len(stream.data) == 8 * KiB  # down to hot_bytes
    assert flusher.stats()["uploads"] == 4 and flusher.in_flight(0) == 0
    cold = b"".join(decode_chunk(store.objects[key], key, start, end, checksum)
                    for start, end, key, checksum in stream.chunks)
    assert cold + bytes(stream.data) == data


def test_a_failed_upload_stops_the_plan_and_it_restarts_from_the_hot_start():
    clock, group, store, flusher, data = _setup()
    flusher.poll()
    store.finish(1)  # the second upload succeeds...
    store.finish(0, ok=False)  # ...but the first fails: neither may be proposed
    assert group.proposed == [] and flusher.stats()["upload_errors"] == 1
    flusher.poll()
    assert len(store.pending) == 1  # the third still uploads; nothing new is planned
    store.finish(0)
    assert group.proposed == [] and flusher.in_flight(0) == 0
    flusher.poll()
    assert store.pending == []  # backing off
    clock.advance(1.0)
    flusher.poll()
    assert store.pending[0][0].rsplit("/", 1)[1][:16] == "0000000000000000"  # from the start
    while store.pending:
        store.finish(0)
        group.commit_all()
    stream = _stream(group)
    cold = b"".join(decode_chunk(store.objects[key], key, start, end, checksum)
                    for start, end, key, checksum in stream.chunks)
    assert cold + bytes(stream.data) == data and stream.base == 32 * KiB


def test_leadership_lost_with_chunks_proposed_changes_nothing_and_the_next_term_goes_on():
    clock, group, store, flusher, data = _setup()
    flusher.poll()
    store.finish(0)
    store.finish(0)
    group.is_leader = False
    group.lose_all()  # both proposals dropped by the leader change
    store.finish(0)
    assert group.proposed == [] and flusher.in_flight(0) == 0
    assert _stream(group).base == 0 and len(_stream(group).data) == len(data)
    flusher.poll()
    assert store.pending == []  # a follower never flushes
    group.is_leader = True
    flusher.poll()
    assert store.pending == []  # a lost proposal pauses the plan until a later poll
    clock.advance(flusher.interval_s)
    flusher.poll()
    while store.pending:
        store.finish(0)
        group.commit_all()
    assert _stream(group).base == 32 * KiB


def test_a_chunk_applied_out_of_place_is_refused_and_replanned():
    # Another leader flushed [0, 8 KiB) meanwhile: this node's plan for [0, 8 KiB) is a
    # duplicate, and the rest goes on from the new hot start.
    clock, group, store, flusher, data = _setup(depth=1)
    flusher.poll()
    stream = _stream(group)
    group.machine.apply(C.ColdFlushed(B, "s", stream.uid, 0, 8 * KiB, "elsewhere", 0), 1)
    store.finish(0)
    group.commit_all()
    assert stream.base == 8 * KiB and flusher.in_flight(0) == 1
    assert store.pending[0][0].rsplit("/", 1)[1][:16] == "0000000000002000"


def test_any_interleaving_of_uploads_failures_commits_and_leader_changes_loses_nothing():
    # Seeded random schedules: whatever finishes, fails or commits in whatever order, the
    # stream's cold chunks are contiguous from 0, each holds its range's bytes, and cold +
    # hot is what was appended.
    import random
    for seed in range(300):
        rng = random.Random(seed)
        clock, group, store, flusher, data = _setup(total=64 * KiB, depth=rng.randint(1, 4))
        for _ in range(200):
            action = rng.random()
            if action < 0.35 and store.pending:
                store.finish(rng.randrange(len(store.pending)), ok=rng.random() > 0.2)
            elif action < 0.6 and group.proposed:
                command, d = group.proposed.pop(0)
                d.callback(group.machine.apply(command, 1))
            elif action < 0.65 and group.proposed:
                group.lose_all()
            elif action < 0.7:
                group.is_leader = not group.is_leader
            elif action < 0.8:
                clock.advance(rng.random())
            else:
                flusher.poll()
        group.is_leader = True
        _drain(clock, group, store, flusher)
        stream = _stream(group)
        position = 0
        for start, end, key, checksum in stream.chunks:
            assert start == position, seed
            assert decode_chunk(store.objects[key], key, start, end, checksum) == data[start:end]
            position = end
        assert position == stream.base and bytes(stream.data) == data[stream.base:], seed
        assert len(stream.data) <= 8 * KiB, seed  # flushed down to hot_bytes in the end
        assert flusher.in_flight(0) == 0, seed


def test_chunks_failing_in_one_round_back_off_one_step():
    # Four uploads in flight fail together (the store is down): the back-off doubles once,
    # not four times, so flushing resumes soon after the store does.
    clock, group, store, flusher, data = _setup(total=64 * KiB, depth=4)
    flusher.poll()
    assert len(store.pending) == 4
    while store.pending:
        store.finish(0, ok=False)
    assert flusher.stats()["upload_errors"] == 4
    assert flusher.backoff[0] == 0.2
    clock.advance(0.2)
    flusher.poll()
    assert len(store.pending) == 4  # the next round


def test_the_sweep_deletes_old_unreferenced_objects_of_its_group_only():
    from ursula.cold import MemoryColdStore

    clock = task.Clock()
    clock.advance(1_000_000)
    group = FakeGroup()
    group.machine.apply(C.CreateStream(B, "s", OCT), 1)
    for _ in range(6):
        group.machine.apply(C.Append(B, "s", OCT, b"x" * 4 * KiB), 1)
    store = MemoryColdStore(clock)
    flusher = Flusher(clock, {0: group}, store, hot_bytes=8 * KiB, chunk_bytes=8 * KiB,
                      sweep_interval_s=60, orphan_grace_s=300)
    flusher.poll()
    group.commit_all()
    flushed = {chunk[2] for chunk in _stream(group).chunks}
    assert len(flushed) == 2
    store.put("g0/s9-dead/0000000000000000-0000000000000010.chunk", b"orphan")  # old
    store.put("g1/s1-other/0000000000000000-0000000000000010.chunk", b"another group's")
    clock.advance(400)
    store.put("g0/s9-dead/0000000000000010-0000000000000020.chunk", b"recent orphan")
    flusher.poll()  # first sweep of the group: 400 s after its first poll
    assert set(store.objects) == flushed | {
        "g1/s1-other/0000000000000000-0000000000000010.chunk",
        "g0/s9-dead/0000000000000010-0000000000000020.chunk"}
    assert flusher.stats()["orphans_deleted"] == 1
    clock.advance(30)
    flusher.poll()  # not yet time for the next sweep
    assert "g0/s9-dead/0000000000000010-0000000000000020.chunk" in store.objects
    clock.advance(300)
    flusher.poll()
    assert set(store.objects) == flushed | {"g1/s1-other/0000000000000000-0000000000000010.chunk"}


def test_the_sweep_spares_chunks_in_flight_and_a_follower_never_sweeps():
    from ursula.cold import MemoryColdStore

    clock = task.Clock()
    group = FakeGroup()
    group.machine.apply(C.CreateStream(B, "s", OCT), 1)
    group.machine.apply(C.Append(B, "s", OCT, b"y" * 20 * KiB), 1)
    store = MemoryColdStore(clock)
    flusher = Flusher(clock, {0: group}, store, hot_bytes=8 * KiB, chunk_bytes=8 * KiB,
                      sweep_interval_s=10, orphan_grace_s=0)
    flusher.poll()  # uploads done at once (memory store), proposals not yet committed
    uploaded = set(store.objects)
    assert uploaded and flusher.in_flight(0) > 0
    clock.advance(10)
    flusher.poll()
    assert set(store.objects) == uploaded  # in flight: not orphans
    group.lose_all()  # the proposals are lost: now they are orphans
    group.is_leader = False
    clock.advance(10)
    flusher.poll()
    assert set(store.objects) == uploaded  # a follower does not sweep
    group.is_leader = True
    clock.advance(10)
    flusher.poll()
    group.commit_all()  # the new plan re-uploads the same ranges (same keys) and commits
    referenced = {chunk[2] for chunk in _stream(group).chunks}
    assert referenced and set(store.objects) == referenced


# -- packs: the small ranges of many streams in one object ------------------------------------

def _read(objects, ref, start, end, checksum):
    """A chunk's payload read as the cache reads it (a ranged get of its object)."""
    from ursula.cold.chunks import fetch_range
    key, first, last = fetch_range(ref, start, end)
    return decode_chunk(objects[key][first:last], ref, start, end, checksum)


def _setup_many(streams=24, each=3 * KiB, hot=16 * KiB, chunk=32 * KiB, depth=2):
    clock = task.Clock()
    group = FakeGroup()
    data = {}
    for i in range(streams):
        name = f"s{i}"
        group.machine.apply(C.CreateStream(B, name, OCT), 1)
        payload = bytes((i + j) % 251 for j in range(each + 17 * i))
        group.machine.apply(C.Append(B, name, OCT, payload), 1)
        data[name] = payload
    store = ManualStore()
    flusher = Flusher(clock, {0: group}, store, hot_bytes=hot, max_hot_bytes=1 << 20,
                      chunk_bytes=chunk, depth=depth, backoff_max_s=1.0)
    return clock, group, store, flusher, data


def test_many_small_streams_go_out_in_one_pack_and_read_back():
    clock, group, store, flusher, data = _setup_many(chunk=128 * KiB)
    total = group.machine.total_bytes
    flusher.poll()
    assert len(store.pending) == 1  # one object for the streams that hold the most
    key, blob, _ = store.pending[0]
    assert key.startswith("g0/packs/") and key.endswith(".pack")
    store.finish(0)
    ranges = len(group.proposed)
    assert ranges > 1 and all(c.key.startswith(key + "#") for c, _ in group.proposed)
    group.commit_all()
    # down to the low-water mark (hot_bytes less a quarter), in one upload
    assert group.machine.total_bytes <= flusher.low_water_bytes < 16 * KiB < total
    assert flusher.stats()["uploads"] == 1
    for name, payload in data.items():
        stream = group.machine.streams[(B, name)]
        cold = b"".join(_read(store.objects, ref, start, end, checksum)
                        for start, end, ref, checksum in stream.chunks)
        assert cold + bytes(stream.data) == payload, name


def test_a_pack_is_deleted_once_no_stream_refers_to_it():
    from ursula.cold.chunks import object_key
    clock, group, store, flusher, data = _setup_many(chunk=128 * KiB)
    flusher.poll()
    store.finish(0)
    group.commit_all()
    (pack,) = store.objects
    holders = [name for name in data
               if any(object_key(c[2]) == pack for c in group.machine.streams[(B, name)].chunks)]
    assert len(holders) > 1
    group.machine.apply(C.DeleteStream(B, holders[0]), 1)
    flusher.poll()
    group.commit_all()  # ColdCollected of the first holder's chunk: the pack stays
    assert pack in store.objects and not group.machine.cold_garbage
    for name in holders[1:]:
        group.machine.apply(C.DeleteStream(B, name), 1)
    while group.machine.cold_garbage:
        flusher.poll()
        group.commit_all()
    assert pack not in store.objects
    assert flusher.stats()["collected"] == len(holders)


def test_any_interleaving_with_packs_and_deletes_loses_nothing():
    # Seeded random schedules over many small streams (packs), with stream deletes: every live
    # stream's chunks are contiguous from 0 and read back its bytes, every object a stream
    # refers to exists, and the group ends at or below hot_bytes.
    import random

    from ursula.cold.chunks import object_key
    for seed in range(200):
        rng = random.Random(seed)
        clock, group, store, flusher, data = _setup_many(
            streams=rng.randint(2, 30), depth=rng.randint(1, 4),
            chunk=rng.choice([8 * KiB, 32 * KiB]))
        deleted = set()
        for _ in range(200):
            action = rng.random()
            if action < 0.3 and store.pending:
                store.finish(rng.randrange(len(store.pending)), ok=rng.random() > 0.2)
            elif action < 0.55 and group.proposed:
                command, d = group.proposed.pop(0)
                d.callback(group.machine.apply(command, 1))
            elif action < 0.6 and group.proposed:
                group.lose_all()
            elif action < 0.65:
                group.is_leader = not group.is_leader
            elif action < 0.7:
                name = rng.choice(sorted(data))
                group.machine.apply(C.DeleteStream(B, name), 1)
                deleted.add(name)
            elif action < 0.8:
                clock.advance(rng.random())
            else:
                flusher.poll()
        group.is_leader = True
        _drain(clock, group, store, flusher)
        assert not group.machine.cold_garbage, seed
        for name, payload in data.items():
            stream = group.machine.streams.get((B, name))
            if name in deleted:
                assert stream is None, seed
                continue
            position = 0
            for start, end, ref, checksum in stream.chunks:
                assert start == position, seed
                assert object_key(ref) in store.objects, (seed, ref)
                assert _read(store.objects, ref, start, end, checksum) == payload[start:end]
                position = end
            assert position == stream.base and bytes(stream.data) == payload[stream.base:]
        assert group.machine.total_bytes <= 16 * KiB, seed
        assert flusher.in_flight(0) == 0, seed
