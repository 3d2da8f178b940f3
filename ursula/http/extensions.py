"""Handlers of the stream extension routes: snapshots, retention, bootstrap, attributes.

``PUT {stream}/snapshot/{offset}`` publishes (``PublishSnapshot``), ``GET {stream}/snapshot``
redirects (307) to the latest, ``GET {stream}/snapshot/{offset}`` answers its blob,
``PUT {stream}/retention/{offset}`` moves the retention floor (``AdvanceRetention``),
``GET {stream}/bootstrap`` answers ``multipart/mixed`` (the snapshot part, then one part per
retained record), ``GET``/``PUT {stream}/attrs`` the attribute object. Every change goes
through the replicated state machine; reads use ``ICore.view`` (the linearizable barrier, then
the owning replica's state, a snapshot in the cold tier fetched). The rules are in
``docs/api.md``.

May import: Twisted, ``ursula.protocol``, ``ursula.stream`` (commands, result types) and
``ursula.http`` modules. Talks to the node only through ``ICore``.
"""

from __future__ import annotations

import secrets

from ursula.http import render
from ursula.http.common import error_body
from ursula.protocol import headers as H
from ursula.protocol.errors import ProtocolError
from ursula.protocol.headers import DEFAULT_CONTENT_TYPE, media_type
from ursula.protocol.offsets import parse_wire_offset, render_offset
from ursula.stream import commands as C

NO_SNAPSHOT = b"-1"


def _body(request) -> bytes:
    content = request.content
    if content is None:
        return b""
    return content.getvalue() if hasattr(content, "getvalue") else content.read()


def _header(request, name: str) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[0] if values else None


def _offset(text: str | None) -> int:
    if text is None:
        raise ProtocolError(400, "an offset is required in the path")
    return parse_wire_offset(text)


def set_snapshot_headers(request, info) -> None:
    """Stream-Snapshot-Offset / -Digest (when a snapshot exists) and Stream-Retained-Offset."""
    if info.snapshot_offset is not None:
        request.setHeader(b"stream-snapshot-offset", render_offset(info.snapshot_offset).encode())
        request.setHeader(b"stream-snapshot-digest", info.snapshot_digest.encode())
    request.setHeader(b"stream-retained-offset", render_offset(info.retained).encode())


