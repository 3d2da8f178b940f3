"""Handlers of the stream routes: create (PUT), append (POST), delete, HEAD, catch-up GET.

Live reads are in ``ursula.http.live``. Each handler returns bytes or a Deferred of bytes; errors
are raised as ``ProtocolError`` / ``StreamError`` and rendered by the app's guard.

May import: Twisted, ``ursula.protocol``, ``ursula.stream`` (commands, result types) and
``ursula.http`` modules. Talks to the node only through ``ICore``.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from ursula.http import render
from ursula.http.extensions import set_snapshot_headers
from ursula.protocol import headers as H
from ursula.protocol.errors import ProtocolError, reason_for, status_for
from ursula.protocol.framing import split_frames
from ursula.protocol.names import DEFAULT_BUCKET, check_bucket, check_stream
from ursula.protocol.offsets import (
    NOW,
    START,
    parse_read_offset,
    parse_wire_offset,
    render_offset,
    tail_etag,
)
from ursula.stream import commands as C


def header_getter(request):
    """``get(name) -> first value as text or None`` for a request's headers."""
    headers = request.requestHeaders
    first = getattr(headers, "first", None)
    if first is not None:  # the data plane's Headers
        return first
    get = headers.getRawHeaders

    def getter(name: str):
        values = get(name)
        return values[0] if values else None
    return getter


def request_body(request) -> bytes:
    content = request.content
    return content.getvalue() if hasattr(content, "getvalue") else content.read()


