"""``AdminApp``: the control plane's Klein routes, on the admin listener (loopback by default).

Read-only: ``GET /__ursula/metrics`` (Prometheus text), ``/__ursula/health``, ``/__ursula/ready``
(also served on the public port, for load balancers), ``/__ursula/groups`` (each local group's
term, leader, role, commit and applied index, snapshot, hot and cold bytes), ``/__ursula/status``
(the node, whether it is draining, its groups) and ``/`` (an index).

Operations (``POST``): ``/__ursula/groups/<g>/transfer-leader?to=<node>``,
``/__ursula/groups/<g>/snapshot``, ``/__ursula/snapshot`` (every group held here),
``/__ursula/drain``, ``/__ursula/undrain``; for backups ``GET /__ursula/backup/info`` and
``GET /__ursula/backup/group/<g>`` (a consistent image of the group: ``ursula.backup``).

The compute extension's module registry (``docs/wasm.md``): ``PUT
/__ursula/compute/modules/<id>`` registers a module (the body: a WebAssembly binary or WAT
text; a module with imports, missing exports, or that is not WebAssembly is a 400 with the
reason), ``GET /__ursula/compute/modules`` lists them, ``GET``/``DELETE
/__ursula/compute/modules/<id>`` shows or removes one.

With a bearer token (``[node] admin_token``; required when the listener is not on loopback)
every route but health and ready needs ``Authorization: Bearer <token>`` (401 otherwise).
Anything unknown is a 404 with a one-line reason; a refused operation answers its status with a
one-line reason; tracebacks are never shown. The core's answers may be Deferreds (the supervisor
of a multi-core node asks its cores over the local link).

May import: Twisted, Klein (and werkzeug, its router), ``ursula.http.metrics``, ``ursula.core``
(interfaces and ``AdminError``), ``ursula.compute`` (the module registry).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from klein import Klein
from twisted.internet import defer
from twisted.web import resource, server

from ursula.core.cluster import AdminError
from ursula.core.interfaces import Unavailable

#: The version of the backup image format (``ursula.backup`` checks it).
BACKUP_FORMAT_VERSION = 1

INDEX = (b"ursula admin: GET /__ursula/metrics /__ursula/health /__ursula/ready "
         b"/__ursula/groups /__ursula/status /__ursula/backup/info /__ursula/backup/group/<g>; "
         b"POST /__ursula/groups/<g>/transfer-leader?to=<node> /__ursula/groups/<g>/snapshot "
         b"/__ursula/snapshot /__ursula/drain /__ursula/undrain; POST/DELETE "
         b"/__ursula/groups/<g>/replica; GET /__ursula/join-token/<node>; POST "
         b"/__ursula/peers/<node>?address=<host:port>&token=<t>; "
         b"GET|PUT|DELETE /__ursula/compute/modules[/<id>]\n")

#: Answered without the bearer token (they are on the public port too).
OPEN_PATHS = frozenset({b"/__ursula/health", b"/__ursula/ready"})


class AdminApp:
    app = Klein()

    def __init__(self, core, metrics, drain_timeout_s: float = 30.0, registry=None):
        self.core = core
        self.metrics = metrics
        self.drain_timeout_s = drain_timeout_s
        self.registry = registry  # ursula.compute.ModuleRegistry, or None

    def resource(self):
        return self.app.resource()

    @staticmethod
    def _json(request, status: int, value) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(value, separators=(",", ":")).encode()

    @staticmethod
    def _refused(request, status: int, reason: str, leader=None) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if leader:
            request.setHeader(b"ursula-leader", str(leader).encode())
        if status == 503:
            request.setHeader(b"retry-after", b"1")
        return (" ".join(reason.split()) + "\n").encode()

    def _operation(self, request, call, render):
        """Run an admin operation of the core; its refusals become one-line answers."""
        def refused(failure):
            if failure.check(AdminError):
                error = failure.value
                return self._refused(request, error.status, str(error), error.leader)
            if failure.check(Unavailable, defer.TimeoutError):
                return self._refused(request, 503, failure.getErrorMessage() or "timed out")
            return failure
        return defer.maybeDeferred(call).addCallbacks(render, refused)

    def _supports(self, request, name: str):
        if not hasattr(self.core, name):
            return self._refused(request, 501, f"this node's core has no {name.replace('_', ' ')}")
        return None

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

    @app.route("/__ursula/status", methods=["GET"])
    def status(self, request):
        return self._supports(request, "node_status") or self._operation(
            request, self.core.node_status, lambda value: self._json(request, 200, value))

    @app.route("/__ursula/groups/<int:group>/transfer-leader", methods=["POST"])
    def transfer_leader(self, request, group):
        raw = (request.args.get(b"to") or [b""])[0].decode("latin-1")
        if not raw.isdigit() or int(raw) < 1:
            return self._refused(request, 400, f"to: expected a node id, got {raw!r}")
        to = int(raw)
        return self._supports(request, "transfer_leader") or self._operation(
            request, lambda: self.core.transfer_leader(group, to),
            lambda leader: self._json(request, 200, {"group": group, "leader": leader}))

    @app.route("/__ursula/groups/<int:group>/members/<int:node>", methods=["POST"])
    def change_membership(self, request, group, node):
        op = (request.args.get(b"op") or [b""])[0].decode("latin-1")
        if op not in ("add_learner", "promote", "remove"):
            return self._refused(request, 400, f"op: expected add_learner, promote or remove, "
                                               f"got {op!r}")
        return self._supports(request, "change_membership") or self._operation(
            request, lambda: self.core.change_membership(group, op, node),
            lambda value: self._json(request, 200, value))

    @app.route("/__ursula/groups/<int:group>/replica", methods=["POST", "DELETE"])
    def replica(self, request, group):
        """POST: host a (joining) replica of the group here; DELETE: stop hosting it."""
        name = "host_group" if request.method == b"POST" else "drop_group"
        return self._supports(request, name) or self._operation(
            request, lambda: getattr(self.core, name)(group),
            lambda value: self._json(request, 200, value))

    @app.route("/__ursula/join-token/<int:node>", methods=["GET"])
    def join_token(self, request, node):
        return self._supports(request, "join_token") or self._operation(
            request, lambda: self.core.join_token(node),
            lambda value: self._json(request, 200, value))

    @app.route("/__ursula/peers/<int:node>", methods=["POST"])
    def set_peer_address(self, request, node):
        address = (request.args.get(b"address") or [b""])[0].decode("latin-1")
        token = (request.args.get(b"token") or [b""])[0].decode("latin-1")
        return self._supports(request, "set_peer_address") or self._operation(
            request, lambda: self.core.set_peer_address(node, address, token),
            lambda value: self._json(request, 200, value))

    @app.route("/__ursula/groups/<int:group>/snapshot", methods=["POST"])
    def snapshot_one(self, request, group):
        return self._supports(request, "snapshot_group") or self._operation(
            request, lambda: self.core.snapshot_group(group),
            lambda value: self._json(request, 200, value))

    @app.route("/__ursula/snapshot", methods=["POST"])
    def snapshot_all(self, request):
        missing = self._supports(request, "snapshot_group")
        if missing:
            return missing

        def every():
            d = defer.maybeDeferred(self.core.group_stats)
            return d.addCallback(lambda stats: defer.gatherResults(
                [defer.maybeDeferred(self.core.snapshot_group, row["group"]) for row in stats],
                consumeErrors=True).addErrback(lambda f: f.value.subFailure))
        return self._operation(request, every,
                               lambda rows: self._json(request, 200, {"snapshots": rows}))

    @app.route("/__ursula/drain", methods=["POST"])
    def drain(self, request):
        def drained(leading):
            return self._json(request, 200, {"node": getattr(self.core, "node_id", None),
                                             "draining": True, "drained": not leading,
                                             "leading": leading})
        return self._supports(request, "drain") or self._operation(
            request, lambda: self.core.drain(self.drain_timeout_s), drained)

    @app.route("/__ursula/undrain", methods=["POST"])
    def undrain(self, request):
        return self._supports(request, "undrain") or self._operation(
            request, self.core.undrain,
            lambda _: self._json(request, 200, {"draining": False}))

    @app.route("/__ursula/backup/info", methods=["GET"])
    def backup_info(self, request):
        missing = self._supports(request, "backup_group")
        if missing:
            return missing
        return self._json(request, 200, {"format_version": BACKUP_FORMAT_VERSION,
                                         "group_count": self.core.group_count,
                                         "node": self.core.node_id})

    @app.route("/__ursula/backup/group/<int:group>", methods=["GET"])
    def backup_group(self, request, group):
        def image(value):
            data = value["data"]
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"ursula-backup-format", str(BACKUP_FORMAT_VERSION).encode())
            request.setHeader(b"ursula-backup-index", str(value["index"]).encode())
            request.setHeader(b"ursula-backup-term", str(value["term"]).encode())
            request.setHeader(b"ursula-backup-sha256", hashlib.sha256(data).hexdigest().encode())
            return data
        return self._supports(request, "backup_group") or self._operation(
            request, lambda: self.core.backup_group(group), image)

    # -- the compute module registry -------------------------------------------------------

    def _registry(self, request):
        if self.registry is None:
            return None, self._refused(request, 404, "the compute extension is disabled on "
                                                     "this node ([compute] enabled)")
        return self.registry, None

    @app.route("/__ursula/compute/modules", methods=["GET"])
    def compute_modules(self, request):
        registry, refused = self._registry(request)
        if refused:
            return refused
        return self._json(request, 200, {"modules": [m.describe() for m in registry.list()]})

    @app.route("/__ursula/compute/modules/<string:module_id>", methods=["PUT"])
    def compute_register(self, request, module_id):
        from ursula.compute import ModuleError
        registry, refused = self._registry(request)
        if refused:
            return refused
        data = request.content.read() if request.content is not None else b""
        try:
            info = registry.register(module_id, data)
        except ModuleError as error:
            return self._refused(request, 400, str(error))
        return self._json(request, 201, info.describe())

    @app.route("/__ursula/compute/modules/<string:module_id>", methods=["GET"])
    def compute_module(self, request, module_id):
        from ursula.compute import ModuleError
        registry, refused = self._registry(request)
        if refused:
            return refused
        try:
            info = registry.get(module_id)
        except ModuleError as error:
            return self._refused(request, 400, str(error))
        if info is None:
            return self._refused(request, 404, f"no module {module_id!r} is registered")
        return self._json(request, 200, info.describe())

    @app.route("/__ursula/compute/modules/<string:module_id>", methods=["DELETE"])
    def compute_unregister(self, request, module_id):
        from ursula.compute import ModuleError
        registry, refused = self._registry(request)
        if refused:
            return refused
        try:
            removed = registry.remove(module_id)
        except ModuleError as error:
            return self._refused(request, 400, str(error))
        if not removed:
            return self._refused(request, 404, f"no module {module_id!r} is registered")
        request.setResponseCode(204)
        return b""

    @app.handle_errors
    def failed(self, request, failure):
        from werkzeug.exceptions import HTTPException
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if failure.check(HTTPException):
            request.setResponseCode(failure.value.code)
            return f"{failure.value.name.lower()}\n".encode()
        request.setResponseCode(500)
        return b"internal server error\n"


class TokenGuard(resource.Resource):
    """Every request but health and ready must carry ``Authorization: Bearer <token>``."""

    isLeaf = True

    def __init__(self, inner, token: str):
        super().__init__()
        self.inner = inner
        self.expected = f"Bearer {token}".encode()

    def render(self, request):
        if request.path not in OPEN_PATHS:
            given = request.getHeader(b"authorization") or b""
            if not hmac.compare_digest(given, self.expected):
                request.setResponseCode(401)
                request.setHeader(b"www-authenticate", b'Bearer realm="ursula admin"')
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                reason = (b"a bearer token is required" if not given
                          else b"the bearer token is not valid")
                return reason + b"\n"
        return self.inner.render(request)


def admin_site(core, metrics, token: str = "", drain_timeout_s: float = 30.0,
               registry=None) -> server.Site:
    """The twisted.web Site of the admin listener (no access log, no tracebacks); with
    ``token``, every route but health and ready needs it as a bearer token. ``registry``: the
    compute module registry (``ursula.compute.ModuleRegistry``), None for no compute routes."""
    root = AdminApp(core, metrics, drain_timeout_s, registry).resource()
    if token:
        root = TokenGuard(root, token)
    site = server.Site(root)
    site.displayTracebacks = False
    site.log = lambda request: None
    return site
