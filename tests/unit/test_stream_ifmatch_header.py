"""Parsing of the If-Match header of an append, and the tail's ETag."""

import pytest

from ursula.protocol.errors import ProtocolError
from ursula.protocol.headers import IF_MATCH_ANY, parse_if_match
from ursula.protocol.offsets import render_offset, tail_etag


def test_absent_is_none():
    assert parse_if_match(None) is None


@pytest.mark.parametrize("position", [0, 5, 2**53 - 1])
def test_a_quoted_offset_is_its_position(position):
    assert parse_if_match([f'"{render_offset(position)}"']) == position
    assert parse_if_match([f'  "{render_offset(position)}" ']) == position
    assert parse_if_match([tail_etag(position)]) == position


def test_the_wildcard_is_parsed_and_left_to_the_state_machine():
    assert parse_if_match(["*"]) == IF_MATCH_ANY
    assert parse_if_match([" * "]) == IF_MATCH_ANY


@pytest.mark.parametrize(("value", "words"), [
    ("0000000000000000_0000000000000005", "quoted"),
    ('W/"0000000000000000_0000000000000005"', "strong"),
    ('"0000000000000000_0000000000000005", "0000000000000000_0000000000000006"', "list"),
    ('"-1"', "offset"),
    ('"now"', "offset"),
    ('"1:0:3"', "offset"),  # the ETag of a GET is not an offset
    ('"0000000000000001_0000000000000005"', "offset"),
    ('"0000000000000000_000000000000005"', "offset"),
    ('""', "offset"),
    ('"', "quoted"),
    ("", "quoted"),
    ('"0000000000000000_0000000000000005', "quoted"),
    ("**", "quoted"),
])
def test_anything_else_is_400_with_a_reason(value, words):
    with pytest.raises(ProtocolError) as caught:
        parse_if_match([value])
    assert caught.value.status == 400
    assert "If-Match" in caught.value.reason and words in caught.value.reason
    assert "\n" not in caught.value.reason


def test_a_repeated_header_is_400():
    with pytest.raises(ProtocolError, match="once"):
        parse_if_match([tail_etag(1), tail_etag(1)])


def test_the_tail_etag_is_the_quoted_wire_offset():
    assert tail_etag(7) == '"0000000000000000_0000000000000007"'
