"""Request header parsing: Stream-TTL, Stream-Expires-At, producer triple, flags, sub-offsets."""

from datetime import UTC, datetime

import pytest

from ursula.protocol.errors import ProtocolError
from ursula.protocol.headers import (
    DEFAULT_CONTENT_TYPE,
    MAX_SAFE_INTEGER,
    Lifetime,
    ProducerHeaders,
    flag,
    is_json_type,
    is_text_type,
    media_type,
    parse_expires_at,
    parse_lifetime,
    parse_producer,
    parse_sub_offset,
    parse_ttl,
)


def getter(headers: dict[str, str]):
    lowered = {k.lower(): v for k, v in headers.items()}
    return lowered.get


def assert_400(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert info.value.status == 400
    assert info.value.reason


# -- Stream-TTL ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("0", 0), ("1", 1), ("60", 60), ("86400", 86400),
                                         (str(MAX_SAFE_INTEGER), MAX_SAFE_INTEGER)])
def test_ttl_accepts_canonical_decimals(text, value):
    assert parse_ttl(text) == value


@pytest.mark.parametrize("text", ["00060", "0060", "00", "+60", "60.5", "1e3", "-1", "abc", "",
                                  " 60", "60 ", "6 0", "0x10", "60s", "\u0666\u0660",
                                  str(MAX_SAFE_INTEGER + 1)])
def test_ttl_rejects_everything_else(text):
    assert_400(parse_ttl, text)


def test_ttl_rejects_trailing_newline():
    assert_400(parse_ttl, "60\n")


# -- Stream-Expires-At --------------------------------------------------------------------

JAN1_2030_MS = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize("text, expected", [
    ("2030-01-01T00:00:00Z", JAN1_2030_MS),
    ("2030-01-01T00:00:00z", JAN1_2030_MS),
    ("2030-01-01T00:00:00+00:00", JAN1_2030_MS),
    ("2030-01-01T00:00:00-00:00", JAN1_2030_MS),
    ("2030-01-01T01:00:00+01:00", JAN1_2030_MS),
    ("2029-12-31T19:00:00-05:00", JAN1_2030_MS),
    ("2030-01-01T00:00:00.250Z", JAN1_2030_MS + 250),
    ("2030-01-01T00:00:00.5+00:00", JAN1_2030_MS + 500),
    ("  2030-01-01T00:00:00Z  ", JAN1_2030_MS),
])
def test_expires_at_accepts_rfc3339(text, expected):
    assert parse_expires_at(text) == expected


@pytest.mark.parametrize("text", [
    "", "garbage", "tomorrow", "2030-01-01", "2030-01-01T00:00:00", "2030-01-01T00:00Z",
    "2030-13-01T00:00:00Z", "2030-02-30T00:00:00Z", "2030-01-01T25:00:00Z",
    "2030-01-01T00:00:00+0000", "2030-01-01T00:00:00 Z", "1893456000", "1893456000000",
    "2030-01-01T00:00:00Zjunk", "2030/01/01T00:00:00Z",
])
def test_expires_at_rejects_garbage(text):
    assert_400(parse_expires_at, text)


def test_lifetime_none():
    assert parse_lifetime(getter({})) == Lifetime()


def test_lifetime_ttl():
    assert parse_lifetime(getter({"Stream-TTL": "60"})) == Lifetime(ttl_seconds=60)


def test_lifetime_expires_at_keeps_text_and_ms():
    life = parse_lifetime(getter({"Stream-Expires-At": "2030-01-01T00:00:00Z"}))
    assert life.ttl_seconds is None
    assert life.expires_at_ms == JAN1_2030_MS
    assert life.expires_at_text == "2030-01-01T00:00:00Z"


@pytest.mark.parametrize("ttl, expires", [("60", "2030-01-01T00:00:00Z"),
                                          ("abc", "2030-01-01T00:00:00Z"),
                                          ("60", "garbage")])
