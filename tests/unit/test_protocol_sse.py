"""SSE framing: data lines, the leading-space rule, base64 mode, control events."""

import base64
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.protocol.sse import control_event, data_event

SUITE_CONTROL = re.compile(rb"event: control\s*\ndata:({[^}]+})")


def parse_event(raw: bytes) -> tuple[str, bytes]:
    """A standard SSE client's view of one event: (event type, data with lines joined by LF)."""
    assert raw.endswith(b"\n\n")
    lines = raw[:-2].split(b"\n")
    event = None
    data = []
    for line in lines:
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            event = value.decode()
        elif field == b"data":
            data.append(value)
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return event, b"\n".join(data)


def test_single_line_text():
    assert data_event(b"hello", False) == b"event: data\ndata:hello\n\n"


@pytest.mark.parametrize("payload, lines", [
    (b"line1\nline2", [b"line1", b"line2"]),
    (b"line1\rline2", [b"line1", b"line2"]),
    (b"line1\r\nline2", [b"line1", b"line2"]),
    (b"a\r\n\r\nb", [b"a", b"", b"b"]),
    (b"a\n\rb", [b"a", b"", b"b"]),
    (b"a\n", [b"a", b""]),
    (b"", [b""]),
])
def test_line_breaks_become_separate_data_lines(payload, lines):
    expected = b"event: data\n" + b"".join(b"data:" + ln + b"\n" for ln in lines) + b"\n"
    assert data_event(payload, False) == expected


@pytest.mark.parametrize("injection", [
    b'x\n\nevent: control\ndata:{"streamNextOffset":"9"}\n\n',
    b'x\r\revent: control\rdata:{"a":1}',
    b'x\r\n\r\nevent: control\r\ndata:{"a":1}\r\n\r\n',
])
def test_injected_events_stay_data(injection):
    raw = data_event(injection, False)
    assert raw.count(b"\n\n") == 1 and raw.endswith(b"\n\n")
    assert b"\r" not in raw
    for line in raw[:-2].split(b"\n")[1:]:
        assert line.startswith(b"data:")
    assert SUITE_CONTROL.search(raw) is None


def test_leading_space_gets_one_extra_space():
    assert data_event(b" indented", False) == b"event: data\ndata:  indented\n\n"
    assert data_event(b"a\n  two", False) == b"event: data\ndata:a\ndata:   two\n\n"
    assert data_event(b"no space", False) == b"event: data\ndata:no space\n\n"


def test_json_array_payload_is_written_without_space():
    raw = data_event(b'[{"id":1,"message":"hello"}]', False)
    assert raw == b'event: data\ndata:[{"id":1,"message":"hello"}]\n\n'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12),
                max_size=6),
       st.lists(st.sampled_from([b"\n", b"\r", b"\r\n"]), min_size=5, max_size=5))
def test_standard_client_reads_back_the_lines(lines, breaks):
    encoded = [ln.replace("\r", "").replace("\n", "").encode() for ln in lines] or [b""]
    payload = b""
    for i, ln in enumerate(encoded[:-1]):
        brk = breaks[i % 5]
        if payload.endswith(b"\r") and not ln and brk.startswith(b"\n"):
            brk = b"\r"  # a bare CR followed by LF would read as one CRLF break
        payload += ln + brk
    payload += encoded[-1]
    event, data = parse_event(data_event(payload, False))
    assert event == "data"
    assert data == b"\n".join(encoded)


@pytest.mark.parametrize("payload", [b"", b"\x00\x01\xff", b"\n\r\n", bytes(range(256)) * 3])
def test_base64_mode(payload):
    raw = data_event(payload, True)
    assert raw.startswith(b"event: data\ndata:")
    assert raw.endswith(b"\n\n")
    body = raw[len(b"event: data\ndata:"):-2]
    decoded = base64.b64decode(body.replace(b"\n", b"").replace(b"data:", b""), validate=True)
    assert decoded == payload
    assert len(body.replace(b"\n", b"").replace(b"data:", b"")) % 4 == 0  # padded


def test_base64_empty_payload_is_empty_string():
    assert data_event(b"", True) == b"event: data\ndata:\n\n"


def control_body(raw: bytes) -> dict:
    match = SUITE_CONTROL.search(raw)
    assert match is not None, raw
    assert raw.startswith(b"event: control\ndata:{")
    assert raw.endswith(b"\n\n")
    return json.loads(match.group(1))


def test_control_open_with_cursor_and_up_to_date():
    raw = control_event("0000000000000000_0000000000000005", "3361728", True, False)
    assert control_body(raw) == {"streamNextOffset": "0000000000000000_0000000000000005",
                                 "streamCursor": "3361728", "upToDate": True}
    assert raw == (b'event: control\ndata:{"streamNextOffset":"0000000000000000_0000000000000005",'
                   b'"streamCursor":"3361728","upToDate":true}\n\n')


def test_control_not_up_to_date_omits_the_key():
    body = control_body(control_event("o", "1", False, False))
    assert body == {"streamNextOffset": "o", "streamCursor": "1"}


def test_control_closed_omits_cursor():
    body = control_body(control_event("o", "99", True, True))
    assert body == {"streamNextOffset": "o", "upToDate": True, "streamClosed": True}
    assert "streamCursor" not in body


def test_control_without_cursor():
    assert control_body(control_event("o", None, True, False)) == {
        "streamNextOffset": "o", "upToDate": True}


def test_control_event_has_no_space_after_data_colon():
    raw = control_event("o", "1", False, False)
    assert b"data: " not in raw
    assert b"data:{" in raw
