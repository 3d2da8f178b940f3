"""The group driver on its own: a tiny synchronous cluster of GroupDrivers with hand-delivered
messages and hand-completed writes, so each test decides exactly which fsync is done when."""

from __future__ import annotations

import random

import pytest

from ursula.raft import LEADER, AppendEntries, MemoryStorage, VoteRequest, VoteResponse
from ursula.replica import GroupDriver, Rejection, SnapshotPolicy
from ursula.stream import commands as C
from ursula.stream import encode_command

CT = "text/plain"


class Drivers:
    def __init__(self, n: int = 3, **kw) -> None:
        self.ids = list(range(1, n + 1))
        self.storages = {i: MemoryStorage(self.ids) for i in self.ids}
        self.d = {i: self._make(i, **kw) for i in self.ids}
        self.inflight: dict[int, object] = {}  # node -> Work being written
        self.net: list = []
        self.outcomes: dict[object, object] = {}
        self.reads: list = []
        self.now = 1000
        self.drop = lambda m: False
        self.drop = lambda m: False

    def _make(self, i: int, **kw) -> GroupDriver:
        from ursula.raft import Config
        return GroupDriver(0, self.storages[i], Config(id=i, election_tick=10),
                           random.Random(i), **kw)

    def turn(self, i: int) -> None:
        """One reactor turn of node i: flush proposals, start the next write."""
        d = self.d[i]
        for token, rejection in d.flush(self.now):
            self.outcomes[token] = rejection
        if i in self.inflight:
            return
        work = d.ready()
        if work is not None:
            self.inflight[i] = work
            self.net.extend(work.send_now)
            if work.applied_now is not None:
                self._carry_out(work.applied_now)

    def fsync(self, i: int) -> None:
        """Node i's write is durable."""
        del self.inflight[i]
        out = self.d[i].persisted()
        self.net.extend(out.messages)
        self._carry_out(out)
        if out.snapshot is not None:
            self.d[i].snapshot_saved(out.snapshot)

    def _carry_out(self, out) -> None:
        for token, result in out.outcomes:
            self.outcomes[token] = result
        self.reads.extend(out.reads)

    def deliver(self, keep=lambda m: False) -> None:
        pending, self.net = self.net, []
        for m in pending:
            if self.drop(m):
                continue
            if keep(m):
                self.net.append(m)
            else:
                self.d[m.dst].step(m)

    def settle(self, rounds: int = 30, hold=()) -> None:
        for _ in range(rounds):
            for i in self.ids:
                self.turn(i)
            for i in list(self.inflight):
                if i not in hold:
                    self.fsync(i)
            self.deliver()

    def elect(self, i: int = 1) -> GroupDriver:
        self.d[i].campaign()
        self.settle()
        assert self.d[i].is_leader
        return self.d[i]


def append(body: bytes, stream: str = "s") -> bytes:
    return encode_command(C.Append("_default", stream, CT, body))


def create(stream: str = "s") -> bytes:
    return encode_command(C.CreateStream("_default", stream, CT))


def test_leader_sends_entries_before_its_own_fsync_and_commits_on_followers_fsyncs():
    c = Drivers()
    leader = c.elect(1)
    assert leader.propose("create", create()) is None
    c.turn(1)
    work = c.inflight[1]
    assert work.entries and any(isinstance(m, AppendEntries) and m.entries
                                for m in work.send_now), "entries not sent in parallel"
    c.deliver()
    # the followers fsync and ack; the leader's own write is still in flight
    for i in (2, 3):
        c.turn(i)
        assert not c.inflight[i].send_now, "a follower acked before its write was durable"
        c.fsync(i)
    c.deliver()
    assert leader.node.committed == c.storages[2].last_index(), "2 of 3 fsyncs commit"
    assert "create" not in c.outcomes  # answered only once the leader applies it
    c.fsync(1)
    c.settle()
    assert c.outcomes["create"].created


def test_leader_alone_is_not_a_quorum_before_a_follower_fsyncs():
    c = Drivers()
    leader = c.elect(1)
    leader.propose("a", create())
    c.turn(1)
    c.fsync(1)  # the leader's own copy is durable
    c.deliver(keep=lambda m: True)  # nothing reaches the followers
    c.turn(1)
    assert leader.node.committed < leader.node.log.last_index()
    assert "a" not in c.outcomes
    c.deliver()
    c.settle()
    assert c.outcomes["a"].created


def test_a_candidate_sends_its_votes_only_after_its_term_and_vote_are_durable():
    c = Drivers()
    c.d[2].campaign()
    c.turn(2)
    work = c.inflight[2]
    assert work.hard_state is not None and work.hard_state.vote == 2 or \
        work.hard_state is None  # pre-vote does not change the term
    assert not work.send_now
    c.fsync(2)
    assert any(isinstance(m, VoteRequest) for m in c.net)
    c.deliver()
    for i in (1, 3):
        c.turn(i)
        assert not any(isinstance(m, VoteResponse) for m in c.inflight[i].send_now)
        c.fsync(i)