class StreamHandlers:
    def __init__(self, core, config, metrics):
        self.core = core
        self.config = config
        self.metrics = metrics
        self.max_name = config.limits.max_stream_name_bytes
        self.max_read = config.limits.max_read_bytes

    # -- create --------------------------------------------------------------------------

    def put(self, request, bucket: str, name: str):
        get = header_getter(request)
        lifetime = H.parse_lifetime(get)
        content_type = get("content-type") or None
        fork_from, fork_offset_text = get("stream-forked-from"), get("stream-fork-offset")
        sub_text = get("stream-fork-sub-offset")
        fork_bucket = fork_stream = fork_offset = None
        sub_offset = 0
        if fork_from is None:
            if sub_text is not None or fork_offset_text is not None:
                raise ProtocolError(400, "fork offsets require Stream-Forked-From")
        else:
            fork_bucket, fork_stream = self.parse_stream_path(fork_from, bucket)
            if fork_offset_text is not None:
                parsed = parse_read_offset([fork_offset_text])
                fork_offset = 0 if parsed == START else None if parsed == NOW else parsed
            if sub_text is not None:
                sub_offset = H.parse_sub_offset(sub_text)
                if sub_offset and fork_offset_text is None:
                    raise ProtocolError(400, "Stream-Fork-Sub-Offset > 0 requires Stream-Fork-Offset")
        command = C.CreateStream(
            bucket=bucket, stream=name, content_type=content_type,
            ttl_seconds=lifetime.ttl_seconds, expires_at_ms=lifetime.expires_at_ms,
            expires_at_text=lifetime.expires_at_text, closed=H.flag(get, "stream-closed"),
            body=request_body(request), fork_bucket=fork_bucket, fork_stream=fork_stream,
            fork_offset=fork_offset, fork_sub_offset=sub_offset,
            attrs=H.parse_attrs(get("stream-attrs")) if get("stream-attrs") is not None
            else None)
        return self.core.submit(command).addCallback(self._created, request)

    def parse_stream_path(self, path: str, default_bucket: str) -> tuple[str, str]:
        """A stream reference in a header: ``/v1/stream/name``, ``/bucket/stream`` or ``name``."""
        path = path.strip()
        if "://" in path:
            path = "/" + path.split("://", 1)[1].split("/", 1)[-1]
        if path.startswith("/v1/stream/"):
            return DEFAULT_BUCKET, check_stream(unquote(path[len("/v1/stream/"):]), self.max_name,
                                                allow_slash=True)
        if path.startswith("/"):
            parts = path[1:].split("/")
            if len(parts) != 2:
                raise ProtocolError(400, "Stream-Forked-From must be /v1/stream/<name> or "
                                         "/<bucket>/<stream>")
            return check_bucket(unquote(parts[0])), check_stream(unquote(parts[1]), self.max_name,
                                                                 allow_slash=False)
        return default_bucket, check_stream(unquote(path), self.max_name,
                                            allow_slash=default_bucket == DEFAULT_BUCKET)

    def _created(self, outcome, request):
        if outcome.error:
            return render.outcome_error(request, outcome)
        request.setResponseCode(201 if outcome.created else 200)
        request.setHeader(b"content-type", outcome.content_type.encode("latin-1", "replace"))
        request.setHeader(b"stream-next-offset", render_offset(outcome.next_offset).encode())
        if outcome.closed:
            request.setHeader(b"stream-closed", b"true")
        if outcome.created:
            host = request.getHeader(b"host") or b"localhost"
            scheme = b"https" if request.isSecure() else b"http"
            request.setHeader(b"location", scheme + b"://" + host + request.path)
        return render.finish_body(request, b"")

    # -- append --------------------------------------------------------------------------

    def post(self, request, bucket: str, name: str):
        get = header_getter(request)
        body = request_body(request)
        close = H.flag(get, "stream-closed")
        content_type = get("content-type") or None
        producer = H.parse_producer(get)
        if_match = if_match_of(request)
        if body and content_type is None:
            raise ProtocolError(400, "Content-Type is required to append a body")
        if not body and not close:
            raise ProtocolError(400, "empty body (send Stream-Closed: true to close the stream)")
        command = C.Append(
            bucket=bucket, stream=name, content_type=content_type, body=body, close=close,
            producer=C.Producer(producer.id, producer.epoch, producer.seq) if producer else None,
            stream_seq=get("stream-seq"), if_match=if_match)
        self.metrics.count_append(len(body))
        return self.core.submit(command).addCallback(self._appended, request, bool(body),
                                                     if_match is not None)

    def _appended(self, outcome, request, had_body: bool, conditional: bool = False):
        if outcome.error:
            return render.outcome_error(request, outcome)
        producer = outcome.producer_epoch is not None
        request.setResponseCode(200 if producer and had_body and not outcome.duplicate else 204)
        request.setHeader(b"stream-next-offset", render_offset(outcome.next_offset).encode())
        if conditional:  # the new tail, for the writer's next If-Match
            request.setHeader(b"etag", tail_etag(outcome.next_offset).encode())
        if outcome.closed:
            request.setHeader(b"stream-closed", b"true")
        if producer:
            request.setHeader(b"producer-epoch", str(outcome.producer_epoch).encode())
            request.setHeader(b"producer-seq", str(outcome.producer_seq).encode())
        return render.finish_body(request, b"")

    def append_batch(self, request, bucket: str, name: str):
        get = header_getter(request)
        content_type = get("content-type") or None
        if content_type is None:
            raise ProtocolError(400, "Content-Type is required for append-batch")
        if_match = if_match_of(request)
        if if_match is not None and H.parse_producer(get) is not None:
            # append-batch takes no producer headers; a conditional batch says so (400)
            raise ProtocolError(400, "If-Match cannot be combined with producer headers")
        frames = split_frames(request_body(request), self.config.limits.max_batch_frames)
        command = C.AppendBatch(bucket=bucket, stream=name, content_type=content_type,
                                frames=tuple(frames), if_match=if_match)
        return self.core.submit(command).addCallback(self._batched, request,
                                                     if_match is not None)

    def _batched(self, outcome, request, conditional: bool = False):
        if outcome.error:
            frame = outcome.payload.get("frame") if isinstance(outcome.payload, dict) else None
            if frame is not None:  # a conditional batch refused because of one frame
                return render.outcome_error(
                    request, outcome,
                    f"append-batch frame {frame}: {reason_for(outcome.error)}; nothing was "
                    f"appended")
            return render.outcome_error(request, outcome)
        if conditional:
            request.setHeader(b"etag", tail_etag(outcome.next_offset).encode())
        items = []
        for result in outcome.results:
            if result.error:
                items.append({"status": status_for(result.error), "error": result.error})
            else:
                items.append({"status": 204,
                              "offset": render_offset(result.start_offset),
                              "next_offset": render_offset(result.next_offset)})
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"stream-next-offset", render_offset(outcome.next_offset).encode())
        return render.finish_body(request, json.dumps(items, separators=(",", ":")).encode())

    # -- delete / head ---------------------------------------------------------------------

    def delete(self, request, bucket: str, name: str):
        def deleted(outcome):
            if outcome.error:
                return render.outcome_error(request, outcome)
            request.setResponseCode(204)
            return render.finish_body(request, b"")
        return self.core.submit(C.DeleteStream(bucket, name)).addCallback(deleted)

    def head(self, request, bucket: str, name: str):
        def answer(info):
            request.setHeader(b"content-type", info.content_type.encode("latin-1", "replace"))
            request.setHeader(b"stream-next-offset", render_offset(info.tail).encode())
            request.setHeader(b"cache-control", b"no-store")
            if info.closed:
                request.setHeader(b"stream-closed", b"true")
            if info.ttl_seconds is not None:
                request.setHeader(b"stream-ttl", str(info.ttl_seconds).encode())
            if info.expires_at_text is not None:
                request.setHeader(b"stream-expires-at", info.expires_at_text.encode())
            request.setHeader(b"ursula-stream-bytes", str(info.tail).encode())
            set_snapshot_headers(request, info)
            return b""
        return self.core.head(bucket, name).addCallback(answer)

    # -- catch-up read -----------------------------------------------------------------------

    def touch_if_sliding(self, info, bucket: str, name: str, seen_ms: int):
        """Reads renew a sliding TTL: a replicated Touch command, carrying when the read (which
        arrived at ``seen_ms``) found the stream alive."""
        if info.ttl_seconds is not None:
            touch = C.Touch(bucket, name, seen_ms)
            return self.core.submit(touch).addCallback(lambda _: info)
        return info

    def catch_up(self, request, bucket: str, name: str, offset):
        # head() is the linearizable read barrier; the data then comes from the owning
        # replica's applied state, which is at least as fresh.
        def resolve(info):
            read = self.core.read_applied
            if offset == NOW:
                return read(bucket, name, info.tail, 0).addCallback(now_answer)
            start = 0 if offset == START else offset
            return read(bucket, name, start, self.max_read).addCallback(answer)

        def now_answer(result):
            render.set_read_headers(request, result)
            request.setHeader(b"cache-control", b"no-store")
            return render.finish_body(request, render.body_of(result))

        def answer(result):
            tag = render.etag(result)
            render.set_read_headers(request, result)
            request.setHeader(b"etag", tag)
            if not result.up_to_date:
                request.setHeader(b"cache-control", render.CACHE_HISTORICAL)
            else:
                request.setHeader(b"cache-control", b"no-cache")
            if _etag_matches(request.getHeader(b"if-none-match"), tag):
                request.setResponseCode(304)
                return b""
            return render.finish_body(request, render.body_of(result))

        seen_ms = self.core.now_ms()
        d = self.core.head(bucket, name)
        d.addCallback(self.touch_if_sliding, bucket, name, seen_ms)
        return d.addCallback(resolve)


def _etag_matches(header: bytes | None, tag: bytes) -> bool:
    if not header:
        return False
    candidates = [part.strip() for part in header.split(b",")]
    return tag in candidates or b"*" in candidates or (b"W/" + tag) in candidates


def if_match_of(request) -> int | None:
    """The parsed ``If-Match`` of an append (every value of the header: one is allowed)."""
    return H.parse_if_match(request.requestHeaders.getRawHeaders("if-match"))


def parse_offset_arg(request):
    return parse_read_offset([v.decode("utf-8", "replace") for v in request.args[b"offset"]]
                             if b"offset" in request.args else None)


__all__ = ["StreamHandlers", "parse_offset_arg", "parse_wire_offset"]
