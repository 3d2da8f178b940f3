"""The twisted.web ``Site`` for the API: bounded request bodies and headers, common headers.

``UrsulaRequest`` keeps the body in memory up to ``max_body_bytes`` and discards the rest (the
handler answers 413), sets the CORS and security headers before routing, and counts answers by
status. The channel enforces the header-size limits and the idle timeout.

May import: Twisted and ``ursula.http`` modules.
"""

from __future__ import annotations

import io

from twisted.web import server

from ursula.http.common import apply_common_headers, error_body


class UrsulaRequest(server.Request):
    max_body_bytes = 16 * 1024 * 1024
    metrics = None

    body_too_large = False
    _body_bytes = 0

    def gotLength(self, length):
        self.content = io.BytesIO()
        if length is not None and length > self.max_body_bytes:
            self.body_too_large = True

    def handleContentChunk(self, data):
        if self.body_too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body_bytes:
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        self.content.write(data)

    def process(self):
        apply_common_headers(self)
        if self.body_too_large:
            self.content.seek(0)
            body = error_body(self, 413, f"request body is larger than {self.max_body_bytes} "
                                         "bytes (limits.max_body_bytes)")
            self.setHeader(b"connection", b"close")
            self.write(body)
            self.finish()
            return
        super().process()

    def finish(self):
        if self.metrics is not None and not self.finished and not self._disconnected:
            self.metrics.count_request(self.method, self.code)
        return super().finish()


class UrsulaSite(server.Site):
    def __init__(self, resource, config, metrics, access_log: bool = False):
        limits = config.limits
        request_class = type("ConfiguredRequest", (UrsulaRequest,), {
            "max_body_bytes": limits.max_body_bytes, "metrics": metrics})
        # Request bodies are stream data, never HTML forms: skip Twisted's form parsing (it
        # parses Content-Type with the email package, a quarter of the append path's CPU).
        super().__init__(resource, requestFactory=request_class, timeout=limits.idle_timeout_s,
                         parsePOSTFormSubmission=False)
        self._access_log = access_log
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self.displayTracebacks = False

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        # Twisted wraps the HTTP/1.1 channel in a protocol that can switch to HTTP/2.
        inner = getattr(channel, "_channel", channel)
        inner.totalHeadersSize = self._max_header_bytes
        inner.maxHeaders = self._max_headers
        return channel

    def log(self, request):
        if self._access_log:
            super().log(request)
