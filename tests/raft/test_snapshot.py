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


def test_a_heartbeat_retransmits_a_chunk_only_when_none_was_answered_since_the_last():
    # While chunks flow, a retransmission on every heartbeat answer would add one more chunk
    # in circulation per heartbeat (each answer is answered with a chunk): a storm that never
    # drains under reordering. The leader retransmits only after a heartbeat with no answer.
    from ursula.raft import HeartbeatResponse, SnapshotResponse
    c = _lagging_cluster(chunk=64)
    c.restart(3)
    leader = c.node(1)
    term = leader.term
    pr = leader.tracker.progress[3]
    c.tick(1)  # a heartbeat goes out; node 3's answer starts the snapshot
    c.deliver(drop=lambda m: isinstance(m, InstallSnapshot) and m.offset > 0)
    assert pr.state == "snapshot"
    index = pr.snap.meta.index

    def chunks_after(message):
        c.sent.clear()
        leader.step(message)
        c.process(1)
        return [m for m in c.sent if isinstance(m, InstallSnapshot)]
    assert pr.snap_offset == 64  # chunk 0 arrived; chunk 64 (dropped) was sent
    assert [m.offset for m in chunks_after(SnapshotResponse(term, 3, 1, index, 128))] == [
        128]  # as if 64 arrived after all: the next
    assert chunks_after(SnapshotResponse(term, 3, 1, index, 128)) == []  # a duplicate answer
    assert chunks_after(HeartbeatResponse(term, 3, 1, b"")) == []  # chunks flow: none more
    resent = chunks_after(HeartbeatResponse(term, 3, 1, b""))  # a quiet beat: resend
    assert [m.offset for m in resent] == [128]
    # a follower that started again says it is behind: nothing at once, the next quiet
    # heartbeat sends from where it is
    assert chunks_after(SnapshotResponse(term, 3, 1, index, 0)) == []
    assert [m.offset for m in chunks_after(HeartbeatResponse(term, 3, 1, b""))] == [0]
    c2 = _lagging_cluster(chunk=64, unsafe_snapshot_retransmit=True)  # the planted twin
    c2.restart(3)
    c2.tick(1)
    c2.deliver(drop=lambda m: isinstance(m, InstallSnapshot) and m.offset > 0)
    pr2 = c2.node(1).tracker.progress[3]
    c2.node(1).step(SnapshotResponse(c2.node(1).term, 3, 1, pr2.snap.meta.index, 64))
    c2.sent.clear()
    c2.node(1).step(HeartbeatResponse(c2.node(1).term, 3, 1, b""))
    c2.process(1)
    assert [m for m in c2.sent if isinstance(m, InstallSnapshot)]
