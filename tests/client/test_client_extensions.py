"""Snapshots, retention, bootstrap and attributes against a real ursula node, the same
scenarios on each front end (asyncio/httpx, Twisted/treq, blocking)."""

from __future__ import annotations

import pytest
from conftest import unique

import ursula_client as uc
from ursula_client import START
from ursula_client.core.extensions import snapshot_digest


async def json_stream(client, prefix, n):
    stream = client.stream(unique(prefix))
    await stream.create("application/json")
    ends = [(await stream.append({"n": i})).next_offset for i in range(n)]
    return stream, ends


def test_publish_and_read_snapshots(node, frontend):
    async def scenario(client, fe):
        stream, ends = await json_stream(client, "snap", 4)
        assert await stream.get_snapshot() is None  # none published
        assert await stream.get_snapshot(ends[1]) is None
        published = await stream.publish_snapshot(ends[1], {"sum": 1})
        assert published.offset == ends[1] and published.content_type == "application/json"
        assert published.digest == snapshot_digest("application/json", b'{"sum":1}')
        latest = await stream.get_snapshot()  # the 307, then the blob
        assert latest.offset == ends[1] and latest.value == {"sum": 1}
        assert latest.digest == published.digest and not latest.up_to_date
        assert (await stream.get_snapshot(ends[1])).data == b'{"sum":1}'
        assert await stream.get_snapshot(ends[0]) is None  # only the latest exists
        info = await stream.head()
        assert info.snapshot_offset == ends[1] and info.snapshot_digest == published.digest
        assert info.retained_offset == uc.ZERO
        # the same again is a no-op; other bytes there, an older offset, past the tail: 409
        assert (await stream.publish_snapshot(ends[1], {"sum": 1})).digest == published.digest
        with pytest.raises(uc.SnapshotConflict):
            await stream.publish_snapshot(ends[1], {"sum": 2})
        with pytest.raises(uc.SnapshotConflict) as older:
            await stream.publish_snapshot(ends[0], b"x")
        assert older.value.snapshot_offset == ends[1]
        with pytest.raises(uc.SnapshotConflict):
            await stream.publish_snapshot("0000000000000000_0000000000100000", b"x")
        with pytest.raises(uc.BadRequest):  # not a record boundary
            await stream.publish_snapshot("0000000000000000_0000000000000003", b"x")
        # conditional: only on the current digest
        with pytest.raises(uc.SnapshotMatchFailed):
            await stream.publish_snapshot(ends[2], "state", match="0" * 64)
        text = await stream.publish_snapshot(ends[3], "state", match=published.digest)
        assert text.content_type == "text/plain; charset=utf-8"
        last = await stream.get_snapshot()
        assert last.text == "state" and last.up_to_date and last.offset == ends[3]
        with pytest.raises(uc.SnapshotConflict):  # other bytes at the same offset
            await stream.publish_snapshot(ends[3], b"\x00\xff", match=text.digest,
                                          content_type="application/x-state")
    return frontend.run(scenario, node.url)


def test_snapshot_of_a_missing_stream(node, frontend):
    async def scenario(client, fe):
        missing = client.stream(unique("nosuch"))
        with pytest.raises(uc.StreamNotFound):
            await missing.get_snapshot()
        with pytest.raises(uc.StreamNotFound):
            await missing.publish_snapshot(uc.ZERO, b"x")
        with pytest.raises(uc.StreamNotFound):
            await missing.bootstrap()
    return frontend.run(scenario, node.url)


def test_retention_retained_reads_and_bootstrap(node, frontend):
    async def scenario(client, fe):
        stream, ends = await json_stream(client, "ret", 6)
        with pytest.raises(uc.RetentionConflict):  # no snapshot yet
            await stream.set_retention(ends[1])
        await stream.publish_snapshot(ends[2], {"upto": 3})
        with pytest.raises(uc.RetentionConflict):  # past the latest snapshot
            await stream.set_retention(ends[3])
        assert await stream.set_retention(ends[2]) == ends[2]
        assert await stream.set_retention(ends[2]) == ends[2]  # the same: a no-op
        with pytest.raises(uc.RetentionConflict):  # backwards
            await stream.set_retention(ends[1])
        assert (await stream.head()).retained_offset == ends[2]
        for offset in (START, ends[0]):
            with pytest.raises(uc.Retained) as caught:
                await stream.read(offset)
            assert caught.value.retained_offset == ends[2]
        with pytest.raises(uc.Retained):
            await stream.read_all()
        with pytest.raises(uc.Retained):
            await stream.get_snapshot(ends[0])
        # the documented pattern: on Retained, bootstrap and read on from its next_offset
        boot = await stream.bootstrap()
        assert boot.snapshot.offset == ends[2] and boot.snapshot.value == {"upto": 3}
        assert boot.updates == [{"n": 3}, {"n": 4}, {"n": 5}] and boot.json_mode
        assert boot.next_offset == ends[-1] and boot.up_to_date and not boot.closed
        assert boot.retained_offset == ends[2]
        await stream.append({"n": 6})
        rest = await stream.read(boot.next_offset)
        assert rest.records == [{"n": 6}]
    return frontend.run(scenario, node.url)


