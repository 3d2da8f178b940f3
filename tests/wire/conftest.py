"""Fixtures for the wire tests: a cluster factory that always stops its transports."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.wire.helpers import Cluster, LogCapture


@pytest.fixture
def clusters():
    made: list[Cluster] = []

    async def make(n: int, **options) -> Cluster:
        cluster = Cluster()
        made.append(cluster)
        return await cluster.start(n, **options)

    yield make
    for cluster in made:
        from twisted.internet import reactor

        stopping = defer.ensureDeferred(cluster.stop())
        stopping.addTimeout(10, reactor)  # a hung close must fail this test, not the next ones
        pytest_twisted.blockon(stopping)


@pytest.fixture
def wire_logs():
    capture = LogCapture()
    yield capture
    capture.close()
