"""The API's dispatch, shared by the data plane and the Klein app: stream, bucket and health
handlers behind one guard.

Every call takes a request object with the small twisted.web-like surface the handlers use
(``method``, ``args``, ``setResponseCode``, ``setHeader``, ...) and returns the response body
(bytes) or a Deferred of it. ``guard`` turns protocol and state-machine errors into a status
with a one-line reason, and anything unexpected into a logged 500 without a traceback.

May import: Twisted, ``ursula.protocol``, ``ursula.stream`` (commands, errors),
``ursula.subscriptions`` (the signing key store) and ``ursula.http`` modules; the node only
through ``ICore`` (``ursula.core.interfaces``).
"""

from __future__ import annotations

import json
import random

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ursula.core.interfaces import TooManyReaders, Unavailable
from ursula.http import render
from ursula.http.common import error_body
from ursula.http.compute import ComputeHandlers
from ursula.http.extensions import ExtensionHandlers
from ursula.http.live import LiveReads
from ursula.http.metrics import Metrics
from ursula.http.streams import StreamHandlers, parse_offset_arg
from ursula.protocol.errors import ProtocolError
from ursula.protocol.names import check_bucket, check_stream
from ursula.stream import commands as C
from ursula.stream.machine import StreamError

log = Logger()

STREAM_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"]
BUCKET_METHODS = ["GET", "PUT", "DELETE", "OPTIONS"]