def test_bootstrap_of_a_byte_stream_with_and_without_snapshot(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("boot-bytes"))
        await stream.create("text/plain")
        ends = [(await stream.append(piece)).next_offset for piece in ("ab", "--", "xyz")]
        boot = await stream.bootstrap()
        assert boot.snapshot is None and not boot.json_mode
        assert boot.updates == [b"ab", b"--", b"xyz"] and boot.next_offset == ends[-1]
        await stream.publish_snapshot(ends[1], b"AB--", content_type="text/plain")
        await stream.set_retention(ends[1])
        boot = await stream.bootstrap()
        assert boot.snapshot.data == b"AB--" and boot.snapshot.content_type == "text/plain"
        assert boot.updates == [b"xyz"]
        await stream.close()
        closed = await stream.bootstrap()
        assert closed.closed and closed.up_to_date
    return frontend.run(scenario, node.url)


def test_attrs(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("album"), bucket="photos")
        await stream.create("text/plain", attrs={"title": "A", "tags": ["x"]})
        assert await stream.get_attrs() == {"tags": ["x"], "title": "A"}
        again = await stream.create("text/plain", attrs={"tags": ["x"], "title": "A"})
        assert not again.created  # the same attributes (in another key order): idempotent
        with pytest.raises(uc.StreamExists):
            await stream.create("text/plain", attrs={"title": "B"})
        await stream.set_attrs({"metadata": {"k": 1}})
        assert await stream.get_attrs() == {"metadata": {"k": 1}}
        await stream.set_attrs({})
        assert await stream.get_attrs() == {}
        with pytest.raises(uc.BadRequest):
            await stream.set_attrs({"x": "y" * 20_000})
        plain = client.stream(unique("no-attrs"))
        await plain.create("text/plain")
        assert await plain.get_attrs() == {}
        with pytest.raises(uc.StreamNotFound):
            await client.stream(unique("nosuch")).get_attrs()
    return frontend.run(scenario, node.url)


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_follow_recovers_from_retained_by_bootstrap(node, frontend, live):
    async def scenario(client, fe):
        stream, ends = await json_stream(client, f"follow-ret-{live}", 5)
        await stream.publish_snapshot(ends[2], {"total": 3})
        await stream.set_retention(ends[2])
        # without on_retained the follower raises Retained
        with pytest.raises(uc.Retained) as caught:
            async for _ in stream.follow(START, live=live):
                pass
        assert caught.value.retained_offset == ends[2]
        follower = stream.follow(START, live=live, on_retained="bootstrap")
        state, seen = None, []
        async for batch in follower:
            if batch.snapshot is not None:  # replace the state, then apply the records
                state, seen = batch.snapshot.value, []
            seen.extend(r["n"] for r in batch.records)
            if seen == [3, 4]:
                await stream.append({"n": 5})
                await stream.close()
        assert state == {"total": 3} and seen == [3, 4, 5]
        assert follower.bootstraps == 1 and follower.offset == (await stream.head()).next_offset
    return frontend.run(scenario, node.url)


def test_follow_bootstraps_again_when_the_floor_passes_it(node, async_frontend):
    """A follower that falls behind a moving floor mid-way bootstraps again, and never sees a
    record twice in the same state."""
    async def scenario(client, fe):
        stream, ends = await json_stream(client, "follow-moving", 2)
        follower = stream.follow(ends[0], on_retained="bootstrap")
        first = await follower.__anext__()
        assert first.snapshot is None and first.records == [{"n": 1}]
        more = [(await stream.append({"n": i})).next_offset for i in (2, 3)]
        await stream.publish_snapshot(more[0], {"upto": 3})
        await stream.set_retention(more[0])
        second = await follower.__anext__()  # the follower's offset is below the floor now
        assert second.snapshot.value == {"upto": 3} and second.records == [{"n": 3}]
        assert follower.bootstraps == 1
        await follower.close() if hasattr(follower, "close") else await follower.aclose()
    return async_frontend.run(scenario, node.url)
