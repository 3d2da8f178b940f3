"""Stream-Cursor: the interval number, and strictly larger answers for echoed cursors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.protocol.cursor import CURSOR_EPOCH_MS, DEFAULT_INTERVAL_MS, next_cursor

NOW = CURSOR_EPOCH_MS + 1000 * DEFAULT_INTERVAL_MS + 1234  # interval 1000


def test_current_interval_without_client_cursor():
    assert next_cursor(NOW, None, 7) == "1000"
    assert next_cursor(CURSOR_EPOCH_MS, None, 7) == "0"
    assert next_cursor(CURSOR_EPOCH_MS + DEFAULT_INTERVAL_MS - 1, None, 7) == "0"
    assert next_cursor(CURSOR_EPOCH_MS + DEFAULT_INTERVAL_MS, None, 7) == "1"


def test_before_the_epoch_is_zero():
    assert next_cursor(0, None, 3) == "0"


def test_custom_interval():
    assert next_cursor(CURSOR_EPOCH_MS + 10_000, None, 1, interval_ms=1000) == "10"


def test_older_client_cursor_gets_current():
    assert next_cursor(NOW, "999", 7) == "1000"
    assert next_cursor(NOW, "0", 7) == "1000"


def test_echoed_current_cursor_gets_a_strictly_larger_one():
    assert next_cursor(NOW, "1000", 7) == "1007"


def test_future_cursor_gets_a_strictly_larger_one():
    assert next_cursor(NOW, "5000", 3) == "5003"


def test_jitter_is_at_least_one():
    assert next_cursor(NOW, "1000", 0) == "1001"
    assert next_cursor(NOW, "1000", -5) == "1001"


@pytest.mark.parametrize("garbage", ["", "abc", "-1", "1.5", " 1000", "1e3"])
def test_garbage_cursor_is_ignored(garbage):
    assert next_cursor(NOW, garbage, 7) == "1000"


@pytest.mark.parametrize("garbage", ["\u00b2", "\u00b9\u00b2\u00b3", "1\u00b2"])
def test_unicode_digit_like_cursor_is_ignored_not_a_crash(garbage):
    # `cursor=%C2%B2` must not raise (str.isdigit() is True for superscripts, int() rejects them)
    assert next_cursor(NOW, garbage, 7) == "1000"


@settings(max_examples=200, deadline=None)
@given(st.integers(CURSOR_EPOCH_MS, CURSOR_EPOCH_MS + 10**12), st.integers(0, 10**9),
       st.integers(1, 180))
def test_answer_is_current_or_strictly_greater_than_echo(now_ms, client, jitter):
    current = (now_ms - CURSOR_EPOCH_MS) // DEFAULT_INTERVAL_MS
    answer = next_cursor(now_ms, str(client), jitter)
    assert answer.isascii() and answer.isdigit()
    if client >= current:
        assert int(answer) == client + jitter
        assert int(answer) > client
    else:
        assert int(answer) == current
