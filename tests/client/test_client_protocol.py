"""The protocol-level behaviour of the client against a real ursula node, the same scenarios
on each front end (asyncio/httpx, Twisted/treq, blocking)."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import unique

import ursula_client as uc
from ursula_client import NOW, START, ZERO


def test_lifecycle_create_append_read_head_delete(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("chat/room"))
        created = await stream.create("text/plain")
        assert created.created and created.next_offset == ZERO
        assert created.location.endswith(stream.ref.path)
        again = await stream.create("text/plain")
        assert not again.created  # idempotent
        with pytest.raises(uc.StreamExists):
            await stream.create("application/json")
        first = await stream.append("hello ")
        second = await stream.append(b"world")
        assert first.next_offset < second.next_offset
        batch = await stream.read()
        assert batch.data == b"hello world" and batch.text == "hello world"
        assert batch.up_to_date and not batch.closed and batch.next_offset == second.next_offset
        rest = await stream.read(first.next_offset)
        assert rest.data == b"world"
        info = await stream.head()
        assert info.content_type == "text/plain" and info.next_offset == second.next_offset
        assert info.size_bytes == 11 and not info.closed
        assert await stream.exists()
        await stream.delete()
        assert not await stream.exists()
        with pytest.raises(uc.StreamNotFound):
            await stream.read()
        with pytest.raises(uc.StreamNotFound):
            await stream.append("x")
    return frontend.run(scenario, node.url)


def test_names_with_spaces_percent_and_unicode_round_trip(node, frontend):
    async def scenario(client, fe):
        name = unique("odd name/100% sûr")
        stream = client.stream(name)
        await stream.create("text/plain")
        await stream.append("x")
        page = await client.list_bucket("_default", limit=1000)
        assert name in {s.name for s in page.streams}
        assert (await client.stream(name).read()).data == b"x"
    return frontend.run(scenario, node.url)


def test_json_mode_records_are_decoded(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("json"))
        await stream.create("application/json")
        await stream.append({"a": 1})
        await stream.append([1, 2])  # one message that is a list
        await stream.append("text")  # a JSON string
        await stream.append_json([{"b": 2}, 3])  # two messages in one POST
        batch = await stream.read()
        assert batch.json_mode
        assert batch.records == [{"a": 1}, [1, 2], "text", {"b": 2}, 3]
        assert json.loads(batch.data) == batch.records
        with pytest.raises(uc.BadRequest):
            await stream.append(b"{not json")
        with pytest.raises(ValueError):
            await stream.append_json([])
    return frontend.run(scenario, node.url)


def test_close_ttl_and_closed_creation(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("closing"))
        await stream.create("text/plain", ttl_seconds=600)
        info = await stream.head()
        assert info.ttl_seconds == 600
        await stream.append("a")
        closed = await stream.close("b")  # append-and-close
        assert closed.closed
        again = await stream.close()  # idempotent
        assert again.closed and again.next_offset == closed.next_offset
        with pytest.raises(uc.StreamClosed) as caught:
            await stream.append("c")
        assert caught.value.final_offset == closed.next_offset
        batch = await stream.read()
        assert batch.data == b"ab" and batch.closed and batch.up_to_date
        born_closed = client.stream(unique("born-closed"))
        result = await born_closed.create("text/plain", closed=True, data=b"only")
        assert result.closed and (await born_closed.head()).closed
        expiring = client.stream(unique("expiring"))
        await expiring.create("text/plain", expires_at="2099-01-01T00:00:00Z")
        assert (await expiring.head()).expires_at == "2099-01-01T00:00:00Z"
        with pytest.raises(ValueError):
            await client.stream(unique("both")).create(
                "text/plain", ttl_seconds=5, expires_at="2099-01-01T00:00:00Z")
    return frontend.run(scenario, node.url)


def test_fork_from_an_offset(node, frontend):
    async def scenario(client, fe):
        source = client.stream(unique("source"))
        await source.create("text/plain")
        cut = (await source.append("one,")).next_offset
        await source.append("two,")
        fork = client.stream(unique("fork"))
        created = await fork.create(fork_from=source, fork_offset=cut)
        assert created.created and created.next_offset == cut
        await fork.append("mine")
        assert (await fork.read()).data == b"one,mine"
        assert (await fork.head()).content_type == "text/plain"  # inherited
        assert (await source.read()).data == b"one,two,"
        by_name = client.stream(unique("fork2"))
        await by_name.create(fork_from=source.name)  # default: the source's tail
        assert (await by_name.read()).data == b"one,two,"
        with pytest.raises(uc.StreamNotFound):
            await client.stream(unique("fork3")).create(fork_from=unique("missing"))
    return frontend.run(scenario, node.url)


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_follow_reads_everything_then_ends_at_close(node, frontend, live):
    async def scenario(client, fe):
        stream = client.stream(unique(f"follow-{live}"))
        await stream.create("application/json")
        for i in range(5):
            await stream.append({"i": i})
        seen = []
        follower = stream.follow(START, live=live)
        async for batch in follower:
            seen.extend(r["i"] for r in batch.records)
            if len(seen) == 5:
                break
        # more data and the close while nobody reads; the same follower resumes
        await stream.append_json([{"i": 5}, {"i": 6}])
        await stream.close()
        async for batch in follower:
            seen.extend(r["i"] for r in batch.records)
        assert seen == list(range(7))
        end = (await stream.head()).next_offset
        assert follower.offset == end
    return frontend.run(scenario, node.url)


@pytest.mark.parametrize("live", ["long-poll", "sse"])
def test_follow_live_from_now_sees_only_new_data(node, async_frontend, live):
    async def scenario(client, fe):
        stream = client.stream(unique("now"))
        await stream.create("text/plain")
        await stream.append("old;")

        async def follow():
            got = b""
            async for batch in stream.follow(NOW, live=live):
                got += batch.data
            return got

        async def write():
            await fe.sleep(0.7)  # the follower waits at the tail (a long-poll 204 or two)
            for i in range(3):
                await stream.append(f"new{i};")
                await fe.sleep(0.1)
            await stream.close()
        got, _ = await fe.gather(follow(), write())
        assert got == b"new0;new1;new2;"
    return async_frontend.run(scenario, node.url)


def test_binary_stream_over_sse_is_byte_exact(node, frontend):
    payloads = [bytes(range(256)), b"\r\n\r\nevent: control\ndata:{}\n\n", b"\x00" * 10, b" x"]

    async def scenario(client, fe):
        stream = client.stream(unique("bin"))
        await stream.create("application/octet-stream")
        for p in payloads:
            await stream.append(p)
        await stream.close()
        got = b""
        async for batch in stream.follow(live="sse"):
            got += batch.data
        assert got == b"".join(payloads)
        text = client.stream(unique("text"))
        await text.create("text/plain")
        await text.append("line1\nline2\n data: no injection\n\nevent: control\n")
        await text.close()
        lines = b""
        async for batch in text.follow(live="sse"):
            lines += batch.data
        assert lines == b"line1\nline2\n data: no injection\n\nevent: control\n"
    return frontend.run(scenario, node.url)


def test_producer_batches_and_writes_exactly_once_in_order(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("produced"))
        await stream.create("application/json")
        producer = stream.producer("writer-1", linger=0.01, max_batch_bytes=4096)
        acks = [producer.append({"n": i, "pad": "x" * 20}) for i in range(600)]
        await producer.flush()
        results = [await a for a in acks]
        assert all(r.producer_epoch == 0 for r in results)
        seqs = sorted({r.producer_seq for r in results})
        assert seqs == list(range(len(seqs))) and 1 < len(seqs) < 600  # batched
        final = await producer.close(close_stream=True)
        assert final.closed
        records = (await stream.read_all()).records
        assert [r["n"] for r in records] == list(range(600))
        assert (await stream.head()).closed
        with pytest.raises(uc.ProducerClosed):
            await producer.append({"n": 600})
    return frontend.run(scenario, node.url)


def test_producer_on_a_byte_stream(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("bytes"), content_type="text/plain")
        await stream.create()
        producer = client.producer(stream, "w")
        for i in range(100):
            producer.append(f"{i};")
        await producer.flush()
        await producer.close()
        assert (await stream.read()).data == b"".join(b"%d;" % i for i in range(100))
    return frontend.run(scenario, node.url)


def test_fenced_producer_gets_a_clear_error(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("fenced"))
        await stream.create("text/plain")
        old = stream.producer("shared-id", epoch=0)
        await old.append("a;")
        new = stream.producer("shared-id", epoch=1)
        await new.append("b;")
        with pytest.raises(uc.ProducerFenced) as caught:
            await old.append("zombie;")
        assert caught.value.current_epoch == 1 and caught.value.status == 403
        with pytest.raises(uc.ProducerFenced):
            await old.flush()
        await new.append("c;")
        await new.flush()
        assert (await stream.read()).data == b"a;b;c;"
    return frontend.run(scenario, node.url)


def test_restarted_producer_never_loses_records_silently(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("restart"))
        await stream.create("text/plain")
        first = stream.producer("p", epoch=0)
        for i in range(3):
            first.append(f"1-{i};")
        await first.flush()
        # a second run with the same id and epoch: its seq 0 is "a duplicate" for the
        # server; the producer does not take that for success
        again = stream.producer("p", epoch=0)
        with pytest.raises(uc.ProducerConflict):
            await again.append("lost?;")
        # with auto_claim it takes the next epoch and writes
        claiming = stream.producer("p", epoch=0, auto_claim=True)
        result = await claiming.append("2-0;")
        assert result.producer_epoch == 1 and result.producer_seq == 0
        await claiming.append("2-1;")
        # and a newer epoch elsewhere is claimed past by auto_claim too
        elsewhere = stream.producer("q", epoch=7)
        await elsewhere.append("q7;")
        late = stream.producer("q", epoch=0, auto_claim=True)
        assert (await late.append("q8;")).producer_epoch == 8
        assert (await stream.read()).data == b"1-0;1-1;1-2;2-0;2-1;q7;q8;"
    return frontend.run(scenario, node.url)


def test_server_sequence_gap_is_a_sequence_gap_error(node):
    import urllib.error
    import urllib.request

    from ursula_client.core.errors import error_for
    url = f"{node.url}/v1/stream/{unique('gap')}"
    urllib.request.urlopen(urllib.request.Request(url, method="PUT",
                                                  headers={"Content-Type": "text/plain"}))
    request = urllib.request.Request(url, data=b"x", method="POST", headers={
        "Content-Type": "text/plain", "Producer-Id": "p", "Producer-Epoch": "0",
        "Producer-Seq": "3"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    headers = {k.lower(): v for k, v in caught.value.headers.items()}
    error = error_for(caught.value.code, headers, caught.value.read())
    assert isinstance(error, uc.SequenceGap)
    assert (error.expected_seq, error.received_seq) == (0, 3)


def test_buckets_listing_and_append_batch(node, frontend):
    async def scenario(client, fe):
        bucket = unique("bk").lower()
        assert await client.create_bucket(bucket)
        assert not await client.create_bucket(bucket)
        names = sorted(unique("s") for _ in range(5))
        for name in names:
            await client.stream(name, bucket).create("text/plain")
        page = await client.list_bucket(bucket, limit=2)
        assert [s.name for s in page.streams] == names[:2] and page.next_cursor == names[1]
        assert [s.name for s in await client.list_streams(bucket)] == names
        stream = client.stream(names[0], bucket)
        items = await stream.append_batch([b"a", "b", b"c"])
        assert [i.status for i in items] == [204, 204, 204]
        assert items[0].next_offset == items[1].offset
        assert (await stream.read()).data == b"abc"
        with pytest.raises(ValueError):
            await client.stream("x").append_batch([b"a"])  # no route in _default
        with pytest.raises(uc.Conflict):
            await client.delete_bucket(bucket)  # not empty
        for name in names:
            await client.stream(name, bucket).delete()
        await client.delete_bucket(bucket)
        with pytest.raises(uc.StreamNotFound):
            await client.list_bucket(bucket)
    return frontend.run(scenario, node.url)


def test_pull_wake_subscription(node, frontend):
    async def scenario(client, fe):
        prefix = unique("jobs")
        wake = client.stream(f"{prefix}-wake")
        await wake.create("application/json")
        work = client.stream(f"{prefix}/a")
        await work.create("text/plain")
        subs = client.subscriptions()
        sub_id = unique("sub")
        created, view = await subs.put(sub_id, {"type": "pull-wake", "pattern": f"{prefix}/*",
                                                "wake_stream": f"{prefix}-wake"})
        assert created and view["type"] == "pull-wake"
        assert (await subs.put(sub_id, {"type": "pull-wake", "pattern": f"{prefix}/*",
                                        "wake_stream": f"{prefix}-wake"}))[0] is False
        tail = (await work.append("job-1")).next_offset
        claimed = None
        for _ in range(50):
            try:
                claimed = await subs.claim(sub_id, "worker-1")
                break
            except uc.SubscriptionError as error:
                assert error.code == "NO_PENDING_WORK"
                await fe.sleep(0.1)
        assert claimed is not None and claimed.token
        assert [s.path for s in claimed.streams] == [f"{prefix}/a"]
        with pytest.raises(uc.SubscriptionError) as caught:
            await subs.claim(sub_id, "worker-2")
        assert caught.value.code == "ALREADY_CLAIMED" and caught.value.status == 409
        acked = await subs.ack(sub_id, claimed, {f"{prefix}/a": tail}, done=True)
        assert acked.ok and not acked.next_wake
        assert (await subs.get(sub_id))["streams"][0]["acked_offset"] == tail
        with pytest.raises(uc.SubscriptionError) as caught:
            await subs.ack(sub_id, claimed, {f"{prefix}/a": tail}, done=True)
        assert caught.value.code == "FENCED"
        keys = await subs.jwks()
        assert keys["keys"] and keys["keys"][0]["crv"] == "Ed25519"
        # new work: the server issues a wake by itself and writes it to the wake stream
        await work.append("job-2")
        events = []
        for _ in range(100):
            events = [e for e in (await wake.read()).records
                      if e["generation"] > claimed.generation]
            if events:
                break
            await fe.sleep(0.1)
        assert events and events[0]["type"] == "wake" and events[0]["subscription_id"] == sub_id
        second = await subs.claim(sub_id, "worker-2")
        assert second.generation == events[0]["generation"]
        await subs.release(sub_id, second)
        await subs.delete(sub_id)
        with pytest.raises(uc.SubscriptionError) as caught:
            await subs.get(sub_id)
        assert caught.value.status == 404
    return frontend.run(scenario, node.url)


def test_sse_base64_decoding_matches_the_wire(node):
    """The raw SSE answer of a binary stream holds base64, and the client decodes it."""
    import urllib.request
    url = f"{node.url}/v1/stream/{unique('raw')}"
    urllib.request.urlopen(urllib.request.Request(
        url, data=b"\xff\x00", method="PUT",
        headers={"Content-Type": "application/octet-stream", "Stream-Closed": "true"}))
    with urllib.request.urlopen(url + "?offset=-1&live=sse", timeout=5) as answer:
        raw = answer.read()
    assert base64.b64encode(b"\xff\x00") in raw
    from ursula_client.core.sse import StreamEvents
    events = StreamEvents("-1", json_mode=False, base64_mode=True)
    batches = [b for i in range(len(raw)) for b in events.feed(raw[i:i + 1])]
    assert b"".join(b.data for b in batches) == b"\xff\x00" and batches[-1].closed


def test_if_match_appends(node, frontend):
    async def scenario(client, fe):
        stream = client.stream(unique("cas"))
        tail = (await stream.create("text/plain")).next_offset
        first = await stream.append("a", if_match=tail)
        assert first.etag == first.next_offset  # the new tail, as If-Match wants it
        with pytest.raises(uc.PreconditionFailed) as caught:
            await stream.append("b", if_match=tail)  # stale: someone appended meanwhile
        assert caught.value.status == 412 and caught.value.current_tail == first.next_offset
        second = await stream.append("b", if_match=caught.value.current_tail)
        assert (await stream.read()).data == b"ab"
        with pytest.raises(ValueError):  # the server refuses the mix (400): so does the client
            from ursula_client.core import ops
            ops.append_request(stream.ref, b"x", "text/plain", producer=("p", 0, 0),
                               if_match=second.next_offset)
        bucket = unique("casb").lower()
        await client.create_bucket(bucket)
        batched = client.stream("s", bucket)
        start = (await batched.create("text/plain")).next_offset
        items = await batched.append_batch([b"x", b"y"], if_match=start)
        assert [i.status for i in items] == [204, 204]
        with pytest.raises(uc.PreconditionFailed) as caught:
            await batched.append_batch([b"z"], if_match=start)  # all or nothing
        assert caught.value.current_tail == items[-1].next_offset
        assert (await batched.read()).data == b"xy"
    return frontend.run(scenario, node.url)
