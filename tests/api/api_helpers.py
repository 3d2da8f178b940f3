"""Small HTTP helpers for the API tests (treq with a fresh, non-persistent pool per call)."""

from __future__ import annotations

import treq
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool


def _pool():
    from twisted.internet import reactor
    return HTTPConnectionPool(reactor, persistent=False)


@defer.inlineCallbacks
def call(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """Returns (response, body bytes)."""
    response = yield treq.request(method, url, data=body, headers=headers or {}, pool=_pool())
    content = yield response.content()
    return response, content


def header(response, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None
