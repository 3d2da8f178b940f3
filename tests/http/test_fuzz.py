"""Seeded fuzzing of the data plane: mutated raw requests over loopback sockets to a real
listening node (every route, bad bytes in the request line, header names and values, lengths,
chunk sizes, offsets, producer headers, If-Match). No answer may be >= 500, nothing may log a traceback
or an error, and the node must still answer a good request afterwards.

``FUZZ_SEED`` and ``FUZZ_REQUESTS`` (default 2000) change the run; a failure prints the seed and
the request that caused it.
"""

from __future__ import annotations

import os
import random
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import httptools
import pytest_twisted
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from tests.conftest import Node, make_config
from ursula.protocol.framing import encode_frames

SEED = int(os.environ.get("FUZZ_SEED", "9"))
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "2000"))
WAIT_S = 0.3  # a mutated request may be incomplete: the client gives up after this long

OFFSETS = ["-1", "now", "0000000000000000_0000000000000003", "0000000000000000_0000000000000000",
           "abc", "", "9" * 40, "-2", "0_0", "%ff", "0000000000000000_99999999999999999",
           "1,2", "-1&offset=now", "%00", "0000000000000000_000000000000000\xff"]
NAMES = ["f1", "new", "a/b", "..", "__ursula", "n" * 600, "%2F", "x%00y", "\xe9t\xe9", "f1/",
         "", "a b"]
BAD = [b"\xff", b"\x00", b"\r", b"\n", b"\r\n", b" ", b"\x7f", b"\xc3\x28", b"%", b":", b"\t",
       b"\xe2\x82", b"\"", b"," * 3, b"-1", b"99999999999999999999", b"1e3", b"0x10"]
HEADER_NAMES = [b"Content-Type", b"Content-Length", b"Transfer-Encoding", b"Expect",
                b"Connection", b"Host", b"Producer-Id", b"Producer-Epoch", b"Producer-Seq",
                b"Stream-Seq", b"Stream-TTL", b"Stream-Expires-At", b"Stream-Closed",
                b"Stream-Forked-From", b"Stream-Fork-Offset", b"Stream-Fork-Sub-Offset",
                b"If-None-Match", b"If-Match", b"Upgrade", b"X-\xff", b"Bad Name", b"",
                b"\x00"]
# If-Match values: the tail of f1 (5) and of a fresh stream, stale ones, and malformed ones
IF_MATCHES = [b'"0000000000000000_0000000000000005"', b'"0000000000000000_0000000000000000"',
              b'"0000000000000000_0000000000000009"', b"*", b'W/"0000000000000000_0000000000000005"',
              b'"a", "b"', b"0000000000000000_0000000000000005", b'"', b'""', b'"-1"',
              b'"1:0:3"', b'"0000000000000000_99999999999999999"', b"\xff", b'"\x00"']


SUB_IDS = ["s1", "p1", "bad id", "%2F", "x" * 300, "", "s1/extra"]
SUB_BODIES = [
    b'{"type":"webhook","pattern":"events/*","webhook":{"url":"http://127.0.0.1:9/h"}}',
    b'{"type":"pull-wake","pattern":"f*","wake_stream":"f1","lease_ttl_ms":1000}',
    b'{"type":"webhook","pattern":"a/*","webhook":{"url":"http://10.0.0.1/h"}}',
    b'{"type":"pull-wake","streams":["a",{"x":1}],"wake_stream":"w"}', b'{"type":1}', b"[]",
    b"{", b"null", b'{"type":"pull-wake","pattern":"**","wake_stream":"w","lease_ttl_ms":1e9}',
    b'{"type":"webhook","pattern":"a","webhook":{"url":"http://[::1"}}']
SUB_ACTIONS = ["claim", "ack", "release", "callback", "nope"]
TOKENS = [b"Bearer abc", b"Bearer a.b", b"bearer", b"Basic x", b"Bearer " + b"eyJ9" * 50]
CALLBACK_BODIES = [b'{"worker":"w1"}', b'{"wake_id":"w","generation":1}',
                   b'{"wake_id":"w","generation":"1","acks":[{"stream":"f1","offset":"x"}]}',
                   b'{"wake_id":"w","generation":1,"acks":[{"stream":"f1","offset":"-1"}],'
                   b'"done":true}', b'{"worker":5}', b"", b"[1]"]


