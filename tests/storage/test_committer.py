"""GroupCommitter: one write per reactor turn, one write in flight, failures, metrics."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.python.failure import Failure

from tests.storage.util import er, hs, snap
from ursula.storage.committer import CommitterClosed, GroupCommitter
from ursula.storage.journal import FSYNC_NEVER, Journal, recover


class FakeReactor(task.Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class ManualPool:
    """A thread pool that runs nothing until told to (synchronously, in this thread)."""

    def __init__(self):
        self.calls = []

    def callInThreadWithCallback(self, on_result, func, *args, **kwargs):
        self.calls.append((on_result, func, args, kwargs))

    def run_one(self, at: int = 0):
        on_result, func, args, kwargs = self.calls.pop(at)
        try:
            result = func(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class CountingJournal(Journal):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batch_sizes = []

    def write_batch(self, records):
        self.batch_sizes.append(len(records))
        return super().write_batch(records)


@pytest.fixture
def env(tmp_path):
    journal = CountingJournal(tmp_path, fsync=FSYNC_NEVER)
    reactor, pool = FakeReactor(), ManualPool()
    fsyncs, batches = [], []
    committer = GroupCommitter(journal, reactor, pool, fsync_observer=fsyncs.append,
                               batch_observer=lambda n, r: batches.append((n, r)))
    yield journal, reactor, pool, committer, fsyncs, batches
    journal.close()


def fired(d):
    out = []
    d.addBoth(out.append)
    return out


def test_appends_of_one_turn_share_one_write(env, tmp_path):
    journal, reactor, pool, c, fsyncs, batches = env
    ds = [fired(c.append([er(g, 1, 2), hs(g, 1, 0, 2)])) for g in range(10)]
    assert pool.calls == []  # nothing until the turn ends
    reactor.advance(0)
    assert len(pool.calls) == 1
    assert all(d == [] for d in ds)  # not durable yet
    pool.run_one()
    assert journal.batch_sizes == [20]
    assert all(d == [None] for d in ds)
    assert (c.batches, c.records) == (1, 20)
    assert c.bytes_written == os.path.getsize(journal.segments()[0]) > 0
    assert batches == [(c.bytes_written, 20)] and fsyncs == [0.0]
    assert c.idle


def test_one_write_in_flight_and_the_next_batch_forms_meanwhile(env):
    journal, reactor, pool, c, _, _ = env
    a = fired(c.append([er(1, 1, 1)]))
    reactor.advance(0)
    assert len(pool.calls) == 1
    # three more turns while the first write is in flight
    b = [fired(c.append([er(1, i, i)])) for i in (2, 3)]
    reactor.advance(0)
    b.append(fired(c.append([er(1, 4, 4)])))
    reactor.advance(0)
    assert len(pool.calls) == 1 and journal.batch_sizes == []
    pool.run_one()
    assert a == [None] and all(d == [] for d in b)
    assert len(pool.calls) == 1  # the next batch started at once
    pool.run_one()
    assert journal.batch_sizes == [1, 3]
    assert all(d == [None] for d in b)


def test_durable_callback_can_append_again(env):
    journal, reactor, pool, c, _, _ = env
    second = []

    def again(_):
        second.append(fired(c.append([er(1, 2, 2)])))

    c.append([er(1, 1, 1)]).addCallback(again)
    reactor.advance(0)
    pool.run_one()
    assert len(pool.calls) == 1
    pool.run_one()
    assert second[0] == [None] and journal.batch_sizes == [1, 1]


def test_empty_append_is_a_barrier(env):
    _, reactor, pool, c, _, _ = env
    assert fired(c.append([])) == [None]  # idle: already durable
    first = fired(c.append([er(1, 1, 1)]))
    reactor.advance(0)
    barrier = fired(c.append([]))
    assert barrier == []
    pool.run_one()
    assert first == [None] and barrier == [None]
    assert pool.calls == []


def test_installed_snapshot_and_release_are_ordered_with_batches(env, tmp_path):
    journal, reactor, pool, c, _, _ = env
    w = fired(c.append([er(1, 1, 5)]))
    s = fired(c.save_snapshot(1, snap(5), replace=True))
    w2 = fired(c.append([er(1, 6, 6)]))
    reactor.advance(0)
    pool.run_one()  # batch 1
    assert w == [None] and s == []
    pool.run_one()  # snapshot
    assert s[0].meta.index == 5
    pool.run_one()  # batch 2
    assert w2 == [None]
    c.compact(1, 5)
    rel = fired(c.release_segments())
    reactor.advance(0)
    pool.run_one()
    assert rel == [[]]  # only the active segment exists
    assert journal.snapshot_ref(1).meta.index == 5


def test_own_snapshot_is_written_beside_the_batches(env):
    """A group's own snapshot (of durable entries) does not wait for the batch in flight, and
    the batches behind it do not wait for it; close() waits for both."""
    journal, reactor, pool, c, _, _ = env
    first = fired(c.append([er(1, 1, 5)]))
    reactor.advance(0)
    pool.run_one()
    assert first == [None]
    w = fired(c.append([er(1, 6, 6)]))
    reactor.advance(0)  # batch 2 in flight
    s = fired(c.save_snapshot(1, snap(5)))  # queued in the pool at once, beside batch 2
    assert len(pool.calls) == 2
    w3 = fired(c.append([er(1, 7, 7)]))
    closed = fired(c.close())
    pool.run_one()  # batch 2
    assert w == [None] and s == []
    assert len(pool.calls) == 2  # the snapshot, then batch 3 (started at once)
    pool.run_one(at=1)  # batch 3, before the snapshot is done
    assert w3 == [None] and s == [] and closed == []
    pool.run_one()  # the snapshot
    assert s[0].meta.index == 5 and closed == [None]
    assert journal.snapshot_ref(1).meta.index == 5


def test_refused_snapshot_fails_alone(env):
    _, reactor, pool, c, _, _ = env
    c.append([er(1, 1, 5)])
    reactor.advance(0)
    pool.run_one()
    bad = fired(c.save_snapshot(1, snap(0)))
    reactor.advance(0)
    pool.run_one()
    assert isinstance(bad[0], Failure) and bad[0].check(ValueError)
    ok = fired(c.append([er(1, 6, 6)]))
    reactor.advance(0)
    pool.run_one()
    assert ok == [None]


def test_write_failure_fails_everything_after(env):
    journal, reactor, pool, c, _, _ = env

    def boom(records):
        raise OSError(28, "No space left on device")

    journal.write_batch = boom
    a = fired(c.append([er(1, 1, 1)]))
    reactor.advance(0)
    b = fired(c.append([er(1, 2, 2)]))
    pool.run_one()
    assert isinstance(a[0], Failure) and a[0].check(OSError)
    assert isinstance(b[0], Failure) and b[0].check(OSError)
    later = fired(c.append([er(1, 3, 3)]))
    assert later[0].check(OSError)
    for d in (a, b, later):
        d[0].trap(OSError)


def test_close_drains_then_refuses(env):
    _, reactor, pool, c, _, _ = env
    a = fired(c.append([er(1, 1, 1)]))
    closed = fired(c.close())
    reactor.advance(0)
    assert closed == []
    pool.run_one()
    assert a == [None] and closed == [None]
    late = fired(c.append([er(1, 2, 2)]))
    assert late[0].check(CommitterClosed)
    late[0].trap(CommitterClosed)


@pytest_twisted.inlineCallbacks
def test_real_reactor_and_thread_pool(tmp_path):
    from twisted.internet import defer, reactor
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(minthreads=1, maxthreads=1, name="journal-test")
    pool.start()
    journal = CountingJournal(tmp_path)  # fsync="always"
    seconds = []
    c = GroupCommitter(journal, reactor, pool, fsync_observer=seconds.append)
    try:
        yield defer.gatherResults([c.append([er(g, 1, 3), hs(g, 1, 1, 3)]) for g in range(50)])
        yield c.append([er(0, 4, 4)])
        ref = yield c.save_snapshot(0, snap(4))
        assert ref.meta.index == 4
        yield c.close()
    finally:
        pool.stop()
        journal.close()
    assert journal.batch_sizes == [100, 1]  # (the snapshot writes its own record)
    assert len(seconds) == 2 and all(s >= 0 for s in seconds)
    r = recover(tmp_path)
    assert len(r.groups) == 50 and r.groups[0].snapshot == snap(4)
    assert [e.index for e in r.groups[7].entries] == [1, 2, 3]