def test_parallel_write_can_be_switched_off():
    c = Drivers(parallel_write=False)
    leader = c.elect(1)
    leader.propose("a", create())
    c.turn(1)
    assert c.inflight[1].send_now == []


def test_a_request_id_is_applied_once_and_answered_with_its_first_outcome():
    c = Drivers()
    leader = c.elect(1)
    leader.propose("c", create())
    c.settle()
    leader.propose("first", append(b"x"), request_id="n2:7")
    c.settle()
    leader.propose("again", append(b"x"), request_id="n2:7")  # a re-routed retry
    leader.propose("other", append(b"y"), request_id="n2:8")
    c.settle()
    first, again = c.outcomes["first"], c.outcomes["again"]
    assert (again.start_offset, again.next_offset) == (first.start_offset, first.next_offset)
    for i in c.ids:
        assert c.d[i].machine.read("_default", "s", 0, 100, c.now).data == b"xy"


def test_a_follower_rejects_proposals_and_names_the_leader():
    c = Drivers()
    c.elect(1)
    rejection = c.d[2].propose("p", create())
    assert rejection == Rejection("not_leader", "not the leader", 1)


def test_one_entry_per_turn_for_every_proposal_of_the_turn():
    c = Drivers()
    leader = c.elect(1)
    last = leader.node.log.last_index()
    leader.propose("c", create())
    for k in range(5):
        leader.propose(k, append(b"%d" % k))
    c.settle()
    assert leader.node.log.last_index() == last + 1
    assert [c.outcomes[k].next_offset for k in range(5)] == [1, 2, 3, 4, 5]


def test_proposals_made_while_a_write_is_in_flight_wait_and_become_one_entry():
    c = Drivers()
    leader = c.elect(1)
    leader.propose("c", create())
    c.turn(1)  # the create's entry is being written
    last = leader.node.log.last_index()
    for k in range(5):  # five turns while that write is in flight
        leader.propose(k, append(b"%d" % k))
        assert leader.holding and not leader.has_work()
        c.turn(1)
    assert leader.node.log.last_index() == last and leader.queued == 5  # held, not proposed
    c.settle()
    assert leader.node.log.last_index() == last + 1  # all five in one entry
    assert [c.outcomes[k].next_offset for k in range(5)] == [1, 2, 3, 4, 5]


def test_held_proposals_are_proposed_once_they_reach_hold_bytes():
    c = Drivers(hold_bytes=100)
    leader = c.elect(1)
    leader.propose("c", create())
    c.turn(1)
    last = leader.node.log.last_index()
    leader.propose(0, append(b"x" * 10))
    c.turn(1)
    assert leader.node.log.last_index() == last  # under the cap: held
    leader.propose(1, append(b"y" * 200))
    assert not leader.holding
    c.turn(1)
    assert leader.node.log.last_index() == last + 1 and leader.queued == 0
    c.settle()
    assert [c.outcomes[k].next_offset for k in range(2)] == [10, 210]


def test_hold_bytes_zero_proposes_every_turn():
    c = Drivers(hold_bytes=0)
    leader = c.elect(1)
    leader.propose("c", create())
    c.turn(1)
    last = leader.node.log.last_index()
    for k in range(3):
        leader.propose(k, append(b"%d" % k))
        c.turn(1)
    assert leader.node.log.last_index() == last + 3


def _leader_with_an_uncommitted_entry(**kw):
    """Node 1 leads; its create entry is durable on it, the followers have not acked it."""
    c = Drivers(**kw)
    leader = c.elect(1)
    leader.propose("c", create())
    c.turn(1)
    c.fsync(1)
    c.net.clear()  # the AppendEntries never reach the followers (for now)
    assert leader.node.committed < leader.node.log.last_index() and not leader.busy
    return c, leader


def test_proposals_wait_while_the_leaders_entry_is_uncommitted_and_become_one_entry():
    c, leader = _leader_with_an_uncommitted_entry()
    last = leader.node.log.last_index()
    for k in range(5):  # five turns: no write in flight, but an entry not committed yet
        leader.propose(k, append(b"%d" % k))
        assert leader.holding and not leader.has_work()
        c.turn(1)
    assert leader.node.log.last_index() == last and leader.queued == 5
    leader.node.tick()  # a heartbeat: the followers catch up, the entry commits
    c.settle()
    assert leader.node.log.last_index() == last + 1  # all five in one entry
    assert [c.outcomes[k].next_offset for k in range(5)] == [1, 2, 3, 4, 5]


def test_inflight_entries_zero_proposes_after_each_local_write():
    c, leader = _leader_with_an_uncommitted_entry(inflight_entries=0)
    last = leader.node.log.last_index()
    leader.propose(0, append(b"x"))
    assert not leader.holding
    c.turn(1)
    assert leader.node.log.last_index() == last + 1


