"""A webhook receiver for tests: an ``http.server`` on loopback in a thread that records every
delivery, verifies its ``Webhook-Signature`` against the server's ``jwks.json`` (Ed25519 over
``<t>.<raw body>``, the key chosen by ``kid``), and answers as told (``mode``: ``done`` ->
200 ``{"done": true}``, ``accept`` -> 200 ``{}``, ``fail`` -> 500)."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(jwks: dict, header: str, body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(","))
    for key in jwks["keys"]:
        if key["kid"] == parts.get("kid"):
            public = Ed25519PublicKey.from_public_bytes(_unb64(key["x"]))
            try:
                public.verify(_unb64(parts["ed25519"]), parts["t"].encode() + b"." + body)
            except InvalidSignature:
                return False
            return abs(int(parts["t"]) - time.time()) < 300
    return False


class Receiver:
    def __init__(self, mode: str = "done"):
        self.mode = mode
        self.deliveries: list[dict] = []  # {"body", "raw", "signature", "answered"}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                mode = receiver.mode
                with receiver.lock:
                    receiver.deliveries.append({
                        "raw": raw, "body": json.loads(raw), "answered": mode,
                        "signature": self.headers.get("webhook-signature", "")})
                status, answer = {"done": (200, b'{"done":true}'), "accept": (200, b"{}"),
                                  "fail": (500, b"no")}[mode]
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.deliveries)
