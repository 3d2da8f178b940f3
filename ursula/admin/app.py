"""``AdminApp``: the control plane's Klein routes, on the admin listener (loopback by default).

``GET /__ursula/metrics`` (Prometheus text), ``/__ursula/health``, ``/__ursula/ready`` (also
served on the public port, for load balancers), ``/__ursula/groups`` (each local group's term,
leader, role, commit and applied index, snapshot) and ``/`` (an index). Anything else is a 404
with a one-line reason; tracebacks are never shown. The core's answers may be Deferreds (the
supervisor of a multi-core node asks its cores over the local link).

May import: Twisted, Klein (and werkzeug, its router), ``ursula.http.metrics``, ``ursula.core``
(interfaces).
"""

from __future__ import annotations

import json

from klein import Klein
from twisted.internet import defer
from twisted.web import server

INDEX = b"ursula admin: /__ursula/metrics /__ursula/health /__ursula/ready /__ursula/groups\n"


class AdminApp:
    app = Klein()

    def __init__(self, core, metrics):
        self.core = core
        self.metrics = metrics

    def resource(self):
        return self.app.resource()

    @staticmethod
    def _json(request, status: int, value) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(value, separators=(",", ":")).encode()

    @app.route("/", methods=["GET"])
    def index(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return INDEX

    @app.route("/__ursula/metrics", methods=["GET"])
    def metrics_page(self, request):
        def rendered(answer):
            body, content_type = answer
            request.setHeader(b"content-type", content_type.encode())
            request.setHeader(b"cache-control", b"no-store")
            return body
        return defer.maybeDeferred(self.metrics.render).addCallback(rendered)

    @app.route("/__ursula/health", methods=["GET"])
    def health(self, request):
        return self._json(request, 200, {"status": "ok"})

    @app.route("/__ursula/ready", methods=["GET"])
    def ready(self, request):
        def answer(ready):
            if ready:
                return self._json(request, 200, {"ready": True})
            return self._json(request, 503, {"ready": False, "reason": "a group has no leader"})
        return defer.maybeDeferred(self.core.is_ready).addCallback(answer)

    @app.route("/__ursula/groups", methods=["GET"])
    def groups(self, request):
        if not hasattr(self.core, "group_stats"):
            return self._json(request, 200, {"groups": []})
        return defer.maybeDeferred(self.core.group_stats).addCallback(
            lambda stats: self._json(request, 200, {"groups": stats}))

    @app.handle_errors
    def failed(self, request, failure):
        from werkzeug.exceptions import HTTPException
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if failure.check(HTTPException):
            request.setResponseCode(failure.value.code)
            return f"{failure.value.name.lower()}\n".encode()
        request.setResponseCode(500)
        return b"internal server error\n"


def admin_site(core, metrics) -> server.Site:
    """The twisted.web Site of the admin listener (no access log, no tracebacks)."""
    site = server.Site(AdminApp(core, metrics).resource())
    site.displayTracebacks = False
    site.log = lambda request: None
    return site
