"""Headers every response carries (CORS, security), and error responses.

May import: the standard library and ``ursula.protocol``.
"""

from __future__ import annotations

ALLOW_HEADERS = (
    "content-type, authorization, if-none-match, if-match, Stream-Seq, Stream-TTL, "
    "Stream-Expires-At, Stream-Closed, Producer-Id, Producer-Epoch, Producer-Seq, "
    "Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, Stream-Attrs, "
    "Stream-Snapshot-Match"
)
EXPOSE_HEADERS = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Producer-Epoch, "
    "Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, Stream-TTL, "
    "Stream-Expires-At, etag, content-type, content-encoding, vary, Location, "
    "Stream-Snapshot-Offset, Stream-Snapshot-Digest, Stream-Retained-Offset"
)

COMMON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, HEAD, OPTIONS"),
    (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
    (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
]


def apply_common_headers(request) -> None:
    set_raw = request.responseHeaders.setRawHeaders
    for name, value in COMMON_HEADERS:
        set_raw(name, [value])


def error_body(request, status: int, reason: str, headers: dict[str, str] | None = None) -> bytes:
    """Set an error status with its headers; the body is the one-line reason."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode(), value.encode())
    body = (reason + "\n").encode("utf-8")
    request.setHeader(b"content-length", str(len(body)).encode())
    return body
