"""Requests and answers as plain values, and the list of nodes a client talks to.

A front end turns a ``Request`` into an HTTP exchange against ``Endpoints.current()`` and gives
back a ``Response`` (or raises ``TransportError``); everything else in the core works on these
values only.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode


@dataclass(frozen=True)
class Request:
    method: str
    #: path and query, already percent-encoded (``/v1/stream/a?offset=-1``)
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: read the answer as a stream of bytes (SSE) instead of a whole body
    streaming: bool = False
    #: seconds to wait for the answer (None: the client's default)
    timeout: float | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True)
class Response:
    status: int
    #: lowercase names
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def flag(self, name: str) -> bool:
        return (self.headers.get(name.lower()) or "").strip().lower() == "true"


def lower_headers(items: Iterable[tuple[str | bytes, str | bytes]]) -> dict[str, str]:
    """Header pairs from any HTTP library as one lowercase dict (repeated names joined with
    ``, `` as HTTP allows)."""
    out: dict[str, str] = {}
    for key, value in items:
        k = (key.decode("latin-1") if isinstance(key, bytes) else key).lower()
        v = value.decode("latin-1") if isinstance(value, bytes) else value
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def with_query(path: str, params: Mapping[str, str | None]) -> str:
    """``path?a=1&b=2`` with the parameters in lexicographic order (the protocol asks clients
    to order them, for CDN cache keys); None values are left out."""
    items = sorted((k, v) for k, v in params.items() if v is not None)
    return f"{path}?{urlencode(items, safe='-_')}" if items else path


class Endpoints:
    """The base URLs of a cluster's nodes (any node answers any request). Requests go to the
    current one; after a transport failure or a 5xx the caller moves to the next with
    ``failed(url)``, so a client follows the cluster around a dead node."""

    def __init__(self, urls: str | Sequence[str]):
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise ValueError("at least one base URL is needed")
        self.urls = [u.rstrip("/") for u in listed]
        self._index = 0

    def current(self) -> str:
        return self.urls[self._index]

    def failed(self, url: str) -> None:
        """``url`` did not answer well: move on, unless another caller already did."""
        if self.urls[self._index] == url and len(self.urls) > 1:
            self._index = (self._index + 1) % len(self.urls)

    def url_for(self, request: Request, base: str | None = None) -> str:
        return (base or self.current()) + request.target
