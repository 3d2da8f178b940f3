"""``ursula.wire.bulk``: large byte strings beside the cbor structure, and back."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ursula.wire.bulk import BULK_TAG, BadBulk, Bulk, pack, unpack

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4), max_leaves=20)


def _mark(value, draw_bulk):
    """``value`` with some of its byte strings wrapped in Bulk."""
    if isinstance(value, bytes) and draw_bulk():
        return Bulk(value)
    if isinstance(value, list):
        return [_mark(v, draw_bulk) for v in value]
    return value


@given(plain, st.lists(st.booleans(), min_size=1, max_size=50))
def test_what_is_packed_unpacks_to_the_same_value(value, choices):
    it = iter(choices * 100)
    marked = _mark(value, lambda: next(it))
    structure, bulk = pack(marked)
    assert unpack(structure, bulk) == value


def test_no_bulk_is_plain_cbor():
    structure, bulk = pack(["ok", b"x", [1, 2]])
    assert bulk == b"" and cbor2.loads(structure) == ["ok", b"x", [1, 2]]


def test_a_lone_bulk_value_is_not_copied():
    data = bytes(100_000)
    structure, bulk = pack([["ok", [1, Bulk(data)]]])
    assert bulk is data and len(structure) < 50
    assert unpack(structure, bulk)[0][1][1] is data


def test_a_tag_outside_the_buffer_is_refused():
    for bad in ([0, 10], [5, 1], [-1, 2], ["a", 1], [1]):
        structure = cbor2.dumps([cbor2.CBORTag(BULK_TAG, bad)])
        with pytest.raises((BadBulk, cbor2.CBORDecodeError)) as caught:
            unpack(structure, b"abcd")
        # (cbor2 6 wraps what a tag hook raises; 5 lets it through)
        assert isinstance(caught.value, BadBulk) or isinstance(caught.value.__cause__, BadBulk)


def test_other_tags_pass_through_and_unknown_types_still_fail():
    assert unpack(cbor2.dumps(cbor2.CBORTag(99999, 1)), b"") == cbor2.CBORTag(99999, 1)
    with pytest.raises(cbor2.CBOREncodeError):
        pack([object()])