def test_ttl_and_expires_at_together_is_400(ttl, expires):
    assert_400(parse_lifetime, getter({"Stream-TTL": ttl, "Stream-Expires-At": expires}))


def test_lifetime_propagates_bad_values():
    assert_400(parse_lifetime, getter({"Stream-TTL": "+60"}))
    assert_400(parse_lifetime, getter({"Stream-Expires-At": "soon"}))


# -- Producer-Id / Producer-Epoch / Producer-Seq -----------------------------------------


def test_no_producer_headers():
    assert parse_producer(getter({})) is None


def test_full_producer_triple():
    got = parse_producer(getter({"Producer-Id": "p1", "Producer-Epoch": "3", "Producer-Seq": "7"}))
    assert got == ProducerHeaders("p1", 3, 7)


@pytest.mark.parametrize("present", [
    {"Producer-Id": "p"}, {"Producer-Epoch": "0"}, {"Producer-Seq": "0"},
    {"Producer-Id": "p", "Producer-Epoch": "0"}, {"Producer-Id": "p", "Producer-Seq": "0"},
    {"Producer-Epoch": "0", "Producer-Seq": "0"},
])
def test_partial_producer_triple_is_400(present):
    assert_400(parse_producer, getter(present))


def test_empty_producer_id_is_400():
    assert_400(parse_producer,
               getter({"Producer-Id": "", "Producer-Epoch": "0", "Producer-Seq": "0"}))


@pytest.mark.parametrize("bad", ["1abc", "0xyz", "1e3", "-1", "+1", "1.0", "", " 1", "abc",
                                 str(2**53), str(2**64)])
@pytest.mark.parametrize("which", ["Producer-Epoch", "Producer-Seq"])
def test_bad_producer_integers_are_400(which, bad):
    headers = {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0", which: bad}
    assert_400(parse_producer, getter(headers))


def test_producer_integer_upper_bound_is_2_pow_53_minus_1():
    top = str(2**53 - 1)
    got = parse_producer(getter({"Producer-Id": "p", "Producer-Epoch": top, "Producer-Seq": top}))
    assert got == ProducerHeaders("p", 2**53 - 1, 2**53 - 1)


# -- Stream-Closed and other flags --------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "tRuE"])
def test_closed_flag_true_case_insensitive(value):
    assert flag(getter({"Stream-Closed": value}), "stream-closed") is True


@pytest.mark.parametrize("value", ["false", "1", "yes", "", "truee", "t", "on"])
def test_closed_flag_other_values_are_ignored(value):
    assert flag(getter({"Stream-Closed": value}), "stream-closed") is False


def test_closed_flag_absent():
    assert flag(getter({}), "stream-closed") is False


# -- content types -------------------------------------------------------------------------


def test_media_type_strips_parameters_and_case():
    assert media_type("Text/Plain; charset=utf-8") == "text/plain"
    assert media_type("  application/JSON ") == "application/json"
    assert DEFAULT_CONTENT_TYPE == "application/octet-stream"


@pytest.mark.parametrize("ct, json_mode, text_mode", [
    ("application/json", True, True),
    ("Application/JSON; charset=utf-8", True, True),
    ("text/plain", False, True),
    ("TEXT/html", False, True),
    ("application/octet-stream", False, False),
    ("application/x-protobuf", False, False),
    ("image/png", False, False),
    ("application/jsonl", False, False),
])
def test_json_and_text_classification(ct, json_mode, text_mode):
    assert is_json_type(ct) is json_mode
    assert is_text_type(ct) is text_mode


# -- Stream-Fork-Sub-Offset ----------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("0", 0), ("1", 1), ("42", 42)])
def test_sub_offset_accepts_decimals(text, value):
    assert parse_sub_offset(text) == value


@pytest.mark.parametrize("text", ["-1", "abc", "1.5", "05", "+1", "", " 1", "1e2",
                                  str(MAX_SAFE_INTEGER + 1)])
def test_sub_offset_rejects_everything_else(text):
    assert_400(parse_sub_offset, text)
