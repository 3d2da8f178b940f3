"""Hypothesis properties of If-Match conditional appends.

1. agreement with a small reference model: random sequences of plain, conditional (matching,
   stale or ``*``), close-only, append-and-close, producer and batch appends on one stream
   give the model's error code, offsets and closed flag, and the model's bytes;
2. racing writers: several writers that each know some tail append with If-Match in a random
   interleaving, each retrying a 412 with the tail it carried; every offset is won by exactly
   one writer, every 412 carries the tail at that moment, nothing is lost or duplicated.
"""

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.protocol.headers import IF_MATCH_ANY
from ursula.stream import StreamMachine, decode_command, encode_command
from ursula.stream.commands import Append, AppendBatch, CreateStream, Producer

B = "_default"
OCT = "application/octet-stream"
T0 = 1_000_000


@dataclass
class Model:
    """What the proposal says a byte stream does with (conditional) appends."""

    data: bytes = b""
    closed: bool = False
    producers: dict = field(default_factory=dict)

    @property
    def tail(self) -> int:
        return len(self.data)

    def append(self, body: bytes, close: bool, expected, producer, content_type):
        """(error, start, next, closed) of one POST."""
        if expected is not None:
            if self.closed and body:
                return "closed", None, self.tail, True
            if body and content_type != OCT:
                return "content_type_mismatch", None, self.tail, False
            if producer is not None:
                return "if_match_with_producer", None, self.tail, False
            if expected == IF_MATCH_ANY:
                return "if_match_wildcard", None, self.tail, False
            if expected != self.tail:
                return "precondition_failed", None, self.tail, self.closed
            if self.closed:  # close-only at the matching tail of a closed stream
                return None, self.tail, self.tail, True
        elif producer is not None:
            seen = self.producers.get(producer[0])
            if seen is not None and producer[1] <= seen[0]:
                return "duplicate", None, seen[1], self.closed
        if self.closed:
            if not body and close and producer is None:
                return None, None, self.tail, True
            return "closed", None, self.tail, True
        if producer is not None:
            seen = self.producers.get(producer[0])
            wanted = 0 if seen is None else seen[0] + 1
            if producer[1] != wanted:
                return "producer_seq_gap", None, self.tail, False
        if body and content_type != OCT:
            return "content_type_mismatch", None, self.tail, False
        start = self.tail
        self.data += body
        if close:
            self.closed = True
        if producer is not None:
            self.producers[producer[0]] = (producer[1], self.tail)
        return None, start, self.tail, self.closed

    def batch(self, frames, expected):
        if expected is None:
            raise AssertionError("only conditional batches are modelled")
        if self.closed:
            return "closed", self.tail, []
        if expected == IF_MATCH_ANY:
            return "if_match_wildcard", self.tail, []
        if expected != self.tail:
            return "precondition_failed", self.tail, []
        if any(not f for f in frames):
            return "empty_append", self.tail, []
        spans = []
        for frame in frames:
            start = self.tail
            self.data += frame
            spans.append((start, self.tail))
        return None, self.tail, spans


BODIES = st.binary(min_size=0, max_size=6)
# an expectation: the model's tail, a stale one, one off, or the wildcard
EXPECT = st.sampled_from(["tail", "stale", "ahead", "any", None])
OP = st.one_of(
    st.tuples(st.just("append"), BODIES, st.booleans(), EXPECT,
              st.none() | st.tuples(st.sampled_from(["p", "q"]), st.integers(0, 3)),
              st.sampled_from([OCT, OCT, OCT, "text/plain"])),
    st.tuples(st.just("batch"), st.lists(BODIES, min_size=1, max_size=4),
              st.sampled_from(["tail", "stale", "any"])),
)


def _expected(kind, model: Model, rng_value: int):
    if kind is None:
        return None
    if kind == "tail":
        return model.tail
    if kind == "any":
        return IF_MATCH_ANY
    if kind == "ahead":
        return model.tail + 1 + rng_value
    return max(0, model.tail - 1 - rng_value) if model.tail else model.tail + 1


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(OP, st.integers(0, 5)), max_size=25),
       through_the_log=st.booleans())