def templates(rng: random.Random):
    """(method, target, headers, body) of good requests to every route."""
    name = rng.choice(NAMES)
    offset = rng.choice(OFFSETS)
    seq = str(rng.choice([0, 1, 2, 5, -1, 2**63]))
    text = [(b"Content-Type", b"text/plain")]
    jtype = [(b"Content-Type", b"application/json")]
    return [
        ("PUT", f"/v1/stream/{name}", text, b"hello"),
        ("PUT", f"/v1/stream/{name}", text + [(b"Stream-TTL", b"60")], b""),
        ("PUT", f"/v1/stream/{name}", [(b"Content-Type", b"application/json"),
                                       (b"Stream-Expires-At", b"2030-01-01T00:00:00Z")], b"[1]"),
        ("PUT", f"/v1/stream/{name}", text + [(b"Stream-Forked-From", b"/v1/stream/f1"),
                                              (b"Stream-Fork-Offset", offset.encode("utf-8"))],
         b""),
        ("POST", "/v1/stream/f1", text, b"data"),
        ("POST", "/v1/stream/f1", text + [(b"Stream-Closed", b"true")], b""),
        ("POST", "/v1/stream/prod", text + [(b"Producer-Id", b"p1"), (b"Producer-Epoch", b"0"),
                                            (b"Producer-Seq", seq.encode())], b"x"),
        ("POST", "/v1/stream/f1", text + [(b"Stream-Seq", b"00a")], b"y"),
        # If-Match conditional appends (a bad value is 400, a stale one 412, never a 5xx)
        ("POST", "/v1/stream/f1", text + [(b"If-Match", rng.choice(IF_MATCHES))], b"m"),
        ("POST", f"/v1/stream/{name}", text + [(b"If-Match", rng.choice(IF_MATCHES)),
                                               (b"Stream-Closed", b"true")], b""),
        ("POST", "/v1/stream/json", jtype + [(b"If-Match", rng.choice(IF_MATCHES)),
                                             (b"Stream-Seq", seq.encode())],
         rng.choice([b"[1]", b"[]", b"{", b"2"])),
        ("POST", "/v1/stream/prod", text + [(b"If-Match", rng.choice(IF_MATCHES)),
                                            (b"Producer-Id", b"p2"), (b"Producer-Epoch", b"0"),
                                            (b"Producer-Seq", seq.encode())], b"x"),
        ("POST", "/fuzz/s/append-batch", text + [(b"If-Match", rng.choice(IF_MATCHES))]
         + [(b"If-Match", rng.choice(IF_MATCHES))] * rng.choice([0, 0, 1]),
         encode_frames(rng.choice([[b"a"], [b"a", b""], [b"b", b"c"]]))),
        ("GET", f"/v1/stream/f1?offset={offset}", [], b""),
        ("GET", f"/v1/stream/{name}?offset={offset}", [(b"If-None-Match", b'"1:0:3"')], b""),
        ("GET", f"/v1/stream/f1?offset={offset}&live=long-poll", [], b""),
        ("GET", f"/v1/stream/f1?offset={offset}&live=sse&cursor=12", [], b""),
        ("GET", "/v1/stream/json?offset=-1", [], b""),
        ("HEAD", f"/v1/stream/{name}", [], b""),
        ("DELETE", f"/v1/stream/{name}", [], b""),
        ("OPTIONS", f"/v1/stream/{name}", [], b""),
        ("GET", f"/_default/{name}?offset={offset}", [], b""),
        ("PUT", "/fuzz", [], b""),
        ("GET", f"/fuzz?limit={rng.choice(['3', '0', '-1', 'x', '99999'])}&cursor={name}", [], b""),
        ("DELETE", "/fuzzz", [], b""),
        ("PUT", f"/fuzz/{name}", text, b"z"),
        ("POST", "/fuzz/s/append-batch", text,
         encode_frames([b"a", b"", b"c"]) if rng.random() < 0.7 else b"\x00\x00\x00\x09abc"),
        ("GET", "/", [], b""),
        ("GET", "/__ursula/health", [], b""),
        ("GET", "/__ursula/ready", [], b""),
        ("GET", "/__ursula/metrics", [], b""),
        ("PATCH", "/v1/stream/f1", [], b""),
        # the reserved subscription routes (ursula.http.subscriptions)
        ("PUT", f"/v1/stream/__ds/subscriptions/{rng.choice(SUB_IDS)}", jtype,
         rng.choice(SUB_BODIES)),
        ("GET", f"/v1/stream/__ds/subscriptions/{rng.choice(SUB_IDS)}", [], b""),
        ("DELETE", f"/v1/stream/__ds/subscriptions/{rng.choice(SUB_IDS)}", [], b""),
        ("POST", f"/v1/stream/__ds/subscriptions/{rng.choice(SUB_IDS)}/streams", jtype,
         rng.choice([b'{"streams":["a/b"]}', b'{"streams":[1]}', b"{}", b"[", b'{"streams":[]}'])),
        ("DELETE", f"/v1/stream/__ds/subscriptions/s1/streams/{name}", [], b""),
        ("POST", f"/v1/stream/__ds/subscriptions/s1/{rng.choice(SUB_ACTIONS)}",
         jtype + [(b"Authorization", rng.choice(TOKENS))], rng.choice(CALLBACK_BODIES)),
        ("GET", "/v1/stream/__ds/jwks.json", [], b""),
        ("GET", f"/fuzz/__ds/subscriptions/{rng.choice(SUB_IDS)}", [], b""),
        # snapshots, retention, bootstrap, attrs (ursula.http.extensions)
        ("PUT", f"/v1/stream/f1/snapshot/{offset}", text
         + [(b"Stream-Snapshot-Match", rng.choice([b"", b" ", b"ab" * 32, b'"x"']))]
         * rng.choice([0, 1]), rng.choice([b"", b"snap", b"\x00" * 40])),
        ("GET", f"/v1/stream/{name}/snapshot", [], b""),
        ("GET", f"/v1/stream/f1/snapshot/{offset}", [], b""),
        ("PUT", f"/v1/stream/f1/retention/{offset}", [], b""),
        ("GET", f"/v1/stream/f1/bootstrap{rng.choice(['', '?live=sse', '?offset=1'])}", [], b""),
        ("GET", "/fuzz/s/bootstrap", [], b""),
        ("PUT", f"/fuzz/{name}/attrs", jtype,
         rng.choice([b'{"title":"t"}', b"{}", b"[]", b"{", b'"x"'])),
        ("GET", f"/v1/stream/{name}/attrs", [], b""),
        ("PUT", f"/fuzz/{name}", text + [(b"Stream-Attrs", rng.choice([b"{}", b"{", b"1"]))],
         b""),
    ]


