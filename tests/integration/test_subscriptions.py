"""Subscriptions against a real ``twistd ursula`` node with two core processes (so a
subscription and its streams usually live on different cores): a webhook receiver gets signed
deliveries for append bursts on several streams, verifies each signature against ``jwks.json``
and acks with ``{"done": true}``; every stream's acked offset reaches its tail. Then the
callback route, and bad input: 4xx with the protocol's error codes, never a 5xx."""

from __future__ import annotations

import json
import time

import pytest
from procs import free_port, request, start_foreground, stop, wait_until_serving, write_config
from receiver import Receiver, verify


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    directory = tmp_path_factory.mktemp("subs")
    port = free_port()
    config = write_config(directory, port, "cores = 2\n[cluster]\ngroups = 4\n"
                          "[subscriptions]\nretry_max_ms = 2000\nreconcile_ms = 1000\n")
    process = start_foreground(config, directory)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        deadline = time.monotonic() + 20
        while request("GET", url + "/__ursula/ready")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield url
    finally:
        stop(process)
        err = process.stderr.read().decode(errors="replace")
        assert "Traceback" not in err, err[-3000:]


def call(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    status, head, raw = request(method, url, data, {"content-type": "application/json",
                                                    **(headers or {})})
    return status, (json.loads(raw) if raw and head.get("content-type", "").startswith(
        "application/") else raw)


def wait_for(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_signed_webhooks_for_bursts_acked_with_done(node):
    receiver = Receiver("done")
    base = node + "/v1/stream"
    try:
        status, created = call("PUT", base + "/__ds/subscriptions/burst",
                               {"type": "webhook", "pattern": "orders/**",
                                "webhook": {"url": receiver.url}, "lease_ttl_ms": 5000})
        assert status == 201, created
        status, jwks = call("GET", created["webhook"]["signing"]["jwks_url"])
        assert status == 200 and jwks["keys"][0]["kid"] == created["webhook"]["signing"]["kid"]
        assert "d" not in jwks["keys"][0]  # never the private key
        names = [f"orders/{i}/items" for i in range(6)]
        tails = {}
        for burst in range(3):
            for name in names:
                method = "PUT" if burst == 0 else "POST"
                status, head, _ = request(method, f"{base}/{name}", b"x" * (burst + 1),
                                          {"content-type": "text/plain"})
                assert status in (201, 204)
                tails[name] = head["stream-next-offset"]
            time.sleep(0.3)

        def all_acked():
            status, view = call("GET", base + "/__ds/subscriptions/burst")
            acked = {s["path"]: s["acked_offset"] for s in view["streams"]}
            return all(acked.get(n) == t for n, t in tails.items())
        wait_for(all_acked)
        deliveries = receiver.snapshot()
        assert deliveries
        for delivery in deliveries:
            assert verify(jwks, delivery["signature"], delivery["raw"]), delivery["signature"]
            assert delivery["body"]["subscription_id"] == "burst"
        gens = [d["body"]["generation"] for d in deliveries]
        assert gens == sorted(gens) and len(set(gens)) == len(gens)
        # a forged signature does not verify (the check can fail)
        assert not verify(jwks, deliveries[0]["signature"], deliveries[0]["raw"] + b" ")
    finally:
        call("DELETE", base + "/__ds/subscriptions/burst")
        receiver.close()


def test_callback_acks_and_fences(node):
    receiver = Receiver("accept")
    base = node + "/v1/stream"
    try:
        status, _ = call("PUT", base + "/__ds/subscriptions/cb",
                         {"type": "webhook", "streams": ["jobs/one"],
                          "webhook": {"url": receiver.url}, "lease_ttl_ms": 10_000})
        assert status == 201
        request("PUT", base + "/jobs/one", b"job", {"content-type": "text/plain"})
        delivery = wait_for(lambda: receiver.snapshot())[0]["body"]
        auth = {"authorization": "Bearer " + delivery["callback_token"]}
        ack = {"wake_id": delivery["wake_id"], "generation": delivery["generation"],
               "acks": [{"stream": "jobs/one",
                         "offset": delivery["streams"][0]["tail_offset"]}], "done": True}
        bad = dict(ack, acks=[{"stream": "jobs/one", "offset": "0000000000000000_0000000000009999"}])
        assert call("POST", delivery["callback_url"], bad, auth)[1]["error"]["code"] \
            == "INVALID_OFFSET"
        status, forged = call("POST", delivery["callback_url"], ack,
                              {"authorization": "Bearer x" + delivery["callback_token"]})
        assert status == 401 and forged["error"]["code"] == "TOKEN_INVALID"
        assert call("POST", delivery["callback_url"], ack, auth) == (
            200, {"ok": True, "next_wake": False})
        status, stale = call("POST", delivery["callback_url"], ack, auth)
        assert status == 409 and stale["error"]["code"] == "FENCED"
    finally:
        call("DELETE", base + "/__ds/subscriptions/cb")
        receiver.close()


BAD = [
    ("PUT", "/__ds/subscriptions/x", b"not json", 400, "INVALID_REQUEST"),
    ("PUT", "/__ds/subscriptions/x", b"[]", 400, "INVALID_REQUEST"),
    ("PUT", "/__ds/subscriptions/x", {"type": "nope", "pattern": "a/*"}, 400, "INVALID_REQUEST"),
    ("PUT", "/__ds/subscriptions/x", {"type": "webhook", "webhook": {"url": "https://e.com"}},
     400, "INVALID_REQUEST"),
    ("PUT", "/__ds/subscriptions/x", {"type": "webhook", "pattern": "a/*",
                                      "webhook": {"url": "http://169.254.169.254/"}},
     400, "WEBHOOK_URL_REJECTED"),
    ("PUT", "/__ds/subscriptions/x", {"type": "webhook", "pattern": "a/*",
                                      "webhook": {"url": "http://192.168.1.1/h"}},
     400, "WEBHOOK_URL_REJECTED"),
    ("PUT", "/__ds/subscriptions/x", {"type": "webhook", "pattern": "a/*",
                                      "webhook": {"url": "ftp://example.com/"}},
     400, "WEBHOOK_URL_REJECTED"),
    ("PUT", "/__ds/subscriptions/x", {"type": "pull-wake", "pattern": "a/*",
                                      "wake_stream": "w", "lease_ttl_ms": 10}, 400,
     "INVALID_REQUEST"),
    ("PUT", "/__ds/subscriptions/x", {"type": "pull-wake", "pattern": "a//b",
                                      "wake_stream": "w"}, 400, "INVALID_REQUEST"),
    ("PUT", "/__ds/subscriptions/x", b"{" + b" " * 70000 + b"}", 413, "PAYLOAD_TOO_LARGE"),
    ("PUT", "/__ds/subscriptions/bad%20id", {"type": "pull-wake", "pattern": "a/*",
                                            "wake_stream": "w"}, 400, "INVALID_REQUEST"),
    ("GET", "/__ds/subscriptions/unknown", None, 404, "SUBSCRIPTION_NOT_FOUND"),
    ("DELETE", "/__ds/subscriptions/unknown", None, 404, "SUBSCRIPTION_NOT_FOUND"),
    ("POST", "/__ds/subscriptions/unknown/streams", {"streams": ["a"]}, 404,
     "SUBSCRIPTION_NOT_FOUND"),
    ("POST", "/__ds/subscriptions/unknown/streams", {"streams": "a"}, 400, "INVALID_REQUEST"),
    ("POST", "/__ds/subscriptions/unknown/claim", {"worker": "w"}, 404,
     "SUBSCRIPTION_NOT_FOUND"),
    ("POST", "/__ds/subscriptions/unknown/ack", {"wake_id": "w", "generation": 1}, 401,
     "UNAUTHORIZED"),
    ("POST", "/__ds/subscriptions/unknown/callback", {"wake_id": "w", "generation": 1}, 401,
     "UNAUTHORIZED"),
    ("GET", "/__ds/subscriptions/unknown/nothing", None, 404, "NOT_FOUND"),
    ("PATCH", "/__ds/subscriptions/x", None, 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/__ds/jwks.json", None, 405, "METHOD_NOT_ALLOWED"),
]


@pytest.mark.parametrize("method,path,body,status,code", BAD)
def test_bad_input_is_a_clear_4xx(node, method, path, body, status, code):
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
    got, head, raw = request(method, node + "/v1/stream" + path, body,
                             {"content-type": "application/json"})
    assert got == status, raw
    assert json.loads(raw)["error"]["code"] == code


def test_bad_tokens_are_401(node):
    base = node + "/v1/stream"
    call("PUT", base + "/w/pool", b"[]")
    status, _ = call("PUT", base + "/__ds/subscriptions/tok",
                     {"type": "pull-wake", "pattern": "t/*", "wake_stream": "w/pool"})
    assert status == 201
    for token in ["abc", "a.b", "x" * 5000, "eyJ9.AAAA"]:
        got, body = call("POST", base + "/__ds/subscriptions/tok/ack",
                         {"wake_id": "w", "generation": 1}, {"authorization": "Bearer " + token})
        assert 400 <= got < 500, (token, got, body)


def test_the_bucket_layout_has_its_own_subscriptions(node):
    assert request("PUT", node + "/photos")[0] in (200, 201)
    request("PUT", node + "/photos/wakes", b"", {"content-type": "application/json"})
    status, created = call("PUT", node + "/photos/__ds/subscriptions/b1",
                           {"type": "pull-wake", "pattern": "*", "wake_stream": "wakes"})
    assert status == 201, created
    assert call("GET", node + "/v1/stream/__ds/subscriptions/b1")[0] == 404  # another bucket
    request("PUT", node + "/photos/album-1", b"pic", {"content-type": "text/plain"})

    def woken():
        status, _, raw = request("GET", node + "/photos/wakes?offset=-1")
        return status == 200 and b'"subscription_id":"b1"' in raw
    wait_for(woken)
    status, claimed = call("POST", node + "/photos/__ds/subscriptions/b1/claim",
                           {"worker": "w"})
    assert status == 200 and claimed["streams"][0]["path"] == "album-1"
    assert call("GET", node + "/photos/__ds/jwks.json")[0] == 200
