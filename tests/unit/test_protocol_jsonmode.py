"""JSON mode: one-level flattening, exact text preservation, invalid bodies, record rendering."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.protocol.errors import ProtocolError
from ursula.protocol.jsonmode import render_records, split_messages


@pytest.mark.parametrize("body, messages", [
    (b'{"a":1}', [b'{"a":1}']),
    (b'[{"a":1},{"b":2}]', [b'{"a":1}', b'{"b":2}']),
    (b'[[1,2],[3,4]]', [b'[1,2]', b'[3,4]']),
    (b'[[[1,2,3]]]', [b'[[1,2,3]]']),
    (b'[]', []),
    (b' [ ] ', []),
    (b'[\n]', []),
    (b'1', [b'1']),
    (b'"x"', [b'"x"']),
    (b'null', [b'null']),
    (b'true', [b'true']),
    (b'[null]', [b'null']),
    (b'[1,"two",null,false,{"x":[]}]', [b'1', b'"two"', b'null', b'false', b'{"x":[]}']),
    (b'[[]]', [b'[]']),
    (b'[{}]', [b'{}']),
])
def test_one_level_flattening(body, messages):
    assert split_messages(body) == messages


def test_exact_text_is_preserved():
    # numbers, key order, escapes and inner whitespace are kept byte for byte
    body = b'[ 1.0 , 1e2,{"b" : 1, "a":2} ,"\\u00e9\\n", -0, 12345678901234567890 ]'
    assert split_messages(body) == [
        b"1.0", b"1e2", b'{"b" : 1, "a":2}', b'"\\u00e9\\n"', b"-0", b"12345678901234567890"]


def test_whitespace_around_a_single_value_is_dropped():
    assert split_messages(b' \n\t{"a": 1}\r\n ') == [b'{"a": 1}']


def test_utf8_text_round_trips():
    body = '["caf\u00e9", {"k": "\u65e5\u672c"}]'.encode()
    assert split_messages(body) == ['"caf\u00e9"'.encode(), '{"k": "\u65e5\u672c"}'.encode()]


@pytest.mark.parametrize("body", [
    b"", b" ", b"{", b"[", b"]", b"[1,]", b"[,1]", b"[1 2]", b"[1,,2]", b"{'a':1}", b"abc",
    b"NaN", b"[NaN]", b"Infinity", b"-Infinity", b"[1,Infinity]", b'{"a":NaN}',
    b"1 2", b"{} {}", b"[] []", b"[1]x", b'{"a":1}}', b"[1]]", b"\xff\xfe", b'"\xff"',
    b"[1", b'{"a":1', b"01", b"[01]", b"+1", b".5", b"[1,2", b"//c\n1",
])
def test_invalid_json_is_400(body):
    with pytest.raises(ProtocolError) as info:
        split_messages(body)
    assert info.value.status == 400


def test_deep_nesting_is_400_not_a_crash():
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ProtocolError) as info:
        split_messages(body)
    assert info.value.status == 400


def test_render_records():
    assert render_records(b"") == b"[]"
    assert render_records(b"1,") == b"[1]"
    assert render_records(b'{"a":1},[1,2],') == b'[{"a":1},[1,2]]'


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(JSON_VALUES, min_size=1, max_size=6), st.sampled_from(["", " ", "\n", "\t "]))
def test_split_then_render_is_the_same_json(values, space):
    body = ("[" + space + ("," + space).join(json.dumps(v) for v in values) + space + "]").encode()
    messages = split_messages(body)
    assert [json.loads(m) for m in messages] == values
    assert messages == [json.dumps(v).encode() for v in values]
    rendered = render_records(b"".join(m + b"," for m in messages))
    assert json.loads(rendered) == values


@settings(max_examples=100, deadline=None)
@given(JSON_VALUES.filter(lambda v: not isinstance(v, list)))
def test_non_array_is_one_message(value):
    text = json.dumps(value).encode()
    assert split_messages(text) == [text]