def test_conditional_appends_agree_with_the_model(ops, through_the_log):
    sm, model = StreamMachine(), Model()
    assert sm.apply(CreateStream(B, "s"), T0).created

    def apply(cmd):
        if through_the_log:  # as a follower applies it: decoded from the entry
            cmd = decode_command(encode_command(cmd))
        return sm.apply(cmd, T0)

    for op, salt in ops:
        if op[0] == "append":
            _, body, close, kind, producer, content_type = op
            if not body and not close:
                continue  # refused by the HTTP layer (400) before it becomes a command
            expected = _expected(kind, model, salt)
            want = model.append(body, close, expected, producer, content_type)
            out = apply(Append(B, "s", content_type if body else None, body, close,
                               Producer(producer[0], 0, producer[1]) if producer else None,
                               None, expected))
            if want[0] == "duplicate":
                assert out.error is None and out.duplicate and out.next_offset == want[2]
                continue
            assert out.error == want[0], (op, want, out)
            assert out.next_offset == want[2]
            assert out.closed == want[3]
            if want[0] is None and want[1] is not None and body:
                assert out.start_offset == want[1]
        else:
            _, frames, kind = op
            expected = _expected(kind, model, salt)
            error, tail, spans = model.batch(frames, expected)
            out = apply(AppendBatch(B, "s", OCT, tuple(frames), expected))
            assert out.error == error, (op, out)
            assert out.next_offset == tail
            assert [(r.start_offset, r.next_offset) for r in out.results] == spans
        got = sm.read(B, "s", 0, 1 << 20, T0)
        assert got.data == model.data and got.info.closed == model.closed


@dataclass
class Writer:
    name: str
    known: int = 0  # the tail this writer believes in
    sent: int = 0
    won: list = field(default_factory=list)  # (start, next) of its successes
    refused: int = 0


@settings(max_examples=200, deadline=None)
@given(writers=st.integers(2, 8), schedule=st.lists(st.integers(0, 7), min_size=1,
                                                      max_size=80),
       batches=st.lists(st.booleans(), min_size=8, max_size=8))
def test_racing_writers_each_offset_is_won_exactly_once(writers, schedule, batches):
    sm = StreamMachine()
    sm.apply(CreateStream(B, "s"), T0)
    crew = [Writer(f"w{i}") for i in range(writers)]
    winners: dict[int, str] = {}
    expected_data = b""
    for pick in schedule:
        w = crew[pick % writers]
        body = b"<%s:%d>" % (w.name.encode(), w.sent)
        tail_before = sm.streams[(B, "s")].tail
        if batches[pick % 8]:
            frames = (body[:2], body[2:])
            out = sm.apply(AppendBatch(B, "s", OCT, frames, if_match=w.known), T0)
        else:
            out = sm.apply(Append(B, "s", OCT, body, if_match=w.known), T0)
        if out.error is None:
            assert w.known == tail_before, "a stale expectation won"
            assert out.start_offset == tail_before and out.next_offset == tail_before + len(body)
            assert tail_before not in winners, f"offset {tail_before} won twice"
            winners[tail_before] = w.name
            w.won.append((out.start_offset, out.next_offset))
            expected_data += body
            w.sent += 1
        else:
            assert out.error == "precondition_failed"
            assert w.known != tail_before
            assert out.next_offset == tail_before, "a 412 carries the tail at that moment"
            w.refused += 1
        w.known = out.next_offset  # chain on the ETag, or retry with the 412's tail
    stored = sm.read(B, "s", 0, 1 << 20, T0).data
    assert stored == expected_data  # nothing lost, nothing duplicated, in winning order
    for w in crew:
        for i in range(w.sent):
            assert stored.count(b"<%s:%d>" % (w.name.encode(), i)) == 1
    # the winning offsets tile the stream
    ends = sorted(span for w in crew for span in w.won)
    assert [s for s, _ in ends] == sorted(winners)
    assert all(a[1] == b[0] for a, b in zip(ends, ends[1:], strict=False))
