"""Hypothesis: random schedules of ticks, lossy/reordered/duplicated delivery, proposals,
crashes, restarts and snapshots keep Raft's safety properties on a small cluster."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.raft.harness import Cluster
from ursula.raft import NotLeader, ProposalDropped

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(1, 3), st.integers(1, 12)),
        st.tuples(st.just("deliver"), st.integers(0, 40), st.integers(0, 2**16)),
        st.tuples(st.just("propose"), st.integers(1, 3), st.integers(0, 9)),
        st.tuples(st.just("crash"), st.integers(1, 3), st.just(0)),
        st.tuples(st.just("snapshot"), st.integers(1, 3), st.integers(0, 3)),
        st.tuples(st.just("read"), st.integers(1, 3), st.integers(0, 9)),
    ),
    max_size=80,
)


def check(c: Cluster, leaders_by_term: dict, committed_log: dict) -> None:
    for i in c.ids:
        n = c.nodes[i]
        if n is None:
            continue
        if n.role == "leader":
            assert leaders_by_term.setdefault(n.term, i) == i, "two leaders in one term"
        # the applied sequence of every replica is a prefix of one global sequence
        for k, data in enumerate(c.applied[i]):
            assert committed_log.setdefault(k, data) == data, "replicas applied different data"
    # log matching between every pair of live nodes
    live = [c.node(i) for i in c.ids if c.nodes[i] is not None]
    for a in live:
        for b in live:
            if a.id >= b.id:
                continue
            hi = min(a.log.last_index(), b.log.last_index())
            lo = max(a.log.first_index(), b.log.first_index())
            match = None
            for idx in range(hi, lo - 1, -1):
                if a.log.term(idx) == b.log.term(idx):
                    match = idx
                    break
            if match is not None:
                for idx in range(lo, match + 1):
                    assert a.log.term(idx) == b.log.term(idx), "log matching violated"


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), ACTIONS)
def test_random_schedules_are_safe_and_heal(seed, actions):
    c = Cluster(3, seed=seed, election_tick=6)
    rng = random.Random(seed)
    leaders_by_term: dict = {}
    committed_log: dict = {}
    counter = 0
    for act, a, b in actions:
        if act == "tick":
            if c.nodes[a] is not None:
                for _ in range(b):
                    c.node(a).tick()
                c.process(a)
        elif act == "deliver":
            r = random.Random(b)
            for _ in range(a):
                if not c.queue:
                    break
                m = c.queue.pop(r.randrange(len(c.queue)))
                roll = r.random()
                if roll < 0.15 or c.nodes.get(m.dst) is None:
                    continue  # lost
                if roll > 0.9:
                    c.queue.append(m)  # duplicated
                c.node(m.dst).step(m)
                c.process(m.dst)
        elif act == "propose":
            if c.nodes[a] is not None:
                counter += 1
                try:
                    c.node(a).propose(b"%d-%d" % (counter, b))
                except (NotLeader, ProposalDropped):
                    pass
                c.process(a)
        elif act == "crash":
            if c.nodes[a] is not None:
                c.crash(a)
            else:
                c.restart(a)
        elif act == "snapshot":
            if c.nodes[a] is not None and c.applied_index[a] > c.storages[a].snapshot().meta.index:
                c.snapshot_and_compact(a, keep=b)
        elif act == "read":
            if c.nodes[a] is not None:
                c.node(a).read_index(b"r%d" % rng.randrange(10**9))
                c.process(a)
        check(c, leaders_by_term, committed_log)
    # heal: everyone up, reliable network; the cluster must elect and commit again
    for i in c.ids:
        if c.nodes[i] is None:
            c.restart(i)
    for _ in range(60):
        c.tick_all(1)
        if len(c.leaders()) == 1:
            break
    assert len(c.leaders()) == 1
    ldr = c.leaders()[0]
    c.propose(ldr, b"final")
    c.tick_all(3)
    check(c, leaders_by_term, committed_log)
    assert all(c.applied[i][-1:] == [b"final"] for i in c.ids)
    assert c.applied[1] == c.applied[2] == c.applied[3]
