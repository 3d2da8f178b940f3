"""Snapshots, retention and views across the cores of one node (``RoutedCore`` over the local
link): ``view`` answers a stream of the other core, ``StreamInfo`` keeps its snapshot and floor
fields, and a read below the floor fails with the floor on both sides of the link."""

from __future__ import annotations

import pytest
from test_routed import BUCKET, OCTETS, TwoCores, stream_on_core

from ursula.stream import commands as C
from ursula.stream.machine import StreamError


@pytest.fixture
def two():
    cores = TwoCores()
    yield cores
    for raft in cores.rafts.values():
        raft.stop()


def test_views_and_the_floor_cross_the_link(two):
    two.settle()
    for owner in range(2):
        name = stream_on_core(owner, 1)[0]
        core = two.cores[1 - owner]  # through the other core
        assert two.result(core.submit(C.CreateStream(BUCKET, name, OCTETS,
                                                     attrs=b'{"a":1}'))).created
        for piece in (b"ab", b"cd", b"ef"):
            two.result(core.submit(C.Append(BUCKET, name, OCTETS, piece)))
        outcome = two.result(core.submit(C.PublishSnapshot(BUCKET, name, 4, "x/y", b"SNAP")))
        assert outcome.error is None
        assert two.result(core.submit(C.AdvanceRetention(BUCKET, name, 2))).error is None
        info = two.result(core.head(BUCKET, name))
        assert (info.retained, info.snapshot_offset) == (2, 4)
        assert info.snapshot_digest == outcome.payload["digest"]
        view = two.result(core.view(BUCKET, name, "bootstrap", 1024))
        assert view.snapshot == (4, "x/y", info.snapshot_digest, 4)
        assert view.snapshot_blob == b"SNAP" and view.bounds == (6,)
        assert view.updates.data == b"ef" and view.updates.start == 4
        assert two.result(core.view(BUCKET, name, "attrs", 0)).attrs == b'{"a":1}'
        for via in (core, two.cores[owner]):
            with pytest.raises(StreamError) as refused:
                two.result(via.read_applied(BUCKET, name, 0, 10))
            assert refused.value.code == "retained" and refused.value.next_offset == 2
