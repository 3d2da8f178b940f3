"""Offsets on the wire: rendering, parsing, sentinels and the malformed values that get 400."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.protocol.errors import ProtocolError
from ursula.protocol.offsets import (
    NOW,
    START,
    ZERO,
    parse_read_offset,
    parse_wire_offset,
    render_offset,
)

MAX16 = 10**16 - 1


def test_zero_offset_is_the_hard_coded_reference_value():
    assert render_offset(0) == "0000000000000000_0000000000000000"
    assert ZERO == render_offset(0)


@pytest.mark.parametrize("position, text", [
    (1, "0000000000000000_0000000000000001"),
    (5, "0000000000000000_0000000000000005"),
    (1234567890, "0000000000000000_0000001234567890"),
    (MAX16, "0000000000000000_9999999999999999"),
])
def test_render_offset_is_zero_padded(position, text):
    assert render_offset(position) == text
    assert len(render_offset(position)) == 33


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX16), st.integers(0, MAX16))
def test_string_order_equals_numeric_order(a, b):
    assert (render_offset(a) < render_offset(b)) == (a < b)
    assert (render_offset(a) == render_offset(b)) == (a == b)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX16))
def test_render_parse_round_trip(position):
    assert parse_wire_offset(render_offset(position)) == position
    assert parse_read_offset([render_offset(position)]) == position


def test_rendered_offsets_never_contain_reserved_characters():
    for position in (0, 7, 10**15, MAX16):
        text = render_offset(position)
        assert not set(text) & set(",&=?/ ")
        assert text not in ("-1", "now")


def test_sentinels():
    assert parse_read_offset(None) == START
    assert parse_read_offset(["-1"]) == START
    assert parse_read_offset(["now"]) == NOW
    assert parse_read_offset([ZERO]) == 0
    assert START != NOW


MALFORMED = [
    "",
    " ",
    ",",
    "0000000000000000_0000000000000000,0000000000000000_0000000000000001",
    "0000000000000000_0000000000000000,",
    " 0000000000000000_0000000000000000",
    "0000000000000000_0000000000000000 ",
    "0000000000000000 0000000000000000",
    "0000000000000000_00000000 00000000",
    "..",
    "../0000000000000000_0000000000000000",
    "0000000000000000_0000000000000000/..",
    "/",
    "\x00",
    "0000000000000000_000000000000000\x00",
    "0000000000000000_0000000000000000\x00",
    "0000000000000000_0000000000000000\r\n",
    "\r\n0000000000000000_0000000000000000",
    "000000000000000_0000000000000000",  # 15-digit first field
    "0000000000000000_000000000000000",  # 15-digit second field
    "00000000000000000_0000000000000000",  # 17-digit first field
    "0000000000000000_00000000000000000",  # 17-digit second field
    "0000000000000001_0000000000000000",  # nonzero first field
    "9999999999999999_0000000000000005",
    "0000000000000000-0000000000000000",
    "0000000000000000__0000000000000000",
    "_0000000000000000",
    "0000000000000000_",
    "0_0",
    "5",
    "-2",
    "-1 ",
    "NOW",
    "Now",
    "now ",
    "abc",
    "0x10",
    "+000000000000000_0000000000000000",
    "0000000000000000_+000000000000001",
    "0000000000000000_-000000000000001",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_read_offsets_are_400(text):
    with pytest.raises(ProtocolError) as info:
        parse_read_offset([text])
    assert info.value.status == 400


@pytest.mark.parametrize("text", [t for t in MALFORMED] + ["-1", "now"])
def test_wire_parser_rejects_malformed_values_and_sentinels(text):
    with pytest.raises(ProtocolError) as info:
        parse_wire_offset(text)
    assert info.value.status == 400


@pytest.mark.parametrize("values", [[], ["-1", "-1"], [ZERO, ZERO], ["now", "-1"]])
def test_offset_given_zero_or_several_times_is_400(values):
    with pytest.raises(ProtocolError) as info:
        parse_read_offset(values)
    assert info.value.status == 400


def test_trailing_newline_is_rejected():
    # `?offset=...%0A` reaches the parser as a trailing LF; the spec says CR/LF get 400.
    with pytest.raises(ProtocolError) as info:
        parse_read_offset(["0000000000000000_0000000000000000\n"])
    assert info.value.status == 400


@pytest.mark.parametrize("digit", ["\u0663", "\uff13", "\u09e9"])  # Arabic-Indic, fullwidth, Bengali 3
def test_non_ascii_digits_are_rejected(digit):
    # The offset format is ASCII digits only; other Unicode decimal digits must not parse.
    with pytest.raises(ProtocolError) as info:
        parse_read_offset(["0000000000000000_000000000000000" + digit])
    assert info.value.status == 400
