"""Joining a cluster, and peer addresses that change: join tokens and the address map.

* ``join_token(secret, node)``: the token that lets node ``node`` register its peer address
  (``POST /__ursula/peers/N?address=HOST:PORT&token=T``, ``ursula-admin node address``):
  an HMAC-SHA256 of the node id under the cluster secret, so every node can check it and an
  operator hands a new node only the token of its own id (``ursula-admin join-token N``).
* ``load_addresses`` / ``save_addresses``: ``peers.json`` in the data directory, the peer
  addresses learnt since the config was written; they take precedence over
  ``[cluster] peers`` when the node starts again.

May import: the standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os


def join_token(secret: bytes, node: int) -> str:
    return hmac.new(secret, f"ursula join token {int(node)}".encode(),
                    hashlib.sha256).hexdigest()[:40]


def token_ok(secret: bytes, node: int, token: str) -> bool:
    return bool(token) and hmac.compare_digest(join_token(secret, node), token.strip())


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError with a one-line reason."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address: expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def load_addresses(path: str) -> dict[int, tuple[str, int]]:
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return {int(node): (host, int(port)) for node, (host, port) in data.items()}


def save_addresses(path: str, addresses: dict[int, tuple[str, int]]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({str(n): [h, p] for n, (h, p) in sorted(addresses.items())}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
