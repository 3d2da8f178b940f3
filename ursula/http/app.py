"""The Klein application: routes of both URL layouts, buckets, metrics and health.

``/v1/stream/{name...}`` addresses bucket ``_default``; ``/{bucket}/{stream}`` any bucket. The
handlers and their guard are ``ursula.http.api.Api``, shared with the data plane
(``ursula.http.dataplane``), which serves the public port; this app stays for the control plane.

May import: Twisted, Klein (and werkzeug's exceptions, which Klein raises), ``ursula.protocol``
and ``ursula.http`` modules.
"""

from __future__ import annotations

import random

from klein import Klein
from werkzeug.exceptions import MethodNotAllowed, NotFound

from ursula.http.api import BUCKET_METHODS, STREAM_METHODS, Api
from ursula.http.metrics import Metrics
from ursula.http.streams import header_getter
from ursula.protocol.names import DEFAULT_BUCKET


class UrsulaApp:
    app = Klein()

    def __init__(self, core, config, clock, metrics: Metrics | None = None,
                 rng: random.Random | None = None):
        self.api = Api(core, config, clock, metrics, rng)
        self.core = core
        self.config = config
        self.metrics = self.api.metrics
        self.streams = self.api.streams
        self.live = self.api.live

    def resource(self):
        return self.app.resource()

    @app.route("/v1/stream/<path:name>", methods=STREAM_METHODS, strict_slashes=False)
    def upstream_stream(self, request, name):
        return self.api.stream(request, DEFAULT_BUCKET, name, allow_slash=True)

    @app.route("/_default/<path:name>", methods=STREAM_METHODS, strict_slashes=False)
    def default_bucket_stream(self, request, name):
        return self.api.stream(request, DEFAULT_BUCKET, name, allow_slash=True)

    @app.route("/<bucket>/<stream>", methods=STREAM_METHODS, strict_slashes=False)
    def bucket_stream(self, request, bucket, stream):
        return self.api.stream(request, bucket, stream, allow_slash=False)

    @app.route("/<bucket>/<stream>/append-batch", methods=["POST", "OPTIONS"])
    def append_batch(self, request, bucket, stream):
        return self.api.append_batch(request, bucket, stream)

    @app.route("/<bucket>", methods=BUCKET_METHODS, strict_slashes=False)
    def bucket(self, request, bucket):
        return self.api.bucket(request, bucket)

    @app.route("/__ursula/metrics", methods=["GET"])
    def metrics_route(self, request):
        return self.api.metrics_page(request)

    @app.route("/__ursula/health", methods=["GET"])
    def health(self, request):
        return self.api.health(request)

    @app.route("/__ursula/ready", methods=["GET"])
    def ready(self, request):
        return self.api.ready(request)

    @app.route("/", methods=["GET", "OPTIONS"])
    def root(self, request):
        return self.api.root(request)

    @app.handle_errors(NotFound)
    def not_found(self, request, failure):
        return self.api.not_found(request)

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request, failure):
        return self.api.method_not_allowed(request, failure.value.valid_methods or [])


__all__ = ["UrsulaApp", "header_getter"]
