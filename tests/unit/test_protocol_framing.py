"""append-batch framing: u32 big-endian length + bytes."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.protocol.errors import ProtocolError
from ursula.protocol.framing import encode_frames, split_frames


def test_encoding_layout():
    assert encode_frames([b"ab", b""]) == b"\x00\x00\x00\x02ab\x00\x00\x00\x00"
    assert encode_frames([b"x" * 256])[:4] == b"\x00\x00\x01\x00"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_round_trip(frames):
    assert split_frames(encode_frames(frames), 20) == frames


def test_empty_frame_is_a_frame():
    assert split_frames(b"\x00\x00\x00\x00", 5) == [b""]


def test_empty_body_is_400():
    with pytest.raises(ProtocolError) as info:
        split_frames(b"", 10)
    assert info.value.status == 400


@pytest.mark.parametrize("body", [b"\x00", b"\x00\x00\x00", encode_frames([b"abc"]) + b"\x00\x00"])
def test_truncated_length_is_400(body):
    with pytest.raises(ProtocolError) as info:
        split_frames(body, 10)
    assert info.value.status == 400


@pytest.mark.parametrize("body", [
    struct.pack(">I", 5) + b"abcd",
    struct.pack(">I", 1),
    encode_frames([b"ok"]) + struct.pack(">I", 3) + b"x",
    struct.pack(">I", 2**32 - 1) + b"abc",
])
def test_truncated_frame_is_400(body):
    with pytest.raises(ProtocolError) as info:
        split_frames(body, 10)
    assert info.value.status == 400


def test_exactly_max_frames_is_accepted():
    assert split_frames(encode_frames([b"a"] * 4), 4) == [b"a"] * 4


def test_too_many_frames_is_413():
    with pytest.raises(ProtocolError) as info:
        split_frames(encode_frames([b"a"] * 5), 4)
    assert info.value.status == 413
    with pytest.raises(ProtocolError) as info:
        split_frames(encode_frames([b""] * 1000), 10)
    assert info.value.status == 413
