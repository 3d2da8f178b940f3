"""HTTP tests against the real Klein app on a loopback port: both layouts, headers, errors."""

from __future__ import annotations

import json

import pytest_twisted
from api_helpers import call, header

from ursula.protocol.framing import encode_frames

ZERO = "0000000000000000_0000000000000000"


@pytest_twisted.inlineCallbacks
def test_create_append_read_round_trip(node):
    url = node.url + "/v1/stream/chat/room-1"
    response, _ = yield call("PUT", url, b"hello ", {"Content-Type": "text/plain"})
    assert response.code == 201
    assert header(response, "Location").endswith("/v1/stream/chat/room-1")
    assert header(response, "Stream-Next-Offset") == "0000000000000000_0000000000000006"
    response, _ = yield call("POST", url, b"world", {"Content-Type": "text/plain"})
    assert response.code == 204
    response, body = yield call("GET", url + "?offset=-1")
    assert response.code == 200
    assert body == b"hello world"
    assert header(response, "Stream-Up-To-Date") == "true"
    assert header(response, "Content-Type") == "text/plain"
    response, body = yield call("GET", url + "?offset=0000000000000000_0000000000000006")
    assert body == b"world"


@pytest_twisted.inlineCallbacks
def test_upstream_layout_is_the_default_bucket(node):
    response, _ = yield call("PUT", node.url + "/v1/stream/shared", b"x",
                             {"Content-Type": "text/plain"})
    assert response.code == 201
    response, body = yield call("GET", node.url + "/_default/shared?offset=-1")
    assert response.code == 200 and body == b"x"
    response, _ = yield call("POST", node.url + "/_default/shared", b"y",
                             {"Content-Type": "text/plain"})
    assert response.code == 204
    response, body = yield call("GET", node.url + "/v1/stream/shared?offset=-1")
    assert body == b"xy"


@pytest_twisted.inlineCallbacks
def test_slash_names_are_reachable_percent_encoded_in_the_bucket_layout(node):
    yield call("PUT", node.url + "/v1/stream/a/b", b"nested", {"Content-Type": "text/plain"})
    response, body = yield call("GET", node.url + "/_default/a%2Fb?offset=-1")
    assert response.code == 200 and body == b"nested"


@pytest_twisted.inlineCallbacks
def test_every_response_carries_security_and_cors_headers(node):
    for method, path in [("GET", "/v1/stream/missing?offset=-1"), ("HEAD", "/v1/stream/nope"),
                         ("GET", "/no/such/route/here"), ("PUT", "/BadBucket/x")]:
        response, _ = yield call(method, node.url + path)
        assert response.code >= 400
        assert header(response, "X-Content-Type-Options") == "nosniff"
        assert header(response, "Access-Control-Allow-Origin") == "*"


@pytest_twisted.inlineCallbacks
def test_error_bodies_are_one_line_without_traceback(node):
    url = node.url + "/v1/stream/e1"
    yield call("PUT", url, None, {"Content-Type": "text/plain"})
    cases = [
        ("GET", url + "?offset=abc", None, {}),
        ("GET", url + "?offset=1,2", None, {}),
        ("GET", url + "?offset=-1&offset=now", None, {}),
        ("GET", url + "?live=sse", None, {}),
        ("GET", url + "?offset=-1&live=bogus", None, {}),
        ("POST", url, b"x", {}),
        ("POST", url, b"", {"Content-Type": "text/plain"}),
        ("PUT", url + "2", None, {"Stream-TTL": "1e3"}),
        ("PUT", url + "3", None, {"Stream-TTL": "5", "Stream-Expires-At": "2030-01-01T00:00:00Z"}),
        ("POST", url, b"x", {"Content-Type": "text/plain", "Producer-Id": "p"}),
        ("PUT", url + "4", None, {"Stream-Fork-Sub-Offset": "1"}),
        ("GET", node.url + "/v1/stream/" + "n" * 600 + "?offset=-1", None, {}),
        ("GET", node.url + "/v1/stream/a/../b?offset=-1", None, {}),
        ("GET", node.url + "/v1/stream/__ursula?offset=-1", None, {}),
        ("PUT", node.url + "/ab/x", None, {}),
    ]
    for method, target, body, headers in cases:
        response, content = yield call(method, target, body, headers)
        assert response.code == 400, (method, target, response.code, content)
        assert b"Traceback" not in content
        assert content.count(b"\n") == 1, content


@pytest_twisted.inlineCallbacks
def test_body_larger_than_limit_is_413(node_factory):
    node = node_factory(limits={"max_body_bytes": 1024})
    url = node.url + "/v1/stream/big"
    yield call("PUT", url, None, {"Content-Type": "application/octet-stream"})
    response, content = yield call("POST", url, b"x" * 2048,
                                   {"Content-Type": "application/octet-stream"})
    assert response.code == 413
    assert b"max_body_bytes" in content
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b""  # nothing of the rejected body was stored
    response, _ = yield call("POST", url, b"x" * 1024, {"Content-Type": "application/octet-stream"})
    assert response.code == 204


@pytest_twisted.inlineCallbacks
def test_oversized_headers_are_rejected(node_factory):
    node = node_factory(limits={"max_header_bytes": 2048})
    response, _ = yield call("GET", node.url + "/v1/stream/h?offset=-1", None,
                             {"X-Padding": "a" * 4096})
    assert response.code == 400


