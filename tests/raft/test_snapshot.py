"""Snapshots, compaction and chunked InstallSnapshot."""

from tests.raft.harness import Cluster
from ursula.raft import AppendEntries, InstallSnapshot


def _lagging_cluster(chunk=64, n_entries=60, **cfg):
    c = Cluster(3, snapshot_chunk_size=chunk, **cfg)
    c.elect(1)
    c.crash(3)
    for k in range(n_entries):
        c.propose(1, b"entry-%03d" % k)
    c.tick_all(1)
    for i in (1, 2):
        c.snapshot_and_compact(i)
    assert c.storages[1].first_index() > 2
    return c


def test_follower_too_far_behind_gets_snapshot_in_chunks():
    c = _lagging_cluster(chunk=64)
    c.sent.clear()
    c.restart(3)
    c.tick_all(6)
    chunks = [m for m in c.sent if isinstance(m, InstallSnapshot)]
    size = len(c.storages[1].snapshot().data)
    assert len(chunks) >= size // 64
    assert all(len(m.data) <= 64 for m in chunks)
    assert [m.offset for m in chunks] == sorted(m.offset for m in chunks)
    assert chunks[-1].done and not any(m.done for m in chunks[:-1])
    assert c.applied[3] == c.applied[1]
    assert c.storages[3].snapshot().meta.index == c.storages[1].snapshot().meta.index
    # afterwards normal replication resumes
    c.propose(1, b"after")
    c.tick_all(1)
    assert c.applied[3][-1] == b"after"


def test_lost_chunks_are_retransmitted():
    c = _lagging_cluster(chunk=50)
    c.restart(3)
    dropped = []

    def drop(m):
        if isinstance(m, InstallSnapshot) and m.offset in (50, 150) and m.offset not in dropped:
            dropped.append(m.offset)
            return True
        return False

    for _ in range(20):
        for i in c.ids:
            c.node(i).tick()
        c.deliver(drop=drop)
    assert dropped == [50, 150]
    assert c.applied[3] == c.applied[1]


def test_duplicated_and_reordered_chunks_are_harmless():
    c = _lagging_cluster(chunk=40)
    c.restart(3)
    seen = []

    def dup(m):
        if isinstance(m, InstallSnapshot):
            seen.append(m)
            if len(seen) % 3 == 0:
                c.queue.append(seen[0])  # an old chunk arrives again, late
        return False

    c.tick_all(1)
    for _ in range(20):
        for i in c.ids:
            c.node(i).tick()
        c.deliver(drop=dup)
    assert c.applied[3] == c.applied[1]


def test_restart_from_snapshot_and_log():
    c = _lagging_cluster()
    c.restart(3)
    c.tick_all(5)
    before = list(c.applied[2])
    c.crash(2)
    r = c.restart(2)
    assert r.applied == c.storages[2].snapshot().meta.index
    c.tick_all(3)
    assert c.applied[2] == before == c.applied[1]


def test_compacted_leader_still_serves_followers_in_range():
    c = Cluster(3)
    c.elect(1)
    for k in range(10):
        c.propose(1, b"%d" % k)
    c.tick_all(1)
    c.snapshot_and_compact(1, keep=5)
    c.sent.clear()
    c.crash(3)
    c.propose(1, b"x")
    c.restart(3)
    c.tick_all(3)
    assert not any(isinstance(m, InstallSnapshot) for m in c.sent)
    assert any(isinstance(m, AppendEntries) and m.dst == 3 for m in c.sent)
    assert c.applied[3] == c.applied[1]


def test_stale_snapshot_is_ignored():
    c = _lagging_cluster()
    c.restart(3)
    c.tick_all(5)
    old = [m for m in c.sent if isinstance(m, InstallSnapshot)][0]
    applied = c.node(3).applied
    c.node(3).step(old)
    c.process(3)
    assert c.node(3).applied == applied
    assert c.applied[3] == c.applied[1]


def test_chunks_flow_in_a_window_and_late_answers_send_nothing():
    # Every answer answered with a chunk, and a retransmission on every heartbeat answer, kept
    # more and more chunks in circulation under reordering and duplication: a storm that never
    # drained (seed 29 of the simulator's --moves). Now a window of chunks is in flight, an
    # answer that moves the transfer on tops it up, a late or duplicate one sends nothing, and
    # a heartbeat with no such answer since the last one resends the window.
    from ursula.raft import HeartbeatResponse, SnapshotResponse
    SNAPSHOT_WINDOW = 4  # noqa: N806 - Config.snapshot_window's default
    c = _lagging_cluster(chunk=64)
    c.restart(3)
    leader = c.node(1)
    term = leader.term
    pr = leader.tracker.progress[3]
    c.sent.clear()
    c.tick(1)  # a heartbeat goes out; node 3's answer starts the snapshot
    c.deliver(drop=lambda m: isinstance(m, InstallSnapshot))
    assert pr.state == "snapshot"
    first = [m.offset for m in c.sent if isinstance(m, InstallSnapshot)]
    assert first == [64 * k for k in range(SNAPSHOT_WINDOW)]
    index = pr.snap.meta.index

    def chunks_after(message):
        c.sent.clear()
        leader.step(message)
        c.process(1)
        return [m.offset for m in c.sent if isinstance(m, InstallSnapshot)]
    assert chunks_after(SnapshotResponse(term, 3, 1, index, 128)) == [256, 320]  # topped up
    assert chunks_after(SnapshotResponse(term, 3, 1, index, 128)) == []  # a duplicate answer
    assert chunks_after(SnapshotResponse(term, 3, 1, index, 64)) == []  # a late one
    assert chunks_after(HeartbeatResponse(term, 3, 1, b"")) == []  # chunks flowed: none more
    assert chunks_after(HeartbeatResponse(term, 3, 1, b"")) == [64, 128, 192, 256]  # quiet:
    # the window again, from the last answer (the late 64 said it is behind)
    assert chunks_after(SnapshotResponse(term, 3, 1, index, 0)) == []  # it started again
    assert chunks_after(HeartbeatResponse(term, 3, 1, b"")) == [0, 64, 128, 192]


def test_a_follower_keeps_chunks_that_come_early():
    c = _lagging_cluster(chunk=64)
    c.restart(3)
    order = []

    def reorder(m):  # hold back every chunk at an offset of 64 mod 128 once
        if isinstance(m, InstallSnapshot) and m.offset % 128 == 64 and m.offset not in order:
            order.append(m.offset)
            c.node(1).msgs.append(m)  # sent again after the ones behind it
            return True
        return False
    for _ in range(30):
        for i in c.ids:
            c.node(i).tick()
        c.deliver(drop=reorder)
    assert order and c.applied[3] == c.applied[1]
