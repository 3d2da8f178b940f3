"""Bucket and stream name rules."""

import pytest

from ursula.protocol.errors import ProtocolError
from ursula.protocol.names import DEFAULT_BUCKET, check_bucket, check_stream


def assert_400(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert info.value.status == 400


# -- buckets -------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", ["abc", "a-b", "a_b", "0ab", "9-9", "abc-def_123",
                                    "a" * 63, DEFAULT_BUCKET])
def test_valid_buckets(bucket):
    assert check_bucket(bucket) == bucket


@pytest.mark.parametrize("bucket", [
    "", "a", "ab", "a" * 64, "Abc", "ABC", "-ab", "_ab", "ab.", "a.b", "a b", "a/b", "ab\x00",
    "v1", "__ds", "_default_", "ab\u00e9", "..", "...", "abc ", " abc",
])
def test_invalid_buckets(bucket):
    assert_400(check_bucket, bucket)


def test_bucket_with_trailing_newline_is_rejected():
    # A `%0A` at the end of the bucket path segment must not produce a bucket named "abc\n".
    assert_400(check_bucket, "abc\n")


# -- streams -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "events", "a.b", "a..b", "_x", "_", "x__", "caf\u00e9",
                                  "a-b_c.d~e", "\u65e5\u672c", "a" * 100])
def test_valid_single_segment_streams(name):
    assert check_stream(name, 100, False) == name
    assert check_stream(name, 100, True) == name


@pytest.mark.parametrize("name", ["a/b", "events/abc/def", "x/.y", "x/..y"])
def test_slash_allowed_only_in_the_v1_layout(name):
    assert check_stream(name, 100, True) == name
    assert_400(check_stream, name, 100, False)


@pytest.mark.parametrize("name", ["", ".", "..", "a/..", "../a", "a/../b", "a/./b", "./a", "a/.",
                                  "/a", "a/", "a//b", "/"])
@pytest.mark.parametrize("allow_slash", [True, False])
def test_empty_dot_and_dotdot_segments_are_rejected(name, allow_slash):
    assert_400(check_stream, name, 100, allow_slash)


@pytest.mark.parametrize("name", ["__ds", "__ursula", "__", "__x/y"])
def test_reserved_names(name):
    assert_400(check_stream, name, 100, True)


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "a\rb", "a\tb", "\x1f", "x\x7f", "a\n"])
def test_control_characters_are_rejected(name):
    assert_400(check_stream, name, 100, True)


def test_length_limit_counts_utf8_bytes():
    assert check_stream("a" * 10, 10, False) == "a" * 10
    assert_400(check_stream, "a" * 11, 10, False)
    # five two-byte characters are 10 bytes; six are 12
    assert check_stream("\u00e9" * 5, 10, False) == "\u00e9" * 5
    assert_400(check_stream, "\u00e9" * 6, 10, False)
    assert_400(check_stream, "\u65e5" * 4, 10, False)  # 12 bytes
