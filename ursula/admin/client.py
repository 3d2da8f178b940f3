"""``AdminClient``: one node's admin plane over HTTP (treq), for ``ursula-admin``.

Every call returns a Deferred. A refusal of the node (any status but 2xx) fails with
``AdminRefused`` (``status``, the node's one-line ``reason``, the ``leader`` it names); a node
that cannot be reached fails with ``AdminUnreachable``. Both say which node in ``str()``.

May import: Twisted, treq, the standard library.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import treq
from twisted.internet import defer


class AdminRefused(Exception):
    def __init__(self, url: str, status: int, reason: str, leader: int | None = None):
        super().__init__(f"{url}: {status} {reason}")
        self.url = url
        self.status = status
        self.reason = reason
        self.leader = leader


class AdminUnreachable(Exception):
    def __init__(self, url: str, why: str):
        super().__init__(f"{url}: not reachable ({why})")
        self.url = url


def _one_line(failure) -> str:
    text = failure.getErrorMessage() or failure.type.__name__
    return " ".join(text.split())[:300]


class AdminClient:
    def __init__(self, url: str, token: str = "", timeout_s: float = 60.0, reactor=None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.reactor = reactor

    def _headers(self) -> dict:
        return {b"Authorization": [f"Bearer {self.token}".encode()]} if self.token else {}

    @defer.inlineCallbacks
    def _request(self, method: str, path: str, params: dict | None = None,
                 timeout_s: float | None = None):
        url = self.url + path + (("?" + urlencode(params)) if params else "")
        kwargs = {"headers": self._headers(), "timeout": timeout_s or self.timeout_s}
        if self.reactor is not None:
            kwargs["reactor"] = self.reactor
        try:
            response = yield treq.request(method, url, **kwargs)
            body = yield treq.content(response)
        except Exception:  # noqa: BLE001 - every transport error is "not reachable"
            raise AdminUnreachable(self.url, _one_line(defer.Failure())) from None
        if not 200 <= response.code < 300:
            reason = body.decode("utf-8", "replace").strip().splitlines()
            leader = response.headers.getRawHeaders(b"ursula-leader", [None])[0]
            raise AdminRefused(self.url, response.code, reason[0] if reason else "",
                               int(leader) if leader and leader.isdigit() else None)
        return response, body

    @defer.inlineCallbacks
    def get_json(self, path: str, timeout_s: float | None = None):
        _, body = yield self._request("GET", path, timeout_s=timeout_s)
        return json.loads(body)

    @defer.inlineCallbacks
    def post_json(self, path: str, params: dict | None = None, timeout_s: float | None = None):
        _, body = yield self._request("POST", path, params, timeout_s=timeout_s)
        return json.loads(body)

    @defer.inlineCallbacks
    def get_bytes(self, path: str, timeout_s: float | None = None):
        """``(headers as a dict of lowercase names, body)``."""
        response, body = yield self._request("GET", path, timeout_s=timeout_s)
        headers = {name.decode().lower(): values[0].decode()
                   for name, values in response.headers.getAllRawHeaders()}
        return headers, body

    # -- the admin API -------------------------------------------------------------------

    def status(self):
        return self.get_json("/__ursula/status")

    def transfer_leader(self, group: int, to: int):
        return self.post_json(f"/__ursula/groups/{group}/transfer-leader", {"to": to})

    def change_membership(self, group: int, op: str, node: int):
        return self.post_json(f"/__ursula/groups/{group}/members/{node}", {"op": op})

    def join_token(self, node: int):
        return self.get_json(f"/__ursula/join-token/{node}")

    def set_peer_address(self, node: int, address: str, token: str):
        return self.post_json(f"/__ursula/peers/{node}", {"address": address, "token": token})

    def host_group(self, group: int):
        return self.post_json(f"/__ursula/groups/{group}/replica")

    @defer.inlineCallbacks
    def drop_group(self, group: int):
        _, body = yield self._request("DELETE", f"/__ursula/groups/{group}/replica")
        return json.loads(body)

    def snapshot(self, group: int | None = None):
        if group is None:
            return self.post_json("/__ursula/snapshot")
        return self.post_json(f"/__ursula/groups/{group}/snapshot")

    def drain(self):
        return self.post_json("/__ursula/drain")

    def undrain(self):
        return self.post_json("/__ursula/undrain")

    def backup_info(self):
        return self.get_json("/__ursula/backup/info")

    def backup_group(self, group: int):
        return self.get_bytes(f"/__ursula/backup/group/{group}")
