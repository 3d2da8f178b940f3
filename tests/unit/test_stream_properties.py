"""Hypothesis properties of the stream state machine.

1. appended bytes read back exactly, from every returned offset, whole or in random chunks;
2. producer retries never duplicate data;
3. determinism + snapshot fidelity: restore(snapshot()) at any point behaves identically;
4. agreement with a tiny reference model over create/append/close/delete.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.stream import StreamMachine
from ursula.stream.commands import (
    Append,
    AppendBatch,
    CreateBucket,
    CreateStream,
    DeleteBucket,
    DeleteStream,
    Producer,
    Touch,
)
from ursula.stream.machine import StreamError

B = "_default"
OCT = "application/octet-stream"
JSON = "application/json"
T0 = 1_000_000

# == 1. read-back =============================================================================


def read_all(sm, name, offset, max_bytes_values, boundaries):
    """Read from offset to the tail in chunks; checks each chunk against the chunking rules."""
    out = b""
    k = 0
    while True:
        max_bytes = max_bytes_values[k % len(max_bytes_values)]
        k += 1
        r = sm.read(B, name, offset, max_bytes, T0)
        assert r.start == offset
        assert r.next_offset - r.start == len(r.data)
        if r.up_to_date:
            out += r.data
            return out, r
        assert r.data, "a read before the tail returns at least one byte"
        assert r.next_offset in boundaries, "chunks end at record boundaries"
        if len(r.data) > max_bytes:
            # only allowed when a single record is larger than max_bytes
            assert not any(offset < b < r.next_offset for b in boundaries)
        out += r.data
        offset = r.next_offset


@settings(max_examples=120, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=48), max_size=12),
       close=st.sampled_from(["open", "close-only", "append-and-close"]),
       data=st.data())
def test_appended_bytes_read_back_exactly(payloads, close, data):
    sm = StreamMachine()
    assert sm.apply(CreateStream(B, "s"), T0).created
    offsets = [0]
    for index, payload in enumerate(payloads):
        last = index == len(payloads) - 1
        out = sm.apply(Append(B, "s", OCT, payload,
                              close=last and close == "append-and-close"), T0)
        assert out.error is None
        assert out.start_offset == offsets[-1]
        assert out.next_offset == out.start_offset + len(payload)
        offsets.append(out.next_offset)
    if close == "close-only" or (close == "append-and-close" and not payloads):
        out = sm.apply(Append(B, "s", None, b"", close=True), T0)
        assert out.error is None and out.closed and out.next_offset == offsets[-1]
    closed = close != "open"
    assert offsets == sorted(set(offsets))
    everything = b"".join(payloads)
    boundaries = set(offsets)
    for offset in offsets:
        whole = sm.read(B, "s", offset, 1 << 30, T0)
        assert whole.data == everything[offset:]
        assert whole.up_to_date and whole.closed == closed
        max_bytes_values = data.draw(st.lists(st.integers(0, 100), min_size=1, max_size=5))
        got, last_read = read_all(sm, "s", offset, max_bytes_values, boundaries)
        assert got == everything[offset:]
        assert last_read.closed == closed
    # a fork at a returned offset sees exactly the prefix
    fork_at = data.draw(st.sampled_from(offsets))
    assert sm.apply(CreateStream(B, "f", fork_bucket=B, fork_stream="s", fork_offset=fork_at),
                    T0).created
    got, _ = read_all(sm, "f", 0, [data.draw(st.integers(0, 64))], boundaries | {fork_at})
    assert got == everything[:fork_at]


# == 2. producer retries =======================================================================

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("next"), st.just(0)),
        st.tuples(st.just("retry"), st.integers(0, 1000)),
        st.tuples(st.just("ahead"), st.integers(2, 5)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(actions=ACTIONS, epoch=st.integers(0, 3), close_at_end=st.booleans(),
       payload_seed=st.binary(min_size=1, max_size=4))
def test_producer_retries_never_duplicate(actions, epoch, close_at_end, payload_seed):
    sm = StreamMachine()
    sm.apply(CreateStream(B, "s"), T0)

    def payload(seq):
        return payload_seed + str(seq).encode() + b";"

    def send(seq, body, close=False):
        return sm.apply(Append(B, "s", OCT, body, close=close,
                               producer=Producer("p", epoch, seq)), T0)

    accepted = 0  # seqs 0 .. accepted-1 were accepted
    for kind, arg in actions:
        if kind == "next":
            out = send(accepted, payload(accepted))
            assert out.error is None and not out.duplicate
            assert out.producer_seq == accepted
            accepted += 1
        elif kind == "retry" and accepted:
            seq = arg % accepted
            out = send(seq, b"retry-with-another-body" if arg % 2 else payload(seq))
            assert out.error is None and out.duplicate
            assert out.producer_seq == accepted - 1
        else:
            seq = accepted + (arg if kind == "ahead" else 1)
            out = send(seq, payload(seq))
            assert out.error == "producer_seq_gap"
            assert (out.expected_seq, out.received_seq) == (accepted, seq)
    expected = b"".join(payload(seq) for seq in range(accepted))
    if close_at_end:
        out = send(accepted, b"", close=True)
        assert out.error is None and out.closed
        assert send(accepted, b"", close=True).duplicate
        if accepted:
            assert send(0, payload(0)).duplicate
        assert send(accepted + 1, b"x").error == "closed"
    assert sm.read(B, "s", 0, 1 << 30, T0).data == expected


# == 3. determinism and snapshot fidelity ======================================================

NAMES = ["a", "b", "c", "d"]
BUCKETS = [B, "bkt"]
JSON_BODIES = [b"1", b"[1,2]", b"[]", b"{bad", b'{"k":"v"}', b"[[1],[2,3]]"]

# weighted so that most commands succeed and producers/Stream-Seq/forks get exercised
name_st = st.sampled_from(["a"] * 6 + ["b"] * 3 + ["c"])
bucket_st = st.sampled_from([B] * 6 + ["bkt"])
create_ct_st = st.sampled_from([None] * 4 + [OCT, JSON, "text/plain"])
append_ct_st = st.sampled_from([OCT] * 6 + [JSON, "text/plain", None])
body_st = st.one_of(st.binary(min_size=1, max_size=6), st.binary(min_size=1, max_size=6),
                    st.binary(min_size=1, max_size=6), st.sampled_from(JSON_BODIES),
                    st.just(b""))

def _make_command(kind, bucket, name, fork_name, src, create_ct, append_ct, ttl, closed, body,
                  offset, sub, close, producer, seq, frames):
    if kind == "create":
        return CreateStream(bucket, name, content_type=create_ct, ttl_seconds=ttl,
                            closed=closed, body=body)
    if kind == "fork":
        return CreateStream(bucket, fork_name, content_type=create_ct, ttl_seconds=ttl,
                            fork_bucket=bucket, fork_stream=src, fork_offset=offset,
                            fork_sub_offset=sub)
    if kind == "append":
        return Append(bucket, name, append_ct, body, close=close, producer=producer,
                      stream_seq=seq)
    if kind == "batch":
        return AppendBatch(bucket, name, append_ct, frames)
    if kind == "delete":
        return DeleteStream(bucket, name)
    if kind == "touch":
        return Touch(bucket, name)
    if kind == "create-bucket":
        return CreateBucket(bucket)
    return DeleteBucket(bucket)


# st.one_of cannot be weighted, so the kind is drawn from a weighted list
COMMAND = st.builds(
    _make_command,
    st.sampled_from(["create"] * 3 + ["fork"] * 2 + ["append"] * 10 + [
        "batch", "delete", "touch", "create-bucket", "delete-bucket"]),
    bucket_st, name_st, st.sampled_from(["c", "d"]), st.sampled_from(["a", "a", "b", "c"]),
    create_ct_st, append_ct_st,
    st.sampled_from([None] * 5 + [1, 3]), st.sampled_from([False] * 6 + [True]), body_st,
    st.sampled_from([None] * 4 + [0, 1, 2, 3, 5, 8]), st.sampled_from([0, 0, 0, 1, 2]),
    st.sampled_from([False] * 5 + [True]),
    st.sampled_from([None, "p", "p", "q"]).flatmap(
        lambda pid: st.none() if pid is None else st.builds(
            Producer, st.just(pid), st.sampled_from([0, 0, 0, 1]), st.integers(0, 2))),
    st.sampled_from([None] * 4 + ["1", "2", "10", "a"]),
    st.lists(body_st, max_size=3).map(tuple),
)
# mostly small clock steps, sometimes a jump past the 1 s / 3 s TTLs
STEPS = st.lists(st.tuples(COMMAND, st.sampled_from([0, 0, 10, 100, 400, 1200, 3500])),
                 min_size=5, max_size=40)


PRELUDE = [
    (CreateStream(B, "a"), 0),
    (CreateStream(B, "b", content_type=JSON), 0),
    (CreateBucket("bkt"), 0),
    (CreateStream("bkt", "a", body=b"x"), 0),
    (Append(B, "a", OCT, b"s", stream_seq="5"), 0),
    (Append(B, "a", OCT, b"p", producer=Producer("p", 0, 0)), 0),
    (CreateStream(B, "c", fork_bucket=B, fork_stream="a"), 0),
]


def observe(sm, now):
    seen = []
    for bucket in BUCKETS:
        try:
            seen.append(sm.list_streams(bucket, "", 100, now))
        except StreamError as err:
            seen.append(err.code)
        for name in NAMES:
            try:
                info = sm.head(bucket, name, now)
                seen.append(info)
                seen.append(sm.read(bucket, name, 0, 1 << 20, now))
                seen.append(sm.read(bucket, name, 0, 4, now))
                seen.append(sm.read(bucket, name, min(3, info.tail), 5, now))
            except StreamError as err:
                seen.append(err.code)
    return seen


@settings(max_examples=100, deadline=None)
@given(steps=STEPS, data=st.data())
def test_snapshot_restore_is_faithful_and_deterministic(steps, data):
    steps = PRELUDE + steps
    midpoint = data.draw(st.integers(0, len(steps)))
    first = StreamMachine()
    now = T0
    for cmd, dt in steps[:midpoint]:
        now += dt
        first.apply(cmd, now)
    restored = StreamMachine.restore(first.snapshot())
    assert observe(restored, now) == observe(first, now)
    for cmd, dt in steps[midpoint:]:
        now += dt
        assert restored.apply(cmd, now) == first.apply(cmd, now), cmd
        assert observe(restored, now) == observe(first, now)
    # replaying the whole history on a fresh machine gives the same state too
    replay = StreamMachine()
    now = T0
    for cmd, dt in steps:
        now += dt
        replay.apply(cmd, now)
    assert observe(replay, now) == observe(first, now)
    assert replay.snapshot() == first.snapshot()


# == 4. reference model ========================================================================

MODEL_CMD = st.tuples(
    st.sampled_from(["create"] * 3 + ["append"] * 10 + ["delete"]),
    st.sampled_from(["a", "a", "b"]),
    st.sampled_from([False, False, True]),
    st.binary(max_size=4),
    st.sampled_from([False] * 5 + [True]),
    st.none() | st.sampled_from(["1", "2", "10", "09", "a", "B"]),
    st.sampled_from([OCT, OCT, OCT, "text/plain"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(MODEL_CMD, min_size=5, max_size=40))
def test_machine_agrees_with_reference_model(cmds):
    sm = StreamMachine()
    model: dict[str, dict] = {}
    for cmd in cmds:
        kind, name, closed, body, close, seq, ct = cmd
        if kind == "create":
            out = sm.apply(CreateStream(B, name, closed=closed, body=body), T0)
            if name in model:
                expected = None if model[name]["closed"] == closed else "exists_conflict"
                assert out.error == expected and not out.created
            else:
                assert out.error is None and out.created
                model[name] = {"data": body, "closed": closed, "last_seq": None}
        elif kind == "append":
            out = sm.apply(Append(B, name, ct, body, close=close, stream_seq=seq), T0)
            state = model.get(name)
            if state is None:
                expected = "not_found"
            elif state["closed"]:
                expected = None if (not body and close) else "closed"
            elif not body and not close:
                expected = "empty_append"
            elif body and ct != OCT:
                expected = "content_type_mismatch"
            elif seq is not None and state["last_seq"] is not None and (
                    seq.encode() <= state["last_seq"].encode()):
                expected = "stream_seq_conflict"
            else:
                expected = None
                start = len(state["data"])
                state["data"] += body
                state["closed"] = state["closed"] or close
                if seq is not None:
                    state["last_seq"] = seq
                assert out.start_offset == start
            assert out.error == expected, (cmd, out)
            if state is not None:
                assert out.next_offset == len(state["data"])
                assert out.closed == state["closed"] or out.error not in (None, "closed")
        else:
            out = sm.apply(DeleteStream(B, name), T0)
            assert out.error == (None if name in model else "not_found")
            model.pop(name, None)
        for other in NAMES:
            if other in model:
                r = sm.read(B, other, 0, 1 << 20, T0)
                assert r.data == model[other]["data"]
                assert r.info.closed == model[other]["closed"]
            else:
                try:
                    sm.head(B, other, T0)
                    raise AssertionError(f"{other} should not exist")
                except StreamError as err:
                    assert err.code == "not_found"
    assert sorted(n for n, _ in sm.list_streams(B, "", 100, T0)) == sorted(model)
