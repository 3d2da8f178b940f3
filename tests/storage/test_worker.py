"""``SerialWorker``: the journal's own thread runs jobs in order, hands back results and
exceptions, and works under ``deferToThreadPool`` as a pool would."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThreadPool

from ursula.storage.worker import SerialWorker


def test_jobs_run_in_order_on_one_thread_and_report_results_and_errors():
    worker = SerialWorker().start()
    done = threading.Event()
    seen, results = [], []

    def job(n):
        seen.append((n, threading.current_thread().name))
        if n == 3:
            raise ValueError("three")
        return n * 10

    try:
        for n in range(6):
            worker.callInThreadWithCallback(lambda ok, r: results.append((ok, r)), job, n)
        worker.callInThreadWithCallback(lambda ok, r: done.set(), lambda: None)
        assert done.wait(5)
    finally:
        worker.stop()
    assert [n for n, _ in seen] == list(range(6))
    assert {name for _, name in seen} == {"ursula-journal"}
    assert [r for r in results if r[0]] == [(True, 0), (True, 10), (True, 20), (True, 40),
                                            (True, 50)]
    failed = [r for ok, r in results if not ok]
    assert len(failed) == 1 and isinstance(failed[0], ValueError)


def test_a_stopped_worker_refuses_jobs():
    worker = SerialWorker().start()
    worker.stop()
    assert not worker.running
    with pytest.raises(RuntimeError):
        worker.callInThreadWithCallback(lambda ok, r: None, lambda: None)


@pytest_twisted.inlineCallbacks
def test_it_serves_defer_to_thread_pool():
    worker = SerialWorker().start()
    try:
        value = yield deferToThreadPool(reactor, worker, lambda a, b: a + b, 2, b=3)
        assert value == 5
        with pytest.raises(ZeroDivisionError):
            yield deferToThreadPool(reactor, worker, lambda: 1 / 0)
    finally:
        worker.stop()