def test_a_leader_that_steps_down_does_not_hold_its_queue():
    c, leader = _leader_with_an_uncommitted_entry()
    leader.propose("late", append(b"x"))
    node = leader.node
    node.step(AppendEntries(node.term + 1, 2, 1, 0, 0, (), 0))  # node 2 leads a newer term
    assert not leader.is_leader and not leader.holding
    c.turn(1)
    assert c.outcomes["late"].kind == "not_leader"


def test_reads_are_released_once_applied_and_fail_on_a_follower_without_a_leader():
    c = Drivers()
    assert c.d[1].read("r0") == Rejection("not_leader", "no known leader", 0)
    leader = c.elect(1)
    leader.propose("c", create())
    c.settle()
    assert c.d[2].read("r2") is None  # forwarded to the leader as a ReadIndex request
    assert leader.read("r1") is None
    c.settle()
    assert sorted(c.reads) == ["r1", "r2"]


def test_a_deposed_leader_rejects_its_pending_proposals():
    c = Drivers()
    leader = c.elect(1)
    leader.propose("c", create())
    c.turn(1)
    c.fsync(1)
    c.net.clear()  # its entry never leaves the node
    cut = lambda m: m.src == 1 or m.dst == 1  # noqa: E731
    for _ in range(40):  # nodes 2 and 3 stop hearing from 1 and elect a new leader
        for i in (2, 3):
            c.d[i].tick()
        c.drop = cut
        c.settle(rounds=1)
    c.drop = lambda m: False
    for _ in range(3):  # the old leader hears of the new term
        for i in c.ids:
            c.d[i].tick()
        c.settle()
    assert (c.d[2].is_leader or c.d[3].is_leader) and not leader.is_leader
    assert isinstance(c.outcomes["c"], Rejection) and c.outcomes["c"].kind == "retry"


def test_snapshots_follow_the_policy_and_compact_the_log():
    c = Drivers(policy=SnapshotPolicy(every=5, keep=2, log_bytes=1 << 30))
    leader = c.elect(1)
    leader.propose("c", create())
    c.settle()
    for k in range(8):
        leader.propose(k, append(b"z"))
        c.settle()
    storage = c.storages[1]
    assert storage.snapshot().meta.index >= 5
    assert storage.first_index() > 1
    restored = GroupDriver(0, storage, __import__("ursula.raft", fromlist=["Config"]).Config(
        id=1), random.Random(0))
    assert restored.machine.read("_default", "s", 0, 100, c.now).data.startswith(b"z")


@pytest.mark.parametrize(("keep", "keep_bytes", "kept_at_most"), [
    (50, 1 << 30, 50),  # by count only: everything since the start fits
    (50, 2500, 2),      # 1 KiB appends: two fit in 2500 bytes
    (50, 100, 0),       # not even one
])
def test_kept_entries_behind_a_snapshot_are_bounded_by_bytes_too(keep, keep_bytes, kept_at_most):
    c = Drivers(policy=SnapshotPolicy(every=8, keep=keep, log_bytes=1 << 30,
                                      keep_bytes=keep_bytes))
    leader = c.elect(1)
    leader.propose("c", create())
    c.settle()
    for k in range(12):
        leader.propose(k, append(b"z" * 1024))
        c.settle()
    storage = c.storages[1]
    snap = storage.snapshot().meta.index
    assert snap >= 8
    kept = snap - (storage.first_index() - 1)  # entries at or below the snapshot still held
    assert kept <= kept_at_most
    held = sum(len(e.data) for e in storage.entries(storage.first_index(), snap + 1))
    assert held <= keep_bytes
    if keep_bytes == 1 << 30:
        assert storage.first_index() == 1  # nothing compacted: all within the count


def test_snapshot_now_takes_one_at_once_and_compacts_everything():
    c = Drivers(policy=SnapshotPolicy(every=1000, keep=100, log_bytes=1 << 30))
    leader = c.elect(1)
    leader.propose("c", create())
    c.settle()
    for k in range(5):
        leader.propose(k, append(b"z"))
        c.settle()
    storage = c.storages[1]
    assert storage.snapshot().meta.index == 0  # the policy has not asked for one
    snap = leader.snapshot_now()
    assert snap is not None and snap.meta.index == leader.applied
    assert leader.snapshot_now() is None  # one at a time
    leader.snapshot_saved(snap)
    assert storage.first_index() == snap.meta.index + 1  # no entries kept
    assert leader.snapshot_now() is None  # nothing new applied since


def test_unknown_broken_rule_is_refused():
    with pytest.raises(ValueError, match="unknown broken rules"):
        Drivers(broken=frozenset({"no_such_rule"}))


def test_fail_all_hands_back_every_waiting_token():
    c = Drivers()
    leader = c.elect(1)
    leader.propose("queued", create())
    leader.read("read")
    failed = dict(leader.fail_all(Rejection("shutdown", "stopping")))
    assert set(failed) == {"queued", "read"}
    assert leader.node.role == LEADER
