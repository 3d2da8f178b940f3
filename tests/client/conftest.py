"""Fixtures of the client tests: a real ``twistd ursula`` node, and the three front ends behind
one harness so that the same scenario (an ``async def`` taking a client) runs on each:

- ``asyncio``: ``ursula_client.aio.AsyncClient`` under ``asyncio.run``;
- ``twisted``: ``ursula_client.twisted.Client`` as a Deferred on the test reactor;
- ``sync``: ``ursula_client.sync.Client`` behind thin async wrappers (each call blocks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
import subprocess
import sys
import threading
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "integration"))

from procs import TWISTD, free_port, stop, wait_until_serving  # noqa: E402

NODE_INI = """[node]
listen = tcp:{port}:interface=127.0.0.1
admin_listen = tcp:{admin}:interface=127.0.0.1
data_dir = {data}
cores = 1
[http]
long_poll_timeout_ms = 500
sse_max_duration_ms = 3000
{extra}"""


class RealNode:
    """One ``twistd -n ursula`` process; ``kill()`` is SIGKILL, ``start()`` starts it again on
    the same port and data directory."""

    def __init__(self, directory: pathlib.Path, extra: str = ""):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "node.ini"
        self.config.write_text(NODE_INI.format(port=self.port, admin=free_port(),
                                               data=directory / "data", extra=extra))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile", "", "--logfile", str(self.directory / "twistd.log"),
             "ursula", "--config", str(self.config)], cwd=self.directory,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until_serving(self.url, self.process)

    def kill(self) -> None:
        import signal
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    """A node shared by the protocol tests (every test uses its own stream names)."""
    real = RealNode(tmp_path_factory.mktemp("client-node"), "[storage]\nfsync = never\n")
    real.start()
    yield real
    real.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- front ends ------------------------------------------------------------------------------

class _SyncAwaitable:
    """Wraps a blocking object so a scenario can ``await`` its calls."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        value = getattr(self._inner, name)
        if not callable(value):
            return value
        if name == "append" and type(self._inner).__name__ == "Producer":
            return lambda *a, **k: asyncio.wrap_future(value(*a, **k))

        async def call(*args, **kwargs):
            args = tuple(a._inner if isinstance(a, _SyncAwaitable) else a for a in args)
            kwargs = {k: v._inner if isinstance(v, _SyncAwaitable) else v
                      for k, v in kwargs.items()}
            return _wrap(value(*args, **kwargs))

        if name in ("stream", "producer", "follow", "subscriptions"):
            def plain(*args, **kwargs):
                args = tuple(a._inner if isinstance(a, _SyncAwaitable) else a for a in args)
                return _wrap(value(*args, **kwargs))
            return plain
        return call

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return next(self._inner)
        except StopIteration:
            raise StopAsyncIteration from None

    async def records(self):
        for record in self._inner.records():
            yield record


def _wrap(value):
    from ursula_client import sync
    if isinstance(value, (sync.Stream, sync.Producer, sync.Follower, sync.Subscriptions)):
        return _SyncAwaitable(value)
    return value


class Frontend:
    name = ""

    def run(self, scenario, base_url, timeout: float = 120.0, **client_options):
        """Run ``scenario(client, frontend)``; a test returns what this returns."""
        raise NotImplementedError

    def sleep(self, seconds: float):
        return asyncio.sleep(seconds)

    def blocking(self, fn, *args):
        """Run a blocking call (kill a process, wait for a node) off the event loop."""
        return asyncio.to_thread(fn, *args)


class AsyncioFrontend(Frontend):
    name = "asyncio"

    def run(self, scenario, base_url, timeout=120.0, **client_options):
        from ursula_client.aio import AsyncClient

        async def main():
            async with AsyncClient(base_url, **client_options) as client:
                return await asyncio.wait_for(scenario(client, self), timeout)
        return asyncio.run(main())

    async def gather(self, *coroutines):
        return await asyncio.gather(*coroutines)


class TwistedFrontend(Frontend):
    name = "twisted"

    def run(self, scenario, base_url, timeout=120.0, **client_options):
        """A Deferred: the test returns it and pytest-twisted waits for it (tests run in the
        reactor's greenlet)."""
        from twisted.internet import defer, reactor

        from ursula_client.twisted import Client

        async def main():
            client = Client(base_url, **client_options)
            try:
                return await scenario(client, self)
            finally:
                await client.close()
        d = defer.Deferred.fromCoroutine(main())
        d.addTimeout(timeout, reactor)
        return d

    def sleep(self, seconds):
        from twisted.internet import reactor
        from twisted.internet.task import deferLater
        return deferLater(reactor, seconds, lambda: None)

    def blocking(self, fn, *args):
        from twisted.internet.threads import deferToThread
        return deferToThread(fn, *args)

    def gather(self, *coroutines):
        from twisted.internet import defer
        return defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in coroutines],
                                   consumeErrors=True).addErrback(lambda f: f.value.subFailure)


class SyncFrontend(Frontend):
    name = "sync"

    def run(self, scenario, base_url, timeout=120.0, **client_options):
        from ursula_client.sync import Client

        with Client(base_url, **client_options) as client:
            async def main():
                return await asyncio.wait_for(scenario(_SyncAwaitable(client), self), timeout)
            return asyncio.run(main())

    async def gather(self, *coroutines):
        """Each coroutine in its own thread (its calls block)."""
        pool = concurrent.futures.ThreadPoolExecutor(len(coroutines))
        try:
            futures = [asyncio.wrap_future(pool.submit(asyncio.run, c)) for c in coroutines]
            return await asyncio.gather(*futures)
        finally:
            pool.shutdown(wait=False)


FRONTENDS = {"asyncio": AsyncioFrontend(), "twisted": TwistedFrontend(),
             "sync": SyncFrontend()}


@pytest.fixture(params=list(FRONTENDS))
def frontend(request) -> Frontend:
    return FRONTENDS[request.param]


@pytest.fixture(params=["asyncio", "twisted"])
def async_frontend(request) -> Frontend:
    return FRONTENDS[request.param]


__all__ = ["RealNode", "unique", "threading"]
