"""Subscriptions (``{stream-url}/__ds/...``): webhook and pull-wake, as requests and answers.

A subscription lives under a stream root: ``/v1/stream`` (the ``_default`` bucket, the
upstream layout) or ``/{bucket}``; the stream paths in its bodies are relative to that root.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ursula_client.core.http import Request, Response
from ursula_client.core.ops import DEFAULT_BUCKET, expect


@dataclass(frozen=True)
class WakeStream:
    path: str
    link_type: str | None = None
    acked_offset: str | None = None
    tail_offset: str | None = None
    has_pending: bool = False


@dataclass(frozen=True)
class Wake:
    """A claimed wake (pull-wake) or a webhook's body: what to work on, and the token that
    authorizes ``ack``/``release``/``callback`` for it."""

    subscription_id: str
    wake_id: str
    generation: int
    token: str
    streams: tuple[WakeStream, ...] = ()
    lease_ttl_ms: int | None = None
    callback_url: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, value: Mapping[str, Any], subscription_id: str = "") -> Wake:
        streams = tuple(WakeStream(s.get("path", ""), s.get("link_type"), s.get("acked_offset"),
                                   s.get("tail_offset"), bool(s.get("has_pending")))
                        for s in value.get("streams", []))
        return cls(subscription_id=value.get("subscription_id", subscription_id),
                   wake_id=value["wake_id"], generation=int(value["generation"]),
                   token=value.get("token") or value.get("callback_token") or "",
                   streams=streams, lease_ttl_ms=value.get("lease_ttl_ms"),
                   callback_url=value.get("callback_url"), raw=dict(value))


@dataclass(frozen=True)
class AckResult:
    ok: bool
    next_wake: bool


class SubscriptionRoutes:
    """The routes under one stream root (``bucket`` None or ``_default``: ``/v1/stream``)."""

    def __init__(self, bucket: str | None = None):
        self.root = "/v1/stream" if bucket in (None, DEFAULT_BUCKET) \
            else "/" + quote(bucket or "", safe="")

    def _path(self, sub_id: str, *rest: str) -> str:
        if not sub_id:
            raise ValueError("a subscription id is needed")
        return "/".join([f"{self.root}/__ds/subscriptions/{quote(sub_id, safe='')}", *rest])

    @staticmethod
    def _json(method: str, target: str, body: Any, token: str | None = None) -> Request:
        headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
        if token is not None:
            headers += (("authorization", f"Bearer {token}"),)
        return Request(method, target, headers, json.dumps(body).encode())

    def put(self, sub_id: str, config: Mapping[str, Any]) -> Request:
        return self._json("PUT", self._path(sub_id), dict(config))

    def get(self, sub_id: str) -> Request:
        return Request("GET", self._path(sub_id))

    def delete(self, sub_id: str) -> Request:
        return Request("DELETE", self._path(sub_id))

    def add_streams(self, sub_id: str, streams: Sequence[str]) -> Request:
        return self._json("POST", self._path(sub_id, "streams"), {"streams": list(streams)})

    def remove_stream(self, sub_id: str, path: str) -> Request:
        return Request("DELETE", self._path(sub_id, "streams", quote(path, safe="")))

    def claim(self, sub_id: str, worker: str) -> Request:
        return self._json("POST", self._path(sub_id, "claim"), {"worker": worker})

    def ack(self, sub_id: str, wake: Wake, acks: Mapping[str, str] | None = None,
            done: bool = False, op: str = "ack") -> Request:
        """``acks``: stream path -> offset processed up to. ``op`` ``callback`` for webhooks."""
        body: dict[str, Any] = {"wake_id": wake.wake_id, "generation": wake.generation,
                                "acks": [{"stream": s, "offset": o}
                                         for s, o in (acks or {}).items()]}
        if done:
            body["done"] = True
        return self._json("POST", self._path(sub_id, op), body, wake.token)

    def release(self, sub_id: str, wake: Wake) -> Request:
        return self._json("POST", self._path(sub_id, "release"),
                          {"wake_id": wake.wake_id, "generation": wake.generation}, wake.token)

    def jwks(self) -> Request:
        return Request("GET", f"{self.root}/__ds/jwks.json")


def parse_json(response: Response, request: Request, ok: Sequence[int] = (200,)) -> Any:
    expect(response, request, ok, subscription=True)
    return json.loads(response.body) if response.body else None


def parse_put(response: Response, request: Request) -> tuple[bool, dict]:
    """(created, the subscription as the server shows it)."""
    return response.status == 201, parse_json(response, request, (200, 201))


def parse_empty(response: Response, request: Request) -> None:
    expect(response, request, (200, 204), subscription=True)


def parse_claim(response: Response, request: Request, sub_id: str) -> Wake:
    return Wake.from_json(parse_json(response, request), sub_id)


def parse_ack(response: Response, request: Request) -> AckResult:
    value = parse_json(response, request)
    return AckResult(bool(value.get("ok")), bool(value.get("next_wake")))
