"""Group commit: the Twisted face of the journal.

What lives here: `GroupCommitter`, which collects the records appended during one reactor turn
into one `Journal.write_batch` (one write, one fsync) run off the reactor thread (in the
``writer``: the node gives it a `SerialWorker`, a thread of its own; tests a fake pool), with at
most one journal operation in flight; records that arrive meanwhile form the next batch.  Installed
snapshots (``replace=True``) and segment releases go through the same queue, so they are
ordered with the batches.  A group's own snapshot (``replace=False``: the state at an index
that is durable already) is written beside the queue, in another pool thread, so a large
image never holds up the appends behind it (in the reactor's pool).

This is the only Twisted module of ``ursula.storage``.  May import: the standard library,
Twisted, ursula.raft.messages and ursula.storage.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from ursula.raft.messages import Snapshot
from ursula.storage.journal import Journal, JournalError
from ursula.storage.records import Record


class CommitterClosed(JournalError):
    pass


class _Batch:
    __slots__ = ("records", "waiters")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.waiters: list[defer.Deferred] = []


class _Call:
    __slots__ = ("fn", "args", "kwargs", "waiter")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.waiter: defer.Deferred = defer.Deferred()


class GroupCommitter:
    """Batches appends per reactor turn into single journal writes, off the reactor thread.

    Metrics: the counters `bytes_written`, `batches` and `records` (cumulative), plus optional
    observers called on the reactor thread after every batch: ``fsync_observer(seconds)``
    (wire it to a histogram) and ``batch_observer(bytes, records)``.

    After a failed write every pending and later call fails with the original error: the
    journal may hold part of a batch, so the core must be restarted (recovery cuts it away).
    """

    def __init__(
        self,
        journal: Journal,
        reactor: Any,
        threadpool: Any,
        *,
        writer: Any = None,
        fsync_observer: Callable[[float], None] | None = None,
        batch_observer: Callable[[int, int], None] | None = None,
    ) -> None:
        self.journal = journal
        self.reactor = reactor
        self.threadpool = threadpool  # own snapshots, beside the queue
        # the queue's jobs, one at a time (a SerialWorker in the node; else the pool)
        self.writer = writer if writer is not None else threadpool
        self.fsync_observer = fsync_observer
        self.batch_observer = batch_observer
        self.bytes_written = 0
        self.batches = 0
        self.records = 0
        self._queue: deque[_Batch | _Call] = deque()
        self._inflight = False
        self._scheduled: Any = None
        self._failure: Failure | None = None
        self._closed = False
        self._beside = 0  # own snapshots being written beside the queue
        self._drained: list[defer.Deferred] = []

    # -- public API ------------------------------------------------------------------------------
    def append(self, records: Sequence[Record]) -> defer.Deferred:
        """Queue `records` for the current turn's batch.  The Deferred fires (with None) once
        they, and everything appended before them, are durable."""
        refused = self._refusal()
        if refused is not None:
            return refused
        if not records and not self._queue and not self._inflight:
            return defer.succeed(None)
        tail = self._queue[-1] if self._queue else None
        if not isinstance(tail, _Batch):
            tail = _Batch()
            self._queue.append(tail)
        tail.records.extend(records)
        d: defer.Deferred = defer.Deferred()
        tail.waiters.append(d)
        self._schedule()
        return d

    def save_snapshot(self, group: int, snapshot: Snapshot, *, replace: bool = False
                      ) -> defer.Deferred:
        """`Journal.save_snapshot` in the thread pool; fires with the `SnapshotRef`.

        ``replace=True`` (installed from the leader) runs after everything appended before
        it; ``replace=False`` (the group's own, of applied and so durable entries) runs at
        once, beside the batches (the journal takes its lock only for the reference
        record).  A failure of either fails only that call."""
        if replace:
            return self._call(self.journal.save_snapshot, group, snapshot, replace=True)
        refused = self._refusal()
        if refused is not None:
            return refused
        self._beside += 1
        d = deferToThreadPool(self.reactor, self.threadpool, self.journal.save_snapshot, group,
                              snapshot, replace=False)

        def done(result):
            self._beside -= 1
            if self.idle and self._drained:
                drained, self._drained = self._drained, []
                for waiter in drained:
                    waiter.callback(None)
            return result
        return d.addBoth(done)

    def release_segments(self) -> defer.Deferred:
        """`Journal.release_segments` in the thread pool; fires with the deleted paths."""
        return self._call(self.journal.release_segments)

    def snapshot_data(self, group: int, index: int):
        """`Journal.snapshot_data` (opens one file: runs right here)."""
        return self.journal.snapshot_data(group, index)

    def holding_back(self) -> list[int]:
        """`Journal.holding_back` (bookkeeping only: runs right here)."""
        return self.journal.holding_back()

    def compact(self, group: int, index: int) -> None:
        """`Journal.compact` (bookkeeping only, no I/O: runs right here)."""
        self.journal.compact(group, index)

    def close(self) -> defer.Deferred:
        """Refuse new work; fires when everything queued is done (the journal stays open)."""
        self._closed = True
        if self.idle:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._drained.append(d)
        return d

    @property
    def idle(self) -> bool:
        return not self._queue and not self._inflight and not self._beside

    # -- machinery -------------------------------------------------------------------------------
    def _refusal(self) -> defer.Deferred | None:
        """A failed Deferred if no new work is taken (an earlier write failed, or closed)."""
        if self._failure is not None:
            return defer.fail(self._failure)
        if self._closed:
            return defer.fail(CommitterClosed("committer is closed"))
        return None

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
        refused = self._refusal()
        if refused is not None:
            return refused
        job = _Call(fn, args, kwargs)
        self._queue.append(job)
        self._schedule()
        return job.waiter

    def _schedule(self) -> None:
        # Wait for the end of this reactor turn so that all of its appends share one write.
        if not self._inflight and self._scheduled is None:
            self._scheduled = self.reactor.callLater(0, self._kick)

    def _kick(self) -> None:
        self._scheduled = None
        if self._inflight or not self._queue:
            return
        job = self._queue.popleft()
        self._inflight = True
        if isinstance(job, _Batch):
            if not job.records:  # only barriers: nothing to write
                self._inflight = False
                for w in job.waiters:
                    w.callback(None)
                self._kick_or_drain()
                return
            d = deferToThreadPool(self.reactor, self.writer, self._write, job.records)
            d.addCallbacks(self._batch_done, self._failed, callbackArgs=(job,),
                           errbackArgs=(job.waiters,))
        else:
            d = deferToThreadPool(self.reactor, self.writer, job.fn, *job.args,
                                  **job.kwargs)
            d.addCallbacks(self._call_done, self._failed, callbackArgs=(job,),
                           errbackArgs=([job.waiter],))

    def _write(self, records: list[Record]) -> tuple[int, float]:
        # In the thread pool.
        n = self.journal.write_batch(records)
        return n, self.journal.last_fsync_seconds

    def _batch_done(self, result: tuple[int, float], job: _Batch) -> None:
        nbytes, seconds = result
        self._inflight = False
        self.bytes_written += nbytes
        self.batches += 1
        self.records += len(job.records)
        if self.fsync_observer is not None:
            self.fsync_observer(seconds)
        if self.batch_observer is not None:
            self.batch_observer(nbytes, len(job.records))
        for w in job.waiters:
            w.callback(None)
        self._kick_or_drain()

    def _call_done(self, result: Any, job: _Call) -> None:
        self._inflight = False
        job.waiter.callback(result)
        self._kick_or_drain()

    def _failed(self, failure: Failure, waiters: list[defer.Deferred]) -> None:
        self._inflight = False
        if failure.check(ValueError):
            # Refused before touching the disk (an out-of-date snapshot, a compaction past the
            # snapshot, an oversized record): only this job fails.
            for w in waiters:
                w.errback(failure)
            self._kick_or_drain()
            return
        self._failure = failure
        pending = list(waiters)
        while self._queue:
            job = self._queue.popleft()
            pending.extend(job.waiters if isinstance(job, _Batch) else [job.waiter])
        for w in pending:
            w.errback(failure)
        self._kick_or_drain()

    def _kick_or_drain(self) -> None:
        if self._queue:
            self._kick()
        elif self.idle and self._drained:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)
