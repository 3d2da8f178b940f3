"""The admin operations of ``RaftCore`` on a fake 3-node network (``tests.core.harness``):
leadership transfer, drain / undrain, snapshots on demand and the backup image."""

from __future__ import annotations

import pytest

from tests.core.harness import BUCKET, OCTETS, Harness
from ursula.core.cluster import AdminError
from ursula.stream import StreamMachine
from ursula.stream import commands as C


@pytest.fixture
def h():
    harness = Harness(nodes=3, groups=4).start()
    harness.elect()
    yield harness
    harness.stop()


def _result(h, d, timeout=10.0):
    out = []
    d.addBoth(out.append)
    h.run_until(lambda: out, timeout)
    return out[0]


def _led_by(h, node):
    return [g for g in range(h.group_count) if h.leader(g) == node]


def test_transfer_leader_moves_a_group_to_the_node_asked(h):
    leader = h.leader(0)
    to = next(n for n in h.cores if n != leader)
    assert _result(h, h.cores[leader].transfer_leader(0, to)) == to
    assert h.leader(0) == to
    assert all(core.groups[0].node.leader == to for core in h.cores.values())


def test_transfer_leader_refusals_say_why(h):
    leader = h.leader(1)
    follower = next(n for n in h.cores if n != leader)
    refused = _result(h, h.cores[follower].transfer_leader(1, follower))
    assert refused.check(AdminError) and refused.value.status == 409
    assert refused.value.leader == leader and f"leader: {leader}" in str(refused.value)
    not_voter = _result(h, h.cores[leader].transfer_leader(1, 9))
    assert not_voter.value.status == 400 and "not a voter" in str(not_voter.value)
    unknown = _result(h, h.cores[leader].transfer_leader(7, follower))
    assert unknown.value.status == 404
    h.net.disconnect(leader, follower)
    unreachable = _result(h, h.cores[leader].transfer_leader(1, follower))
    assert unreachable.value.status == 503 and "not connected" in str(unreachable.value)


def test_drain_moves_every_leadership_off_and_keeps_it_off_until_undrain(h):
    node = max(h.cores, key=lambda n: len(_led_by(h, n)))
    assert _led_by(h, node)
    core = h.cores[node]
    assert _result(h, core.drain(timeout_s=5)) == []
    assert _led_by(h, node) == [] and core.draining
    # the drained node is made to win an election anyway (TimeoutNow from the leader): it
    # hands the group over again at once
    won = []
    original = core.leader_changed
    core.leader_changed = lambda group: (won.append(group.group_id) if group.is_leader
                                         else None, original(group))
    _result(h, h.cores[h.leader(2)].transfer_leader(2, node))
    h.run_until(lambda: 2 in won and h.leader(2) not in (None, node), 5)
    h.run(2.0)
    assert _led_by(h, node) == []
    core.undrain()
    assert not core.draining
    assert _result(h, h.cores[h.leader(2)].transfer_leader(2, node)) == node
    h.run(2.0)
    assert h.leader(2) == node  # kept, now that it is not draining


def test_drain_gives_up_after_its_timeout_without_peers(h):
    node = h.leader(0)
    for other in h.cores:
        if other != node:
            h.net.disconnect(node, other)
    led = _result(h, h.cores[node].drain(timeout_s=0.3))
    assert 0 in led  # nobody to hand group 0 to: still led here, and the node says so


def test_a_node_of_its_own_cannot_drain(h):
    from twisted.internet import task

    from ursula.core.cluster import RaftCore
    from ursula.core.persist import MemoryPersister
    from ursula.raft import MemoryStorage
    alone = RaftCore(task.Clock(), 1, 1, {0: MemoryStorage([1])}, MemoryPersister())
    failure = []
    alone.drain().addErrback(failure.append)
    assert failure[0].value.status == 409


def test_snapshot_group_is_durable_before_it_answers(h):
    leader = h.leader(3)
    stream = h.stream_in(3)
    assert _result(h, h.cores[leader].submit(C.CreateStream(BUCKET, stream, OCTETS))).error is None
    node = next(n for n in h.cores if n != leader)  # any replica can snapshot itself
    group = h.cores[node].groups[3]
    h.run_until(lambda: group.applied >= h.cores[leader].groups[3].applied, 5)
    answer = _result(h, h.cores[node].snapshot_group(3))
    assert answer == {"group": 3, "taken": True, "index": group.applied}
    assert group.storage.snapshot().meta.index == group.applied
    again = _result(h, h.cores[node].snapshot_group(3))
    assert again["taken"] is False and again["index"] == answer["index"]


def test_backup_image_on_a_follower_holds_every_acknowledged_append(h):
    leader = h.leader(1)
    stream = h.stream_in(1)
    assert _result(h, h.cores[leader].submit(C.CreateStream(BUCKET, stream, OCTETS))).error is None
    lagging = next(n for n in h.cores if n != leader)
    h.net.disconnect(leader, lagging)  # the append commits without this follower
    producer = C.Producer("p", 0, 0)
    outcome = _result(h, h.cores[leader].submit(
        C.Append(BUCKET, stream, OCTETS, b"acknowledged", producer=producer)))
    assert outcome.error is None
    group = h.cores[lagging].groups[1]
    held = group.machine.streams.get((BUCKET, stream))
    assert held is None or held.tail == 0  # not here yet
    h.net.reconnect(leader, lagging)
    image = _result(h, h.cores[lagging].backup_group(1))  # the barrier waits for it
    assert image["index"] >= h.cores[leader].groups[1].node.committed - 1
    machine = StreamMachine.restore(image["data"])
    read = machine.read(BUCKET, stream, 0, 1 << 20, int(h.now * 1000))
    assert bytes(read.data) == b"acknowledged"
    assert "p" in machine.streams[(BUCKET, stream)].producers  # producers resume from it