class Api:
    def __init__(self, core, config, clock, metrics: Metrics | None = None,
                 rng: random.Random | None = None):
        self.core = core
        self.config = config
        self.metrics = metrics or Metrics(core)
        self.streams = StreamHandlers(core, config, self.metrics)
        self.live = LiveReads(core, config, self.metrics, clock, rng or random.Random(),
                              self.streams)
        self.max_name = config.limits.max_stream_name_bytes
        self.keys = None
        self.subscriptions = None
        self.subscription_service = None  # set by data_plane_factory
        if getattr(config, "subscriptions", None) is not None and config.subscriptions.enabled:
            from ursula.http.subscriptions import SubscriptionRoutes
            from ursula.stream.subscriptions import key_command
            from ursula.subscriptions.signing import KeyStore
            self.keys = KeyStore(core, key_command)
            self.subscriptions = SubscriptionRoutes(core, config, self.keys, clock)
        self.extensions = ExtensionHandlers(core, config, self.streams)
        ext = self.extensions
        self.compute = ComputeHandlers(core, config)
        compute = self.compute
        # (extension, has an argument) -> {method: handler(request, bucket, name[, arg])}
        self._extension_routes = {
            ("snapshot", False): {b"GET": ext.latest_snapshot},
            ("snapshot", True): {b"GET": ext.read_snapshot, b"PUT": ext.publish_snapshot},
            ("retention", True): {b"PUT": ext.advance_retention},
            ("bootstrap", False): {b"GET": ext.bootstrap},
            ("attrs", False): {b"GET": ext.get_attrs, b"PUT": ext.put_attrs},
            ("compute", False): {b"GET": compute.describe, b"PUT": compute.bind,
                                 b"DELETE": compute.unbind},
            ("compute", True): {b"GET": compute.state},
        }
        streams = self.streams
        self._handlers = {b"GET": self._get, b"PUT": streams.put, b"POST": streams.post,
                          b"DELETE": streams.delete, b"HEAD": streams.head}

    # -- routes --------------------------------------------------------------------------

    def stream(self, request, bucket: str, name: str, allow_slash: bool):
        method = request.method
        if method == b"OPTIONS":
            return self.options(request)
        # guard() and _named() inlined: this is every append's path
        try:
            result = self._handlers[method](request, check_bucket(bucket),
                                            check_stream(name, self.max_name, allow_slash))
        except Exception:
            return self._answer_failure(Failure(), request)
        if isinstance(result, Deferred):
            return result.addErrback(self._answer_failure, request)
        return result

    def reserved(self, request, bucket: str, root: str, rest: str):
        """``{stream-url}/__ds/<rest>``: the subscription APIs (``ursula.http.subscriptions``)."""
        if request.method == b"OPTIONS":
            return self.options(request)
        if self.subscriptions is None:
            return error_body(request, 404, "subscriptions are disabled on this server")
        return self.guard(request, lambda req: self.subscriptions.handle(req, bucket, root,
                                                                         rest))

    def extension(self, request, bucket: str, name: str, ext: str, arg: str | None,
                  allow_slash: bool):
        """``{stream}/<ext>[/<arg>]``: snapshots, retention, bootstrap, attrs, compute."""
        routes = self._extension_routes.get((ext, arg is not None))
        if routes is None:
            return self.not_found(request)
        if request.method == b"OPTIONS":
            return self.options(request)
        method = b"GET" if request.method == b"HEAD" and b"GET" in routes else request.method
        handler = routes.get(method)
        if handler is None:
            return self.method_not_allowed(request, sorted(m.decode() for m in routes)
                                           + ["OPTIONS"])
        if arg is None:
            return self.guard(request, self._named(handler, bucket, name, allow_slash))
        return self.guard(request, self._named(
            lambda req, b, n: handler(req, b, n, arg), bucket, name, allow_slash))

    def append_batch(self, request, bucket: str, stream: str, allow_slash: bool = False):
        if request.method == b"OPTIONS":
            return self.options(request)
        return self.guard(request, self._named(self.streams.append_batch, bucket, stream,
                                               allow_slash))

    def bucket(self, request, bucket: str):
        if request.method == b"OPTIONS":
            return self.options(request)
        method = b"GET" if request.method == b"HEAD" else request.method
        handler = {b"GET": self._list_bucket, b"PUT": self._put_bucket,
                   b"DELETE": self._delete_bucket}[method]
        return self.guard(request, lambda req: handler(req, check_bucket(bucket)))

    def health(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return render.finish_body(request, b'{"status":"ok"}')

    def ready(self, request):
        ready = self.core.is_ready()
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = b'{"ready":true}' if ready else b'{"ready":false,"reason":"a group has no leader"}'
        return render.finish_body(request, body)

    def root(self, request):
        if request.method == b"OPTIONS":
            return self.options(request)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return render.finish_body(request, b"ursula: Durable Streams server\n")

    def not_found(self, request):
        if request.method == b"OPTIONS":
            return self.options(request)
        return error_body(request, 404, "no such route")

    def method_not_allowed(self, request, allowed):
        request.setHeader(b"allow", ", ".join(allowed).encode())
        return error_body(request, 405, "method not allowed on this route")

    def options(self, request):
        request.setResponseCode(204)
        request.setHeader(b"access-control-max-age", b"86400")
        return b""

    # -- dispatch ------------------------------------------------------------------------

    def _named(self, handler, bucket: str, name: str, allow_slash: bool):
        def call(request):
            # (the router percent-decoded the path once: a name is never decoded twice)
            return handler(request, check_bucket(bucket),
                           check_stream(name, self.max_name, allow_slash))
        return call

    def _get(self, request, bucket: str, name: str):
        live = request.args.get(b"live")
        offset = parse_offset_arg(request)
        if live is None:
            return self.streams.catch_up(request, bucket, name, offset)
        if len(live) != 1 or live[0] not in (b"long-poll", b"sse"):
            raise ProtocolError(400, "live must be long-poll or sse")
        if b"offset" not in request.args:
            raise ProtocolError(400, "live reads require an offset")
        if live[0] == b"sse":
            return self.live.sse(request, bucket, name, offset)
        return self.live.long_poll(request, bucket, name, offset)

    def guard(self, request, call):
        """``call(request)``, with every error it raises or fails with answered (4xx/503, or a
        logged 500)."""
        try:
            result = call(request)
        except Exception:
            return self._answer_failure(Failure(), request)
        if isinstance(result, Deferred):
            return result.addErrback(self._answer_failure, request)
        return result

    def _answer_failure(self, failure, request):
        if failure.check(CancelledError):
            return None
        if failure.check(ProtocolError):
            error = failure.value
            return error_body(request, error.status, error.reason, error.headers)
        if failure.check(StreamError):
            return render.stream_error(request, failure.value.code, failure.value.next_offset)
        if failure.check(Unavailable):
            return error_body(request, 503, str(failure.value), {"Retry-After": "1"})
        if failure.check(TooManyReaders):
            limit = self.config.limits.max_live_readers
            return error_body(request, 503, f"too many live readers (limits.max_live_readers"
                                            f" = {limit})", {"Retry-After": "1"})
        log.failure("unexpected error handling {method} {uri}", failure,
                    method=request.method, uri=request.uri)
        return error_body(request, 500, "internal server error")

    # -- buckets -------------------------------------------------------------------------

    def _put_bucket(self, request, bucket: str):
        def done(outcome):
            request.setResponseCode(201 if outcome.created else 200)
            return render.finish_body(request, b"")
        return self.core.submit(C.CreateBucket(bucket)).addCallback(done)

    def _delete_bucket(self, request, bucket: str):
        def done(outcome):
            if outcome.error:
                return render.outcome_error(request, outcome)
            request.setResponseCode(204)
            return render.finish_body(request, b"")
        return self.core.submit(C.DeleteBucket(bucket)).addCallback(done)

    def _list_bucket(self, request, bucket: str):
        args = request.args
        after = args.get(b"cursor", [b""])[0].decode("utf-8", "replace")
        limit_text = args.get(b"limit", [b"100"])[0]
        if not limit_text.isdigit() or int(limit_text) < 1:
            raise ProtocolError(400, "limit must be a positive integer")
        limit = min(int(limit_text), self.config.limits.max_list_streams)

        def done(items):
            streams = [{"name": name, "content_type": info.content_type,
                        "next_offset": render.render_offset(info.tail), "closed": info.closed}
                       for name, info in items]
            page = {"bucket": bucket, "streams": streams,
                    "next_cursor": streams[-1]["name"] if len(streams) == limit else None}
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            return render.finish_body(request, json.dumps(page).encode())
        return self.core.list_streams(bucket, after, limit).addCallback(done)