def render(method: bytes, target: bytes, version: bytes, headers, body: bytes,
           chunks: list[bytes] | None) -> bytes:
    lines = [method + b" " + target + b" " + version]
    lines += [name + b": " + value for name, value in headers]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if chunks is None:
        return head + body
    return head + b"".join(chunks)


def make_request(rng: random.Random) -> bytes:
    method, target, headers, body = rng.choice(templates(rng))
    method, target = method.encode(), target.encode("utf-8")
    version = b"HTTP/1.1"
    headers = [(b"Host", b"127.0.0.1")] + list(headers)
    chunks = None
    if rng.random() < 0.2 and body:
        headers.append((b"Transfer-Encoding", b"chunked"))
        sizes = [b"%x" % len(body)]
        if rng.random() < 0.5:
            sizes = [rng.choice([b"zz", b"-1", b"ffffffffffffffff", b"0", b"1;ext=1", b"",
                                 b"%x" % (len(body) + 3)])]
        chunks = [sizes[0] + b"\r\n" + body + b"\r\n", b"0\r\n\r\n"]
    else:
        length = b"%d" % len(body)
        if rng.random() < 0.15:
            length = rng.choice([b"-1", b"abc", b"%d" % (len(body) + 1), b"0", b"1 2",
                                 b"99999999999999999999999", b"%d" % max(0, len(body) - 1)])
        headers.append((b"Content-Length", length))
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        kind = rng.randrange(8)
        if kind == 0:  # a header value with bad bytes
            i = rng.randrange(len(headers))
            headers[i] = (headers[i][0], headers[i][1] + rng.choice(BAD))
        elif kind == 1:  # a header, maybe with a bad name
            headers.insert(rng.randrange(len(headers) + 1),
                           (rng.choice(HEADER_NAMES), rng.choice(BAD + [b"100-continue", b"1"])))
        elif kind == 2:  # the method
            method = rng.choice([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS",
                                 b"PATCH", b"CONNECT", b"TRACE", b"G\xffT", b"", b"get"])
        elif kind == 3:  # bad bytes in the target
            at = rng.randrange(len(target) + 1)
            target = target[:at] + rng.choice(BAD + [b"%zz", b"%C3", b"?", b"#", b"//"]) + \
                target[at:]
        elif kind == 4:
            version = rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/1", b"",
                                  b"HTTP/0.9", b"http/1.1"])
        elif kind == 5:  # many headers or a long one
            headers += [(b"X-%d" % i, b"y") for i in range(rng.choice([50, 101, 300]))] \
                if rng.random() < 0.5 else [(b"X-Long", b"a" * rng.choice([1000, 20000]))]
        elif kind == 6:
            body = body + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            headers.append((b"Expect", b"100-continue"))
    data = render(method, target, version, headers, body, chunks)
    for _ in range(rng.choice([0, 0, 0, 1, 2])):  # raw byte-level damage
        kind = rng.randrange(4)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and at < len(data):
            data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
        elif kind == 1:
            data = data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5))) + \
                data[at:]
        elif kind == 2:
            data = data[:at] + data[at + rng.randrange(1, 6):]
        else:
            data = data[:at]
    return data


STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")


class _Done:
    """Tells when the first final response is complete (a HEAD answer never looks complete:
    the parser cannot know its body is absent, so that read waits for close or ``WAIT_S``)."""

    def __init__(self):
        self.done = False
        self.code = None

    def on_headers_complete(self):
        self.code = self.parser.get_status_code()

    def on_message_complete(self):
        self.done = self.code != 100


def exchange(port: int, data: bytes) -> list[int]:
    """Send ``data`` on a fresh connection; the status codes answered within ``WAIT_S``."""
    done = _Done()
    done.parser = httptools.HttpResponseParser(done)
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        try:
            sock.sendall(data)
            while not done.done:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                try:
                    done.parser.feed_data(chunk)
                except httptools.HttpParserUpgrade:
                    pass
                except httptools.HttpParserError:
                    done.parser = None  # not a parsable answer: read on until close
                    break
        except (TimeoutError, ConnectionError):
            pass
    codes = [int(code) for code in STATUS.findall(received)]
    if received and not codes:
        codes.append(-1)  # something that is not an HTTP answer
    return codes


def good_requests(port: int) -> list[int]:
    return (exchange(port, b"GET /__ursula/health HTTP/1.1\r\nHost: x\r\n\r\n") +
            exchange(port, b"PUT /v1/stream/after HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           b"text/plain\r\nContent-Length: 2\r\n\r\nok") +
            exchange(port, b"GET /v1/stream/after?offset=-1 HTTP/1.1\r\nHost: x\r\n\r\n"))


@pytest_twisted.inlineCallbacks
def test_mutated_requests_never_get_5xx_nor_log_a_traceback(tmp_path):
    node = Node(make_config(tmp_path, http={"long_poll_timeout_ms": 100}), "local")
    port = node.port.getHost().port
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for setup in [b"PUT /v1/stream/f1 HTTP/1.1\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 5\r\n\r\nhello",
                      b"PUT /v1/stream/json HTTP/1.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 7\r\n\r\n[1,\"a\"]",
                      b"PUT /v1/stream/prod HTTP/1.1\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 0\r\n\r\n",
                      b"PUT /fuzz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                      b"PUT /fuzz/s HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"]:
            codes = yield threads.deferToThread(exchange, port, setup)
            assert codes and codes[0] in (200, 201), codes
        rng = random.Random(SEED)
        cases = [make_request(rng) for _ in range(REQUESTS)]

        def run_all():
            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(lambda data: exchange(port, data), cases))
        results = yield threads.deferToThread(run_all)
        bad = [(data, codes) for data, codes in zip(cases, results, strict=True)
               if any(code >= 500 or code < 0 for code in codes)]
        assert not bad, f"seed {SEED}: {len(bad)} answers >= 500, e.g. {bad[:3]}"
        answered = sum(1 for codes in results if codes)
        assert answered > REQUESTS // 2  # most mutated requests do get an answer
        # the If-Match cases reached both the header check (400) and the state machine (412)
        conditional = {code for data, codes in zip(cases, results, strict=True)
                       if b"\r\nIf-Match: " in data for code in codes}
        assert {400, 412} <= conditional, conditional
        codes = yield threads.deferToThread(good_requests, port)
        assert codes == [200, 201, 200]
    finally:
        globalLogPublisher.removeObserver(events.append)
        yield node.stop()
    failures = [e for e in events if "log_failure" in e or
                getattr(e.get("log_level"), "name", "") in ("error", "critical")]
    assert not failures, f"seed {SEED}: {failures[:3]}"
