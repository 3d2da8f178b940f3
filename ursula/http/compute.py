"""Handlers of the compute extension's stream routes (``docs/wasm.md``).

``PUT {stream}/compute`` binds a module registered with this node (a JSON body: ``module``,
optional ``digest``, ``every_records``, ``every_bytes``, ``snapshot_content_type``): the module's
bytes, its digest, the limits of ``[compute]`` and the policy go into one ``BindCompute``
command, so every replica reduces with the same module and budget. ``GET {stream}/compute``
describes the binding; ``DELETE {stream}/compute`` removes it; ``GET {stream}/compute/state``
answers the materialised state (``?render`` the rendered snapshot body instead), with
``Stream-Compute-Offset`` (the state covers ``[0, offset)``) and ``Stream-Compute-Digest``.
Reads use ``ICore.view`` (the linearizable barrier, then this node's replica).

May import: Twisted, ``ursula.protocol``, ``ursula.stream`` (commands, compute types),
``ursula.compute`` (the module registry) and ``ursula.http`` modules.
"""

from __future__ import annotations

import json

from ursula.compute import ComputeLimits, ModuleError, ModuleRegistry
from ursula.http import render
from ursula.protocol.errors import ProtocolError
from ursula.protocol.offsets import render_offset
from ursula.stream import commands as C
from ursula.stream.compute import state_digest

BIND_KEYS = frozenset({"module", "digest", "every_records", "every_bytes",
                       "snapshot_content_type"})


def registry_for(config) -> ModuleRegistry:
    compute = config.compute
    return ModuleRegistry(config.compute_directory,
                          ComputeLimits(compute.fuel, compute.memory_pages,
                                        compute.max_output_bytes),
                          compute.max_module_bytes)


def _body(request) -> bytes:
    content = request.content
    if content is None:
        return b""
    return content.getvalue() if hasattr(content, "getvalue") else content.read()


def _count(spec: dict, key: str, default: int) -> int:
    value = spec.get(key, default)
    if type(value) is not int or value < 0:
        raise ProtocolError(400, f"{key} must be a non-negative integer")
    return value


class ComputeHandlers:
    def __init__(self, core, config):
        self.core = core
        self.config = config
        self.registry = registry_for(config)

    def bind(self, request, bucket: str, name: str):
        compute = self.config.compute
        if not compute.enabled:
            raise ProtocolError(409, "the compute extension is disabled on this node "
                                     "([compute] enabled = false)")
        try:
            spec = json.loads(_body(request) or b"null")
        except ValueError:
            raise ProtocolError(400, "the binding must be a JSON object") from None
        if not isinstance(spec, dict):
            raise ProtocolError(400, 'the binding must be a JSON object, e.g. '
                                     '{"module": "<id>", "every_records": 1000}')
        unknown = sorted(set(spec) - BIND_KEYS)
        if unknown:
            raise ProtocolError(400, f"unknown binding keys {unknown} (known: "
                                     f"{sorted(BIND_KEYS)})")
        module_id = spec.get("module")
        if not isinstance(module_id, str):
            raise ProtocolError(400, "module (the id of a registered module) is required")
        try:
            info = self.registry.get(module_id)
        except ModuleError as error:
            raise ProtocolError(400, str(error)) from None
        if info is None:
            raise ProtocolError(404, f"no module {module_id!r} is registered on this node "
                                     "(PUT /__ursula/compute/modules/<id> on the admin plane, "
                                     "or [compute] modules)")
        digest = spec.get("digest")
        if digest is not None and digest != info.digest:
            raise ProtocolError(409, f"module {module_id!r} has digest {info.digest}, not "
                                     f"{digest}")
        content_type = spec.get("snapshot_content_type", "application/json")
        if not isinstance(content_type, str) or not content_type or len(content_type) > 256:
            raise ProtocolError(400, "snapshot_content_type must be a media type")
        command = C.BindCompute(bucket, name, module_id, info.digest, info.binary,
                                compute.fuel, compute.memory_pages, compute.max_output_bytes,
                                _count(spec, "every_records", compute.every_records),
                                _count(spec, "every_bytes", compute.every_bytes),
                                content_type)

        def done(outcome):
            if outcome.error:
                return render.outcome_error(request, outcome)
            request.setResponseCode(201 if outcome.created else 200)
            return self._describe(request, outcome.payload)
        return self.core.submit(command).addCallback(done)

    def unbind(self, request, bucket: str, name: str):
        def done(outcome):
            if outcome.error:
                return render.outcome_error(request, outcome)
            request.setResponseCode(204)
            return render.finish_body(request, b"")
        return self.core.submit(C.UnbindCompute(bucket, name)).addCallback(done)

    def describe(self, request, bucket: str, name: str):
        return self.core.view(bucket, name, "compute", 0).addCallback(
            lambda view: self._describe(request, view.compute))

    def state(self, request, bucket: str, name: str, arg: str):
        if arg != "state":
            raise ProtocolError(404, "no such route")
        rendered = b"render" in request.args
        kind = "compute-render" if rendered else "compute"

        def answer(view):
            described = view.compute
            state = view.compute_state or b""
            content_type = (described["policy"]["snapshot_content_type"] if rendered
                            else "application/octet-stream")
            request.setHeader(b"content-type", content_type.encode("latin-1", "replace"))
            request.setHeader(b"stream-compute-offset",
                              render_offset(described["offset"]).encode())
            request.setHeader(b"stream-compute-digest", described["state_digest"].encode())
            if rendered:
                request.setHeader(b"stream-compute-render-digest", state_digest(state).encode())
            request.setHeader(b"cache-control", b"no-store")
            return render.finish_body(request, state)
        return self.core.view(bucket, name, kind, 0).addCallback(answer)

    @staticmethod
    def _describe(request, described: dict) -> bytes:
        shown = dict(described)
        for key in ("bound_at", "offset"):
            shown[key] = render_offset(shown[key])
        if shown.get("last_error"):
            shown["last_error"] = {**shown["last_error"],
                                   "offset": render_offset(shown["last_error"]["offset"])}
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"stream-compute-digest", described["state_digest"].encode())
        return render.finish_body(request, json.dumps(shown, separators=(",", ":")).encode())
