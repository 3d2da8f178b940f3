"""``SerialWorker``: one thread of its own that runs the journal's writes, one after another.

The group committer has at most one journal operation in flight, so it needs one thread, not a
pool. Twisted's reactor pool costs a ``Team`` hand-off, a context copy and a
``Condition.notify`` per job on the reactor thread (seen in py-spy under append load) and is
shared with the cold tier's uploads; this worker is a ``queue.SimpleQueue`` and a loop. It has
the one method of a thread pool that ``twisted.internet.threads.deferToThreadPool`` calls,
``callInThreadWithCallback``, so the committer uses it as it would use a pool.

May import: the standard library.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class SerialWorker:
    def __init__(self, name: str = "ursula-journal") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> SerialWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Run what is queued, then end the thread (waits up to ``timeout`` seconds)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(_STOP)
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None],  # noqa: N802
                                 fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` in the worker's thread after the jobs before it, then
        ``on_result(True, result)`` or ``on_result(False, exception)`` there (as Twisted's
        ``ThreadPool`` does, with the exception instead of a ``Failure``;
        ``deferToThreadPool`` hands either back to the reactor)."""
        if self._thread is None:
            raise RuntimeError(f"{self.name}: the worker is not running")
        self._jobs.put((on_result, fn, args, kwargs))

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            on_result, fn, args, kwargs = job
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # handed back, never raised in this thread
                on_result(False, error)
            else:
                on_result(True, result)