@pytest_twisted.inlineCallbacks
def test_head_reports_metadata_and_bytes(node):
    url = node.url + "/v1/stream/meta"
    yield call("PUT", url, b"12345", {"Content-Type": "text/plain", "Stream-TTL": "3600"})
    response, body = yield call("HEAD", url)
    assert response.code == 200 and body == b""
    assert header(response, "Stream-TTL") == "3600"
    assert header(response, "Cache-Control") == "no-store"
    assert header(response, "Ursula-Stream-Bytes") == "5"
    assert header(response, "Stream-Closed") is None


@pytest_twisted.inlineCallbacks
def test_buckets_create_list_delete(node):
    response, _ = yield call("PUT", node.url + "/photos")
    assert response.code == 201
    response, _ = yield call("PUT", node.url + "/photos")
    assert response.code == 200
    for name in ["c", "a", "b"]:
        response, _ = yield call("PUT", node.url + f"/photos/{name}", None,
                                 {"Content-Type": "text/plain"})
        assert response.code == 201
    response, body = yield call("GET", node.url + "/photos?limit=2")
    page = json.loads(body)
    assert [s["name"] for s in page["streams"]] == ["a", "b"]
    assert page["next_cursor"] == "b"
    response, body = yield call("GET", node.url + "/photos?limit=2&cursor=b")
    page = json.loads(body)
    assert [s["name"] for s in page["streams"]] == ["c"] and page["next_cursor"] is None
    response, _ = yield call("DELETE", node.url + "/photos")
    assert response.code == 409
    for name in ["a", "b", "c"]:
        yield call("DELETE", node.url + f"/photos/{name}")
    response, _ = yield call("DELETE", node.url + "/photos")
    assert response.code == 204
    response, _ = yield call("GET", node.url + "/photos")
    assert response.code == 404


@pytest_twisted.inlineCallbacks
def test_append_batch(node):
    url = node.url + "/logs/app"
    yield call("PUT", url, None, {"Content-Type": "text/plain"})
    response, body = yield call("POST", url + "/append-batch",
                                encode_frames([b"one", b"", b"three"]),
                                {"Content-Type": "text/plain"})
    assert response.code == 200
    results = json.loads(body)
    assert [r["status"] for r in results] == [204, 400, 204]
    assert results[2]["next_offset"] == "0000000000000000_0000000000000008"
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b"onethree"
    response, _ = yield call("POST", url + "/append-batch", b"\x00\x00\x00\x09abc",
                             {"Content-Type": "text/plain"})
    assert response.code == 400


@pytest_twisted.inlineCallbacks
def test_append_batch_frame_limit(node_factory):
    node = node_factory(limits={"max_batch_frames": 2})
    url = node.url + "/logs/limited"
    yield call("PUT", url, None, {"Content-Type": "text/plain"})
    response, _ = yield call("POST", url + "/append-batch", encode_frames([b"a", b"b", b"c"]),
                             {"Content-Type": "text/plain"})
    assert response.code == 413
    response, body = yield call("GET", url + "?offset=-1")
    assert body == b""


@pytest_twisted.inlineCallbacks
def test_metrics_count_streams_bytes_and_statuses(node):
    yield call("PUT", node.url + "/v1/stream/m1", b"abc", {"Content-Type": "text/plain"})
    yield call("GET", node.url + "/v1/stream/nope?offset=-1")
    response, body = yield call("GET", node.admin_url + "/__ursula/metrics")
    assert response.code == 200
    text = body.decode()
    assert "ursula_streams 1.0" in text
    assert "ursula_stream_bytes 3.0" in text
    assert 'ursula_http_requests_total{method="PUT",status="201"} 1.0' in text
    assert 'ursula_http_requests_total{method="GET",status="404"} 1.0' in text


@pytest_twisted.inlineCallbacks
def test_health(node):
    response, body = yield call("GET", node.url + "/__ursula/health")
    assert response.code == 200 and json.loads(body) == {"status": "ok"}


@pytest_twisted.inlineCallbacks
def test_unknown_method_is_405(node):
    response, content = yield call("PATCH", node.url + "/v1/stream/x")
    assert response.code == 405
    assert b"Traceback" not in content


@pytest_twisted.inlineCallbacks
def test_a_name_is_percent_decoded_once(node):
    # %2541 is "%41" once decoded: the stream is named pct-a%41, not pct-aA
    response, _ = yield call("PUT", node.url + "/v1/stream/pct-a%2541", b"once",
                             {"Content-Type": "text/plain"})
    assert response.code == 201
    response, body = yield call("GET", node.url + "/v1/stream/pct-a%2541?offset=-1")
    assert response.code == 200 and body == b"once"
    response, _ = yield call("GET", node.url + "/v1/stream/pct-aA?offset=-1")
    assert response.code == 404
    response, body = yield call("GET", node.url + "/_default/pct-a%2541?offset=-1")
    assert response.code == 200 and body == b"once"


@pytest_twisted.inlineCallbacks
def test_append_batch_in_the_default_bucket_layout(node):
    yield call("PUT", node.url + "/_default/batchx", None, {"Content-Type": "text/plain"})
    response, _ = yield call("POST", node.url + "/_default/batchx/append-batch",
                             encode_frames([b"a", b"b"]), {"Content-Type": "text/plain"})
    assert response.code in (200, 204)
    response, body = yield call("GET", node.url + "/v1/stream/batchx?offset=-1")
    assert body == b"ab"
    response, _ = yield call("GET", node.url + "/_default/batchx/append-batch")
    assert response.code == 405
