"""If-Match conditional appends over HTTP (the data plane, on the single-process core and on a
Raft cluster of one): ETag on success, 412 with the current tail, the check order, close,
append-batch, bad headers and CORS."""

from __future__ import annotations

import pytest_twisted
from api_helpers import call, header

from ursula.protocol.framing import encode_frames
from ursula.protocol.offsets import render_offset, tail_etag

TEXT = {"Content-Type": "text/plain"}


def at(position: int) -> str:
    return tail_etag(position)


@pytest_twisted.inlineCallbacks
def make(node, name: str, body: bytes = b"abc", **headers):
    url = node.url + "/v1/stream/" + name
    response, _ = yield call("PUT", url, body, {**TEXT, **headers})
    assert response.code == 201
    return url


@pytest_twisted.inlineCallbacks
def test_a_matching_if_match_appends_and_answers_the_new_tail_as_etag(node):
    url = yield make(node, "cas-1")
    response, _ = yield call("HEAD", url)
    tail = header(response, "Stream-Next-Offset")
    assert tail == render_offset(3)
    response, body = yield call("POST", url, b"de", {**TEXT, "If-Match": f'"{tail}"'})
    assert response.code == 204 and body == b""
    assert header(response, "ETag") == at(5)
    assert header(response, "Stream-Next-Offset") == render_offset(5)
    # chained on the ETag, without a HEAD
    response, _ = yield call("POST", url, b"f", {**TEXT, "If-Match": header(response, "ETag")})
    assert response.code == 204 and header(response, "ETag") == at(6)
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b"abcdef"
    # an unconditional append carries no ETag (its Stream-Next-Offset is the same tail)
    response, _ = yield call("POST", url, b"g", TEXT)
    assert response.code == 204 and header(response, "ETag") is None


@pytest_twisted.inlineCallbacks
def test_a_stale_if_match_is_412_with_the_current_tail(node):
    url = yield make(node, "cas-2")
    response, _ = yield call("POST", url, b"x", TEXT)  # another writer moved the tail
    assert response.code == 204
    response, body = yield call("POST", url, b"y", {**TEXT, "If-Match": at(3)})
    assert response.code == 412
    assert header(response, "ETag") == at(4)
    assert header(response, "Stream-Next-Offset") == render_offset(4)
    assert header(response, "Stream-Closed") is None
    assert body.count(b"\n") == 1 and b"If-Match" in body
    # the retry with the tail the 412 carried succeeds
    response, _ = yield call("POST", url, b"y", {**TEXT, "If-Match": at(4)})
    assert response.code == 204 and header(response, "ETag") == at(5)
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b"abcxy"