class ExtensionHandlers:
    def __init__(self, core, config, streams):
        self.core = core
        self.config = config
        self.streams = streams  # StreamHandlers: touch_if_sliding
        self.max_read = config.limits.max_read_bytes

    # -- snapshots ---------------------------------------------------------------------

    def publish_snapshot(self, request, bucket: str, name: str, arg: str | None):
        offset = _offset(arg)
        content_type = _header(request, "content-type") or DEFAULT_CONTENT_TYPE
        match = H.parse_snapshot_match(request.requestHeaders.getRawHeaders("stream-snapshot-match"))
        command = C.PublishSnapshot(bucket, name, offset, content_type, _body(request), match)

        def done(outcome):
            if outcome.error:
                return render.outcome_error(request, outcome)
            request.setResponseCode(204)
            request.setHeader(b"stream-snapshot-offset", render_offset(offset).encode())
            request.setHeader(b"stream-snapshot-digest", outcome.payload["digest"].encode())
            return render.finish_body(request, b"")
        return self.core.submit(command).addCallback(done)

    def latest_snapshot(self, request, bucket: str, name: str):
        def answer(view):
            if view.snapshot is None:
                return error_body(request, 404, "no snapshot is published for this stream")
            set_snapshot_headers(request, view.info)
            request.setResponseCode(307)
            host = request.getHeader(b"host") or b"localhost"
            scheme = b"https" if request.isSecure() else b"http"
            path = request.path.rstrip(b"/")
            location = scheme + b"://" + host + path + b"/" + render_offset(
                view.snapshot[0]).encode()
            request.setHeader(b"location", location)
            request.setHeader(b"cache-control", b"no-store")
            return render.finish_body(request, b"")
        return self.core.view(bucket, name, "snapshot", 0).addCallback(answer)

    def read_snapshot(self, request, bucket: str, name: str, arg: str | None):
        offset = _offset(arg)
        seen_ms = self.core.now_ms()

        def answer(view):
            info = view.info
            if view.snapshot is None or view.snapshot[0] != offset:
                if offset < info.retained:
                    return render.stream_error(request, "retained", info.retained)
                return render.stream_error(request, "snapshot_not_found")
            set_snapshot_headers(request, info)
            request.setHeader(b"content-type", view.snapshot[1].encode("latin-1", "replace"))
            request.setHeader(b"stream-next-offset", render_offset(offset).encode())
            if offset == info.tail:
                request.setHeader(b"stream-up-to-date", b"true")
            request.setHeader(b"cache-control", b"no-store")
            d = self.streams.touch_if_sliding(info, bucket, name, seen_ms)
            body = view.snapshot_blob or b""
            if hasattr(d, "addCallback"):
                return d.addCallback(lambda _: render.finish_body(request, body))
            return render.finish_body(request, body)
        return self.core.view(bucket, name, "snapshot", 0).addCallback(answer)

    # -- retention ---------------------------------------------------------------------

    def advance_retention(self, request, bucket: str, name: str, arg: str | None):
        offset = _offset(arg)

        def done(outcome):
            if outcome.error:
                return render.outcome_error(request, outcome)
            request.setResponseCode(204)
            request.setHeader(b"stream-retained-offset", render_offset(offset).encode())
            return render.finish_body(request, b"")
        return self.core.submit(C.AdvanceRetention(bucket, name, offset)).addCallback(done)

    # -- bootstrap ---------------------------------------------------------------------

    def bootstrap(self, request, bucket: str, name: str):
        if b"live" in request.args:
            raise ProtocolError(400, "bootstrap takes no live parameter (read on from "
                                     "Stream-Next-Offset)")
        seen_ms = self.core.now_ms()

        def answer(view):
            info = view.info
            updates = view.updates
            snapshot_type = view.snapshot[1] if view.snapshot else DEFAULT_CONTENT_TYPE
            parts = [(snapshot_type, view.snapshot_blob or b"")]
            update_type = "application/json" if info.json else info.content_type
            data, start = updates.data, updates.start
            previous = start
            for end in view.bounds:
                piece = data[previous - start:end - start]
                if info.json and piece.endswith(b","):
                    piece = piece[:-1]
                parts.append((update_type, piece))
                previous = end
            boundary = _boundary(parts)
            chunks = []
            for content_type, piece in parts:
                chunks.append(b"--" + boundary + b"\r\ncontent-type: "
                              + content_type.encode("latin-1", "replace") + b"\r\n\r\n")
                chunks.append(piece)
                chunks.append(b"\r\n")
            chunks.append(b"--" + boundary + b"--\r\n")
            request.setHeader(b"content-type", b"multipart/mixed; boundary=" + boundary)
            set_snapshot_headers(request, info)
            if view.snapshot is None:
                request.setHeader(b"stream-snapshot-offset", NO_SNAPSHOT)
            request.setHeader(b"stream-next-offset", render_offset(updates.next_offset).encode())
            if updates.up_to_date:
                request.setHeader(b"stream-up-to-date", b"true")
                if info.closed:
                    request.setHeader(b"stream-closed", b"true")
            request.setHeader(b"cache-control", b"no-store")
            body = b"".join(chunks)
            d = self.streams.touch_if_sliding(info, bucket, name, seen_ms)
            if hasattr(d, "addCallback"):
                return d.addCallback(lambda _: render.finish_body(request, body))
            return render.finish_body(request, body)
        return self.core.view(bucket, name, "bootstrap", self.max_read).addCallback(answer)

    # -- attributes --------------------------------------------------------------------

    def get_attrs(self, request, bucket: str, name: str):
        def answer(view):
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            return render.finish_body(request, view.attrs or b"{}")
        return self.core.view(bucket, name, "attrs", 0).addCallback(answer)

    def put_attrs(self, request, bucket: str, name: str):
        content_type = _header(request, "content-type")
        if content_type is None or media_type(content_type) != "application/json":
            raise ProtocolError(400, "stream attributes need Content-Type: application/json")
        attrs = H.parse_attrs(_body(request), self.config.limits.max_attrs_bytes)

        def done(outcome):
            if outcome.error:
                return render.outcome_error(request, outcome)
            request.setResponseCode(204)
            return render.finish_body(request, b"")
        return self.core.submit(C.SetAttrs(bucket, name, attrs)).addCallback(done)


def _boundary(parts) -> bytes:
    """A multipart boundary that occurs in no part."""
    while True:
        boundary = b"ursula-bootstrap-" + secrets.token_hex(8).encode()
        if not any(boundary in piece for _, piece in parts):
            return boundary
