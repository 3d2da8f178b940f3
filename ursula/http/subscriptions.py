"""The reserved subscription routes (PROTOCOL.md sections 6-7), under ``{stream-url}/__ds/``:

``PUT|GET|DELETE subscriptions/:id``, ``POST subscriptions/:id/streams``,
``DELETE subscriptions/:id/streams/:path``, ``POST subscriptions/:id/callback|claim|ack|release``
and ``GET jwks.json``. ``{stream-url}`` is ``/v1/stream`` or ``/_default`` (bucket ``_default``)
or ``/{bucket}`` (that bucket's streams); stream paths in bodies are relative to it.

Every state change is a ``Subscription`` command submitted through ``ICore`` (so it reaches the
group of ``__ds/subscriptions/<id>`` on whichever core and node leads it). Errors are JSON
``{"error": {"code", "message"}}`` with the protocol's codes; nothing here answers 5xx except
503 when the cluster cannot serve (the guard's ``Unavailable``).

May import: Twisted, ``ursula.protocol``, ``ursula.stream`` (commands, subscription helpers),
``ursula.subscriptions`` and ``ursula.http`` modules; the node only through ``ICore``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime

from twisted.internet import defer

from ursula.http import render
from ursula.http.streams import request_body
from ursula.protocol.errors import ProtocolError
from ursula.protocol.names import check_stream
from ursula.protocol.offsets import parse_wire_offset, render_offset
from ursula.stream import commands as C
from ursula.stream.subscriptions import config_hash, sub_key
from ursula.subscriptions.listing import list_matching
from ursula.subscriptions.signing import TokenError
from ursula.subscriptions.urls import check_webhook_url

_ID = re.compile(r"[A-Za-z0-9._~:@-]+")
_STATUS = {"SUBSCRIPTION_NOT_FOUND": 404, "SUBSCRIPTION_ALREADY_EXISTS": 409, "FENCED": 409,
           "ALREADY_CLAIMED": 409, "NO_PENDING_WORK": 409, "INVALID_OFFSET": 409,
           "SUBSCRIPTION_LIMIT": 409, "INVALID_REQUEST": 400, "WEBHOOK_URL_REJECTED": 400,
           "TOKEN_INVALID": 401, "TOKEN_EXPIRED": 401, "UNAUTHORIZED": 401,
           "PAYLOAD_TOO_LARGE": 413, "METHOD_NOT_ALLOWED": 405, "NOT_FOUND": 404}
_MESSAGES = {"SUBSCRIPTION_NOT_FOUND": "subscription not found",
             "SUBSCRIPTION_ALREADY_EXISTS": "subscription exists with a different configuration",
             "FENCED": "wake generation is stale", "NO_PENDING_WORK": "no pending work",
             "ALREADY_CLAIMED": "another worker holds the lease",
             "INVALID_OFFSET": "invalid ack offset",
             "SUBSCRIPTION_LIMIT": "too many subscriptions ([subscriptions] max_subscriptions)",
             "INVALID_REQUEST": "invalid request"}


class SubError(Exception):
    def __init__(self, code: str, message: str | None = None, extra: dict | None = None):
        super().__init__(message or code)
        self.code = code
        self.message = message or _MESSAGES.get(code, code)
        self.extra = extra or {}


def error_json(request, code: str, message: str, extra: dict | None = None) -> bytes:
    request.setResponseCode(_STATUS.get(code, 400))
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    body = {"code": code, "message": message}
    body.update(extra or {})
    return render.finish_body(request, json.dumps({"error": body}).encode())


def json_answer(request, status: int, value) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return render.finish_body(request, json.dumps(value, separators=(",", ":")).encode())


def render_ack(offset: int) -> str:
    return "-1" if offset < 0 else render_offset(offset)


class SubscriptionRoutes:
    def __init__(self, core, config, keys, clock):
        self.core = core
        self.config = config
        self.settings = config.subscriptions
        self.keys = keys  # ursula.subscriptions.signing.KeyStore
        self.clock = clock
        self.max_name = config.limits.max_stream_name_bytes

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, request, bucket: str, root: str, rest: str):
        """``rest``: the path after ``{stream-url}/__ds/``; ``root``: ``{stream-url}``."""
        try:
            d = self._route(request, bucket, root, rest)
        except SubError as error:
            return error_json(request, error.code, error.message, error.extra)
        except ProtocolError as error:
            if error.status >= 500:
                raise
            code = "PAYLOAD_TOO_LARGE" if error.status == 413 else "INVALID_REQUEST"
            return error_json(request, code, error.reason)
        if isinstance(d, defer.Deferred):
            return d.addErrback(self._failed, request)
        return d

    def _failed(self, failure, request):
        if failure.check(SubError):
            e = failure.value
            return error_json(request, e.code, e.message, e.extra)
        if failure.check(TokenError):
            return error_json(request, failure.value.code, "bearer token is not valid")
        if failure.check(ProtocolError) and failure.value.status < 500:
            return error_json(request, "INVALID_REQUEST", failure.value.reason)
        return failure  # Unavailable and the unexpected: the app's guard

    def _route(self, request, bucket, root, rest):
        method = request.method
        parts = rest.split("/")
        if parts == ["jwks.json"]:
            self._allow(method, (b"GET", b"HEAD"))
            return self.jwks(request)
        if len(parts) < 2 or parts[0] != "subscriptions" or not parts[1]:
            raise SubError("NOT_FOUND", "no such subscription route")
        sub_id = parts[1]
        if len(sub_id.encode()) > self.settings.max_id_bytes or not _ID.fullmatch(sub_id):
            raise SubError("INVALID_REQUEST", "subscription ids are 1-"
                           f"{self.settings.max_id_bytes} characters of A-Z a-z 0-9 . _ ~ : @ -")
        tail = parts[2:]
        if not tail:
            self._allow(method, (b"PUT", b"GET", b"HEAD", b"DELETE"))
            if method == b"PUT":
                return self.put(request, bucket, root, sub_id)
            if method == b"DELETE":
                return self.delete(request, bucket, sub_id)
            return self.get(request, bucket, root, sub_id)
        if tail[0] == "streams":
            if len(tail) == 1:
                self._allow(method, (b"POST",))
                return self.add_streams(request, bucket, sub_id)
            self._allow(method, (b"DELETE",))
            return self.remove_stream(request, bucket, sub_id, "/".join(tail[1:]))
        if len(tail) == 1 and tail[0] in ("callback", "ack", "release", "claim"):
            self._allow(method, (b"POST",))
            if tail[0] == "claim":
                return self.claim(request, bucket, sub_id)
            return self.wake_call(request, bucket, sub_id, tail[0])
        raise SubError("NOT_FOUND", "no such subscription route")

    @staticmethod
    def _allow(method: bytes, allowed) -> None:
        if method not in allowed:
            raise SubError("METHOD_NOT_ALLOWED", "method not allowed on this route")

    def _body(self, request, required: bool = True) -> dict:
        raw = request_body(request)
        if len(raw) > self.settings.max_body_bytes:
            raise SubError("PAYLOAD_TOO_LARGE", "body over [subscriptions] max_body_bytes "
                           f"({self.settings.max_body_bytes})")
        if not raw and not required:
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise SubError("INVALID_REQUEST", "the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise SubError("INVALID_REQUEST", "the body must be a JSON object")
        return value

    def _path(self, bucket: str, value, what: str) -> str:
        if not isinstance(value, str):
            raise SubError("INVALID_REQUEST", f"{what} must be a string")
        try:
            return check_stream(value.strip("/"), self.max_name, allow_slash=True)
        except ProtocolError as error:
            raise SubError("INVALID_REQUEST", f"{what}: {error.reason}") from None

    def _submit(self, bucket, sub_id, op, **args):
        args["id"] = sub_id
        return self.core.submit(C.Subscription(bucket, sub_key(sub_id), op, args))

    @staticmethod
    def _raise(outcome):
        if outcome.error:
            payload = outcome.payload or {}
            extra = {k: v for k, v in payload.items()
                     if k in ("current_holder", "generation")}
            raise SubError(outcome.error, payload.get("message"), extra)
        return outcome

    # -- config ---------------------------------------------------------------------------

    def normalize(self, bucket: str, body: dict) -> dict:
        s = self.settings
        kind = body.get("type")
        if kind not in ("webhook", "pull-wake"):
            raise SubError("INVALID_REQUEST", "type must be webhook or pull-wake")
        pattern = body.get("pattern")
        if pattern is not None:
            if (not isinstance(pattern, str) or not pattern or len(pattern.encode()) >
                    self.max_name or "" in pattern.split("/")):
                raise SubError("INVALID_REQUEST", "pattern must be a glob of non-empty path "
                               "segments (* one segment, ** any number)")
        streams = body.get("streams")
        if streams is not None:
            if not isinstance(streams, list):
                raise SubError("INVALID_REQUEST", "streams must be an array of stream paths")
            if len(streams) > s.max_streams:
                raise SubError("INVALID_REQUEST", f"more than {s.max_streams} streams "
                               "([subscriptions] max_streams)")
            streams = sorted({self._path(bucket, p, "streams[]") for p in streams})
        if pattern is None and not streams:
            raise SubError("INVALID_REQUEST", "pattern or streams is required")
        webhook = None
        wake_stream = None
        if kind == "webhook":
            hook = body.get("webhook")
            if not isinstance(hook, dict) or not isinstance(hook.get("url"), str):
                raise SubError("INVALID_REQUEST", "webhook subscriptions require webhook.url")
            try:
                url = check_webhook_url(hook["url"], s.allow_loopback_webhooks,
                                        s.allow_http_webhooks)
            except ValueError as error:
                raise SubError("WEBHOOK_URL_REJECTED", str(error)) from None
            webhook = {"url": url}
        else:
            if body.get("wake_stream") is None:
                raise SubError("INVALID_REQUEST", "pull-wake subscriptions require wake_stream")
            wake_stream = self._path(bucket, body["wake_stream"], "wake_stream")
        ttl = body.get("lease_ttl_ms", s.default_lease_ttl_ms)
        if (not isinstance(ttl, int) or isinstance(ttl, bool)
                or not s.min_lease_ttl_ms <= ttl <= s.max_lease_ttl_ms):
            raise SubError("INVALID_REQUEST", f"lease_ttl_ms must be an integer from "
                           f"{s.min_lease_ttl_ms} to {s.max_lease_ttl_ms}")
        description = body.get("description")
        if description is not None and (not isinstance(description, str)
                                        or len(description) > 1024):
            raise SubError("INVALID_REQUEST", "description must be a string of at most 1024 "
                           "characters")
        return {"type": kind, "pattern": pattern, "streams": streams or [],
                "webhook": webhook, "wake_stream": wake_stream, "lease_ttl_ms": ttl,
                "description": description}

    # -- routes -----------------------------------------------------------------------------

    def base_url(self, request, root: str) -> str:
        host = (request.getHeader(b"host") or b"localhost").decode("latin-1")
        proto = request.getHeader(b"x-forwarded-proto")
        scheme = "https" if request.isSecure() or proto == b"https" else "http"
        return f"{scheme}://{host}{root}"

    def put(self, request, bucket, root, sub_id):
        config = self.normalize(bucket, self._body(request))
        base = self.base_url(request, root)

        def submit(links):
            return self._submit(bucket, sub_id, "put", config=config, hash=config_hash(config),
                                base_url=base, links=links,
                                max=self.settings.max_subscriptions)

        def answer(outcome):
            self._raise(outcome)
            return self.render(request, 201 if outcome.created else 200, bucket, base,
                               outcome.payload)
        d = self.backfill(bucket, config["pattern"], config["streams"])
        return d.addCallback(submit).addCallback(answer)

    def backfill(self, bucket, pattern, explicit) -> defer.Deferred:
        """[[path, uid, tail]] of the existing streams the subscription links at creation."""
        def heads(found):
            listed = {f[0] for f in found}
            names = [n for n in explicit if n not in listed]
            ds = [self.core.head(bucket, n) for n in names]

            def got(results):
                for name, (ok, info) in zip(names, results, strict=True):
                    if ok:
                        found.append([name, info.uid, info.tail])
                return found
            return defer.DeferredList(ds, consumeErrors=True).addCallback(got)
        if pattern is None:
            return heads([])
        limit = self.config.limits.max_list_streams
        return list_matching(self.core, bucket, pattern, limit, 100_000).addCallback(heads)

    def render(self, request, status, bucket, base, view) -> defer.Deferred | bytes:
        config = view["config"]
        created = datetime.fromtimestamp(view["created_ms"] / 1000, tz=UTC)
        out = {"id": view["id"], "subscription_id": view["id"], "type": config["type"],
               "pattern": config["pattern"],
               "streams": [{"path": s["path"], "link_type": s["link_type"],
                            "acked_offset": render_ack(s["acked"]),
                            "tail_offset": render_offset(s["tail"])} for s in view["streams"]],
               "webhook": None, "wake_stream": config["wake_stream"],
               "lease_ttl_ms": config["lease_ttl_ms"],
               "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "status": view["status"], "description": config["description"],
               "generation": view["generation"]}
        if config["type"] != "webhook":
            return json_answer(request, status, out)

        def signed(signer):
            out["webhook"] = {"url": config["webhook"]["url"],
                              "signing": {"alg": "ed25519", "kid": signer.kid,
                                          "jwks_url": f"{base}/__ds/jwks.json"}}
            return json_answer(request, status, out)
        return self.keys.get().addCallback(signed)

    def get(self, request, bucket, root, sub_id):
        def answer(outcome):
            self._raise(outcome)
            return self.render(request, 200, bucket, self.base_url(request, root),
                               outcome.payload)
        return self._submit(bucket, sub_id, "get").addCallback(answer)

    def delete(self, request, bucket, sub_id):
        def answer(outcome):
            self._raise(outcome)
            request.setResponseCode(204)
            return render.finish_body(request, b"")
        return self._submit(bucket, sub_id, "delete").addCallback(answer)

    def jwks(self, request):
        def answer(signer):
            request.setHeader(b"content-type", b"application/jwk-set+json")
            request.setHeader(b"cache-control", b"public, max-age=300")
            return render.finish_body(request, json.dumps({"keys": [signer.jwk()]}).encode())
        return self.keys.get().addCallback(answer)

    def add_streams(self, request, bucket, sub_id):
        body = self._body(request)
        streams = body.get("streams")
        if not isinstance(streams, list) or not streams:
            raise SubError("INVALID_REQUEST", "streams must be a non-empty array")
        if len(streams) > self.settings.max_streams:
            raise SubError("INVALID_REQUEST", f"more than {self.settings.max_streams} streams")
        names = sorted({self._path(bucket, p, "streams[]") for p in streams})

        def submit(links):
            known = {link[0] for link in links}
            add = links + [[n, 0, -1] for n in names if n not in known]
            return self._submit(bucket, sub_id, "links", add=add, remove=[])
        d = self.backfill(bucket, None, names).addCallback(submit)
        return d.addCallback(self._no_content, request)

    def remove_stream(self, request, bucket, sub_id, path):
        name = self._path(bucket, path, "the stream path")
        d = self._submit(bucket, sub_id, "links", add=[], remove=[name])
        return d.addCallback(self._no_content, request)

    def _no_content(self, outcome, request):
        self._raise(outcome)
        request.setResponseCode(204)
        return render.finish_body(request, b"")

    def _token(self, request) -> str:
        header = request.getHeader(b"authorization") or b""
        if not header.lower().startswith(b"bearer ") or len(header) > 4096:
            raise SubError("UNAUTHORIZED", "Authorization: Bearer <token> is required")
        return header[7:].strip().decode("latin-1")

    def wake_call(self, request, bucket, sub_id, op):
        """callback (webhook), ack (pull-wake heartbeat / done) and release."""
        token = self._token(request)
        body = self._body(request)
        wake_id, generation = body.get("wake_id"), body.get("generation")
        if not isinstance(wake_id, str) or not isinstance(generation, int) \
                or isinstance(generation, bool):
            raise SubError("INVALID_REQUEST", "wake_id (string) and generation (integer) are "
                           "required")
        acks = []
        if op != "release":
            raw_acks = body.get("acks", [])
            if not isinstance(raw_acks, list) or len(raw_acks) > self.settings.max_streams:
                raise SubError("INVALID_REQUEST", "acks must be an array of "
                               "{stream, offset} (at most [subscriptions] max_streams)")
            for ack in raw_acks:
                if not isinstance(ack, dict) or not isinstance(ack.get("offset"), str):
                    raise SubError("INVALID_REQUEST", "each ack is {stream, offset}")
                path = self._path(bucket, ack.get("stream", ack.get("path")), "acks[].stream")
                if ack["offset"] == "-1":
                    raise SubError("INVALID_OFFSET", "an ack offset must not be -1")
                try:
                    offset = parse_wire_offset(ack["offset"])
                except ProtocolError:
                    raise SubError("INVALID_REQUEST", "malformed ack offset") from None
                acks.append([path, offset])
            if "done" in body and not isinstance(body["done"], bool):
                raise SubError("INVALID_REQUEST", "done must be a boolean")

        def checked(signer):
            claims = signer.check_token(token, bucket, sub_id, self.now_ms())
            if claims.get("w") != wake_id:
                raise SubError("FENCED")
            names = sorted({a[0] for a in acks})
            ds = [self.core.head(bucket, n) for n in names]

            def submit(results):
                tails = [[n, info.uid, info.tail]
                         for n, (ok, info) in zip(names, results, strict=True) if ok]
                args = {"wake_id": wake_id, "generation": generation,
                        "token_generation": claims.get("g")}
                if op != "release":
                    args.update(acks=acks, done=bool(body.get("done")), tails=tails)
                return self._submit(bucket, sub_id, "release" if op == "release" else "ack",
                                    **args)
            return defer.DeferredList(ds, consumeErrors=True).addCallback(submit)

        def answer(outcome):
            self._raise(outcome)
            if op == "release":
                request.setResponseCode(204)
                return render.finish_body(request, b"")
            payload = outcome.payload or {}
            return json_answer(request, 200, {"ok": True,
                                              "next_wake": bool(payload.get("next_wake"))})
        return self.keys.get().addCallback(checked).addCallback(answer)

    def claim(self, request, bucket, sub_id):
        body = self._body(request, required=False)
        worker = body.get("worker", "worker")
        if not isinstance(worker, str) or not worker or len(worker) > 256:
            raise SubError("INVALID_REQUEST", "worker must be a string of 1-256 characters")
        wake_id = f"w_{int.from_bytes(os.urandom(16), 'big'):032x}"

        def attempt(tails):
            return self._submit(bucket, sub_id, "claim", worker=worker, wake_id=wake_id,
                                tails=tails)

        def first(outcome):
            if outcome.error == "NO_PENDING_WORK":
                # the tails the state knows may lag an append just made: look, then retry
                names = (outcome.payload or {}).get("paths", [])[:self.settings.max_streams]
                return self.backfill(bucket, None, names).addCallback(attempt)
            return outcome

        def answer(outcome, signer):
            self._raise(outcome)
            p = outcome.payload
            token = signer.make_token(bucket, sub_id, p["generation"], p["wake_id"],
                                      self.now_ms() + self.settings.token_ttl_ms)
            streams = [{"path": s["path"], "link_type": s["link_type"],
                        "acked_offset": render_ack(s["acked"]),
                        "tail_offset": render_offset(s["tail"]),
                        "has_pending": s["has_pending"]} for s in p["streams"]]
            return json_answer(request, 200, {"wake_id": p["wake_id"],
                                              "generation": p["generation"], "token": token,
                                              "streams": streams,
                                              "lease_ttl_ms": p["lease_ttl_ms"]})

        def go(signer):
            return attempt([]).addCallback(first).addCallback(answer, signer)
        return self.keys.get().addCallback(go)