@pytest_twisted.inlineCallbacks
def test_the_check_order(node):
    missing = node.url + "/v1/stream/cas-missing"
    producer = {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"}
    # 404 first: before the wildcard, producer headers and a stale tail
    for extra in [{"If-Match": "*"}, {"If-Match": at(0), **producer}, {"If-Match": at(9)}]:
        response, _ = yield call("POST", missing, b"x", {**TEXT, **extra})
        assert response.code == 404, extra
    # 409 closed next (even with a stale tail, producer headers or *)
    closed = yield make(node, "cas-closed", **{"Stream-Closed": "true"})
    for extra in [{"If-Match": "*"}, {"If-Match": at(0), **producer}, {"If-Match": at(9)}]:
        response, _ = yield call("POST", closed, b"x", {**TEXT, **extra})
        assert response.code == 409 and header(response, "Stream-Closed") == "true", extra
        assert header(response, "Stream-Next-Offset") == render_offset(3)
    # then 409 content type, then 400, then 412
    url = yield make(node, "cas-order")
    json = {"Content-Type": "application/json"}
    for extra in [{"If-Match": "*"}, {"If-Match": at(0), **producer}, {"If-Match": at(9)}]:
        response, _ = yield call("POST", url, b"[1]", {**json, **extra})
        assert response.code == 409 and header(response, "Stream-Closed") is None, extra
    for extra in [{"If-Match": "*"}, {"If-Match": at(0), **producer}, {"If-Match": at(3),
                                                                        **producer}]:
        response, body = yield call("POST", url, b"x", {**TEXT, **extra})
        assert response.code == 400, extra
        assert body.count(b"\n") == 1
    response, _ = yield call("POST", url, b"x", {**TEXT, "If-Match": at(0), "Stream-Seq": "b"})
    assert response.code == 412
    response, _ = yield call("POST", url, b"x", {**TEXT, "If-Match": at(3), "Stream-Seq": "b"})
    assert response.code == 204
    # a Stream-Seq regression is judged after a matching If-Match
    response, _ = yield call("POST", url, b"y", {**TEXT, "If-Match": at(4), "Stream-Seq": "a"})
    assert response.code == 409
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b"abcx"


@pytest_twisted.inlineCallbacks
def test_close_with_if_match(node):
    url = yield make(node, "cas-close")
    closing = {"Stream-Closed": "true"}
    response, _ = yield call("POST", url, b"", {**closing, "If-Match": at(1)})
    assert response.code == 412 and header(response, "Stream-Closed") is None
    response, _ = yield call("POST", url, b"!", {**TEXT, **closing, "If-Match": at(3)})
    assert response.code == 204 and header(response, "Stream-Closed") == "true"
    assert header(response, "ETag") == at(4)
    # close-only again: at the tail a no-op 204, elsewhere 412 that says it is closed
    response, _ = yield call("POST", url, b"", {**closing, "If-Match": at(4)})
    assert response.code == 204 and header(response, "Stream-Closed") == "true"
    assert header(response, "ETag") == at(4)
    response, _ = yield call("POST", url, b"", {**closing, "If-Match": at(3)})
    assert response.code == 412
    assert header(response, "Stream-Closed") == "true" and header(response, "ETag") == at(4)
    assert header(response, "Stream-Next-Offset") == render_offset(4)


@pytest_twisted.inlineCallbacks
def test_a_malformed_if_match_is_400_with_a_reason(node):
    url = yield make(node, "cas-bad")
    for value in [render_offset(3), "W/" + at(3), f"{at(3)}, {at(4)}", '"-1"',
                  '"abc"', '"1:0:3"', '"', "", "\u00e9"]:
        response, body = yield call("POST", url, b"x", {**TEXT, "If-Match": value})
        assert response.code == 400, value
        assert b"If-Match" in body and body.count(b"\n") == 1, body
    response, body = yield call("POST", url, b"x", {**TEXT, "If-Match": [at(3), at(3)]})
    assert response.code == 400 and b"once" in body
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b"abc"


@pytest_twisted.inlineCallbacks
def test_a_json_stream_expects_its_own_offsets(node):
    url = node.url + "/v1/stream/cas-json"
    json = {"Content-Type": "application/json"}
    response, _ = yield call("PUT", url, b"[1]", json)
    tail = header(response, "Stream-Next-Offset")
    response, _ = yield call("POST", url, b"[2, 3]", {**json, "If-Match": f'"{tail}"'})
    assert response.code == 204
    etag = header(response, "ETag")
    response, _ = yield call("POST", url, b"{", {**json, "If-Match": f'"{tail}"'})
    assert response.code == 412  # before the body is judged
    response, _ = yield call("POST", url, b"{", {**json, "If-Match": etag})
    assert response.code == 400
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b"[1,2,3]"


@pytest_twisted.inlineCallbacks
def test_a_conditional_append_batch_is_all_or_nothing(node):
    response, _ = yield call("PUT", node.url + "/casb/s", b"ab", TEXT)
    assert response.code == 201
    url = node.url + "/casb/s/append-batch"
    response, body = yield call("POST", url, encode_frames([b"c", b"de"]),
                                {**TEXT, "If-Match": at(2)})
    assert response.code == 200 and header(response, "ETag") == at(5)
    assert body == (b'[{"status":204,"offset":"%s","next_offset":"%s"},'
                    b'{"status":204,"offset":"%s","next_offset":"%s"}]'
                    % tuple(render_offset(p).encode() for p in (2, 3, 3, 5)))
    response, _ = yield call("POST", url, encode_frames([b"f"]), {**TEXT, "If-Match": at(2)})
    assert response.code == 412 and header(response, "ETag") == at(5)
    response, body = yield call("POST", url, encode_frames([b"f", b"", b"g"]),
                                {**TEXT, "If-Match": at(5)})
    assert response.code == 400
    assert b"frame 1" in body and b"nothing was appended" in body
    response, body = yield call("POST", url, encode_frames([b"f"]),
                                {**TEXT, "If-Match": "*"})
    assert response.code == 400
    response, body = yield call("POST", url, encode_frames([b"f"]),
                                {**TEXT, "If-Match": at(5), "Producer-Id": "p",
                                 "Producer-Epoch": "0", "Producer-Seq": "0"})
    assert response.code == 400
    response, body = yield call("GET", node.url + "/casb/s?offset=-1")
    assert body == b"abcde"
    # without If-Match a bad frame is refused on its own, as before
    response, body = yield call("POST", url, encode_frames([b"f", b""]), TEXT)
    assert response.code == 200 and b'"status":400' in body and header(response, "ETag") is None


@pytest_twisted.inlineCallbacks
def test_cors_allows_if_match_and_exposes_etag(node):
    url = node.url + "/v1/stream/cas-cors"
    response, _ = yield call("OPTIONS", url, None, {
        "Origin": "http://example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "if-match, content-type"})
    assert response.code == 204
    allowed = [h.strip().lower() for h in
               header(response, "Access-Control-Allow-Headers").split(",")]
    assert "if-match" in allowed
    exposed = [h.strip().lower() for h in
               header(response, "Access-Control-Expose-Headers").split(",")]
    assert "etag" in exposed and "stream-next-offset" in exposed
    url = yield make(node, "cas-cors2")
    response, _ = yield call("POST", url, b"x", {**TEXT, "If-Match": at(0)})
    assert response.code == 412 and header(response, "Access-Control-Allow-Origin") == "*"
