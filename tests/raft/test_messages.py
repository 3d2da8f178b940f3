import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ursula.raft import messages as M

ints = st.integers(min_value=0, max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=1000)
blobs = st.binary(max_size=64)
entries = st.builds(M.Entry, ints, ints, blobs, st.just(0))
metas = st.builds(
    M.SnapshotMeta,
    ints,
    ints,
    st.builds(M.ConfState, st.lists(small, max_size=5).map(tuple)),
)

MESSAGES = st.one_of(
    st.builds(M.VoteRequest, ints, small, small, ints, ints, st.booleans(), st.booleans()),
    st.builds(M.VoteResponse, ints, small, small, st.booleans(), st.booleans()),
    st.builds(
        M.AppendEntries,
        ints,
        small,
        small,
        ints,
        ints,
        st.lists(entries, max_size=4).map(tuple),
        ints,
    ),
    st.builds(M.AppendResponse, ints, small, small, ints, st.booleans(), ints, ints),
    st.builds(M.Heartbeat, ints, small, small, ints, blobs),
    st.builds(M.HeartbeatResponse, ints, small, small, blobs),
    st.builds(M.InstallSnapshot, ints, small, small, metas, ints, blobs, st.booleans()),
    st.builds(M.SnapshotResponse, ints, small, small, ints, ints),
    st.builds(M.TimeoutNow, ints, small, small),
    st.builds(M.ReadIndexRequest, ints, small, small, blobs),
    st.builds(M.ReadIndexResponse, ints, small, small, blobs, ints),
)


@given(MESSAGES)
def test_wire_round_trip_through_cbor(msg):
    wire = M.to_wire(msg)
    back = M.from_wire(cbor2.loads(cbor2.dumps(wire)))
    assert back == msg
    assert type(back) is type(msg)
    assert M.decode_message(M.encode_message(msg)) == msg


def test_every_message_type_has_a_distinct_tag():
    tags = [cls.TAG for cls in M.MESSAGE_TYPES]
    assert len(set(tags)) == len(tags) == 11


def test_wire_form_is_plain_lists():
    m = M.AppendEntries(3, 1, 2, 5, 2, (M.Entry(3, 6, b"x"),), 4)
    assert m.to_wire() == [3, 3, 1, 2, 5, 2, [[3, 6, b"x", 0]], 4]


@pytest.mark.parametrize("bad", [[], [99, 1, 2], ["x"], [1, 1, 2]])
def test_from_wire_rejects_garbage(bad):
    with pytest.raises(ValueError):
        M.from_wire(bad)


def test_records_round_trip():
    snap = M.Snapshot(M.SnapshotMeta(7, 2, M.ConfState((1, 2, 3))), b"img")
    assert M.Snapshot.from_wire(cbor2.loads(cbor2.dumps(snap.to_wire()))) == snap
    hs = M.HardState(4, 2, 9)
    assert M.HardState.from_wire(hs.to_wire()) == hs
