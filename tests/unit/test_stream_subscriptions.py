"""The pure subscription state (``ursula.stream.subscriptions``): glob rules, the back-off, and
a model test: random sequences of ops (with appends, wakes, acks, claims, expiries, snapshots)
against a simple model of what the protocol promises: generations only grow, at most one wake
is in flight, a done wake acks its snapshot, fenced requests change nothing, no pending work is
ever lost (a link with data past its acked offset is pending until it is acked), and a snapshot
restores the same state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.stream import StreamMachine
from ursula.stream import commands as C
from ursula.stream.subscriptions import (
    config_hash,
    glob_match,
    key_command,
    literal_prefix,
    retry_delay_ms,
    sub_command,
)

B = "_default"


@pytest.mark.parametrize("pattern,path,expected", [
    ("events/*", "events/a", True), ("events/*", "events/a/b", False),
    ("events/*", "events", False), ("events/**", "events", True),
    ("events/**", "events/a/b/c", True), ("**", "x/y", True), ("a/*/c", "a/b/c", True),
    ("a/*/c", "a/b/d", False), ("a/**/c", "a/c", True), ("a/**/c", "a/x/y/c", True),
    ("exact", "exact", True), ("exact", "exactly", False),
    ("album-*", "album-1", False), ("album-*", "album-*", True),
])
def test_glob(pattern, path, expected):
    assert glob_match(pattern, path) is expected


def test_literal_prefix():
    assert literal_prefix("events/*") == "events/"
    assert literal_prefix("a/b") == "a/b"
    assert literal_prefix("**") == ""


def test_retry_delay_doubles_to_the_cap_with_bounded_jitter():
    assert [retry_delay_ms(n, 0.5) for n in (1, 2, 3, 4, 7, 8, 50)] == [
        1000, 2000, 4000, 8000, 60000, 60000, 60000]
    assert retry_delay_ms(1, 0.0) == 800 and retry_delay_ms(1, 0.999999) == 1200
    assert retry_delay_ms(3, 0.0, initial_ms=100, max_ms=300) == 240


def config(kind="webhook", pattern="events/*", streams=(), ttl=1000):
    return {"type": kind, "pattern": pattern, "streams": sorted(streams),
            "webhook": {"url": "https://example.com/h"} if kind == "webhook" else None,
            "wake_stream": "wake/pool" if kind == "pull-wake" else None, "lease_ttl_ms": ttl,
            "description": None}


def put(machine, sub_id, cfg, now, links=()):
    return machine.apply(sub_command(B, sub_id, "put", config=cfg, hash=config_hash(cfg),
                                     base_url="http://h/v1/stream", links=list(links)), now)


def op(machine, sub_id, name, now, **args):
    return machine.apply(sub_command(B, sub_id, name, **args), now)


def test_put_is_idempotent_and_conflicts_on_a_different_config():
    m = StreamMachine()
    assert put(m, "s", config(), 1).created
    again = put(m, "s", config(), 2)
    assert again.error is None and not again.created
    assert put(m, "s", config(ttl=2000), 3).error == "SUBSCRIPTION_ALREADY_EXISTS"
    assert op(m, "nope", "get", 4).error == "SUBSCRIPTION_NOT_FOUND"
    assert op(m, "s", "bogus", 4).error == "INVALID_REQUEST"
    assert op(m, "s", "wake", 4, generation="x").error in ("INVALID_REQUEST", "FENCED")


def test_backfill_links_at_the_tail_and_new_streams_before_their_data():
    m = StreamMachine()
    put(m, "s", config(streams=["manual/a"]), 1, links=[["events/old", 7, 10]])
    sub = m.subscriptions.get(B, "s")
    assert sub.links["events/old"].acked == 10 and not sub.pending()
    assert sub.links["manual/a"].explicit and sub.links["manual/a"].acked == -1
    op(m, "s", "tails", 2, tails=[["events/new", 9, 5], ["other/x", 3, 4]])
    assert sub.links["events/new"].acked == -1 and sub.links["events/new"].tail == 5
    assert "other/x" not in sub.links  # matches nothing: not linked
    assert sub.pending()


def test_webhook_done_acks_the_snapshot_and_fences_the_old_generation():
    m = StreamMachine()
    put(m, "s", config(), 1)
    op(m, "s", "tails", 2, tails=[["events/a", 1, 5]])
    assert op(m, "s", "wake", 3, generation=1, wake_id="w").error == "FENCED"  # stale gen
    assert op(m, "s", "wake", 3, generation=0, wake_id="w1").error is None
    assert op(m, "s", "wake", 3, generation=0, wake_id="w2").error == "FENCED"  # one in flight
    op(m, "s", "tails", 4, tails=[["events/a", 1, 9]])  # more data after the snapshot
    out = op(m, "s", "delivered", 5, wake_id="w1", ok=True, done=True, next_attempt_ms=0)
    sub = m.subscriptions.get(B, "s")
    assert out.payload == {"next_wake": True}
    assert sub.links["events/a"].acked == 5 and sub.wake is None and sub.pending()
    stale = op(m, "s", "callback", 6, wake_id="w1", generation=1, token_generation=1,
               acks=[["events/a", 9]], done=True)
    assert stale.error == "FENCED" and sub.links["events/a"].acked == 5


def test_failed_delivery_keeps_the_wake_and_records_the_retry():
    m = StreamMachine()
    put(m, "s", config(), 1)
    op(m, "s", "tails", 2, tails=[["events/a", 1, 5]])
    op(m, "s", "wake", 3, generation=0, wake_id="w1")
    op(m, "s", "delivered", 4, wake_id="w1", ok=False, done=False, next_attempt_ms=1004)
    sub = m.subscriptions.get(B, "s")
    assert sub.wake.attempts == 1 and sub.wake.next_attempt_ms == 1004
    assert sub.view()["status"] == "failed"
    restored = StreamMachine.restore(m.snapshot()).subscriptions.get(B, "s")
    assert restored.wake.next_attempt_ms == 1004 and restored.wake.attempts == 1
    op(m, "s", "delivered", 5, wake_id="w1", ok=True, done=False, next_attempt_ms=0)
    assert sub.wake.lease_until == 5 + 1000 and sub.view()["status"] == "active"
    op(m, "s", "expire", 1005, wake_id="w1")  # the lease ran out: another wake follows
    assert sub.wake is None and sub.pending()


def test_pull_wake_claim_ack_release():
    m = StreamMachine()
    put(m, "p", config("pull-wake"), 1)
    assert op(m, "p", "claim", 2, worker="w1", wake_id="x").error == "NO_PENDING_WORK"
    claimed = op(m, "p", "claim", 3, worker="w1", wake_id="x", tails=[["events/a", 1, 5]])
    assert claimed.error is None and claimed.payload["generation"] == 1
    assert m.subscriptions.get(B, "p").wake.delivered  # claimed: no wake event to write
    busy = op(m, "p", "claim", 4, worker="w2", wake_id="y")
    assert busy.error == "ALREADY_CLAIMED" and busy.payload["current_holder"] == "w1"
    args = {"wake_id": "x", "generation": 1, "token_generation": 1}
    assert op(m, "p", "ack", 5, **args, acks=[["events/a", 6]]).error == "INVALID_OFFSET"
    beat = op(m, "p", "ack", 800, **args, acks=[["events/a", 3]], done=False)
    assert beat.error is None and m.subscriptions.get(B, "p").wake.lease_until == 1800
    assert op(m, "p", "ack", 900, **args, acks=[["events/a", 2]]).error == "INVALID_OFFSET"
    done = op(m, "p", "ack", 1000, **args, acks=[["events/a", 5]], done=True)
    assert done.payload == {"ok": True, "next_wake": False}
    op(m, "p", "tails", 1100, tails=[["events/a", 1, 8]])
    again = op(m, "p", "claim", 1200, worker="w2", wake_id="z")
    assert again.payload["generation"] == 2
    assert op(m, "p", "release", 1300, wake_id="z", generation=1,
              token_generation=1).error == "FENCED"
    released = op(m, "p", "release", 1300, wake_id="z", generation=2, token_generation=2)
    assert released.payload == {"next_wake": True}
    # an expired lease frees the subscription for another worker
    op(m, "p", "claim", 1400, worker="w3", wake_id="q")
    assert op(m, "p", "claim", 1400 + 999, worker="w4", wake_id="r").error == "ALREADY_CLAIMED"
    assert op(m, "p", "claim", 1400 + 1000, worker="w4", wake_id="r").error is None


def test_the_wake_stream_is_never_linked_by_the_pattern():
    m = StreamMachine()
    put(m, "p", config("pull-wake", pattern="**"), 1)
    op(m, "p", "tails", 2, tails=[["wake/pool", 1, 40], ["events/a", 2, 5]])
    assert sorted(m.subscriptions.get(B, "p").links) == ["events/a"]


def test_recreated_stream_restarts_its_cursor():
    m = StreamMachine()
    put(m, "s", config(), 1, links=[["events/a", 1, 10]])
    op(m, "s", "tails", 2, tails=[["events/a", 2, 3]])  # deleted and created again (new uid)
    link = m.subscriptions.get(B, "s").links["events/a"]
    assert (link.acked, link.tail) == (-1, 3)


def test_the_signing_key_is_set_once():
    m = StreamMachine()
    first = m.apply(key_command(b"a" * 32), 1)
    second = m.apply(key_command(b"b" * 32), 2)
    assert first.payload == second.payload == {"seed": b"a" * 32}
    assert StreamMachine.restore(m.snapshot()).subscriptions.signing_seed == b"a" * 32


def test_the_command_round_trips():
    from ursula.stream import decode_command, encode_command
    cmd = sub_command(B, "s", "tails", tails=[["a", 1, 2]], gone=[])
    assert decode_command(encode_command(cmd)) == cmd
    assert isinstance(cmd, C.Subscription) and cmd.stream == "__ds/subscriptions/s"


# -- the model test -----------------------------------------------------------------------------

PATHS = ["events/a", "events/b", "events/c/d", "manual/x"]
ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.sampled_from(PATHS), st.integers(1, 50)),
    st.tuples(st.just("wake"), st.integers(-1, 1)),
    st.tuples(st.just("deliver"), st.booleans(), st.booleans(), st.booleans()),
    st.tuples(st.just("ack"), st.booleans(), st.booleans(), st.integers(0, 60)),
    st.tuples(st.just("claim"), st.sampled_from(["w1", "w2"])),
    st.tuples(st.just("release"), st.booleans()),
    st.tuples(st.just("time"), st.integers(1, 1500)),
    st.tuples(st.just("snapshot"),),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["webhook", "pull-wake"]), steps=ops)
def test_model(kind, steps):
    m = StreamMachine()
    now = 1
    put(m, "s", config(kind, streams=["manual/x"]), now)
    tails = {p: 0 for p in PATHS}  # the real streams' tails
    acked = {}  # the model: what the subscription must have processed, at least
    last_gen = 0
    counter = 0
    for step in steps:
        now += 1
        sub = m.subscriptions.get(B, "s")
        wake = sub.wake
        counter += 1
        if step[0] == "append":
            tails[step[1]] += step[2]
            op(m, "s", "tails", now, tails=[[step[1], 1, tails[step[1]]]])
        elif step[0] == "wake":
            op(m, "s", "wake", now, generation=sub.generation + step[1], wake_id=f"w{counter}")
        elif step[0] == "deliver" and wake is not None:
            wake_id = wake.wake_id if step[1] else "stale"
            op(m, "s", "delivered", now, wake_id=wake_id, ok=step[2], done=step[3],
               next_attempt_ms=now + 100)
        elif step[0] == "ack" and wake is not None:
            gen = sub.generation if step[1] else sub.generation - 1
            path = next((p for p in sorted(wake.snapshot)), "events/a")
            before = {p: ln.acked for p, ln in sub.links.items()}
            out = op(m, "s", "ack", now, wake_id=wake.wake_id, generation=gen,
                     token_generation=gen, acks=[[path, step[3]]], done=step[2])
            if out.error is not None:
                assert {p: ln.acked for p, ln in sub.links.items()} == before  # nothing moved
        elif step[0] == "claim":
            op(m, "s", "claim", now, worker=step[1], wake_id=f"c{counter}")
        elif step[0] == "release" and wake is not None:
            gen = sub.generation if step[1] else sub.generation + 1
            op(m, "s", "release", now, wake_id=wake.wake_id, generation=gen,
               token_generation=gen)
        elif step[0] == "time":
            now += step[1]
            op(m, "s", "expire", now, wake_id="any")
        elif step[0] == "snapshot":
            blob = m.snapshot()
            m = StreamMachine.restore(blob)
            assert m.snapshot() == blob
        sub = m.subscriptions.get(B, "s")
        # generations only grow; a wake in flight carries the current generation
        assert sub.generation >= last_gen
        last_gen = sub.generation
        if sub.wake is not None:
            assert sub.wake.generation == sub.generation
        for path, link in sub.links.items():
            assert link.acked <= link.tail or link.acked == -1
            assert link.tail <= tails[path]
            acked[path] = max(acked.get(path, -1), link.acked)
            assert link.acked == acked[path]  # acked offsets never go back
            # nothing is lost: data past the cursor keeps the subscription pending
            if tails[path] > max(link.acked, 0):
                assert sub.pending()
        for path in PATHS:
            if tails[path] and (path.startswith("events/") and path.count("/") == 1
                                or path == "manual/x"):
                assert path in sub.links  # every matching stream with data is linked
