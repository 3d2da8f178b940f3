"""The client's exceptions, and the mapping from an HTTP answer to the right one.

Every error a front end raises is an ``UrsulaError``. Those that carry an HTTP answer are
``HTTPError`` subclasses with ``status``, ``reason`` (the server's one-line text) and
``headers``; transport failures (no answer) are ``TransportError``.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class UrsulaError(Exception):
    """Base class of everything the client raises."""


class TransportError(UrsulaError):
    """No HTTP answer: the connection failed, broke, or timed out. The request may or may not
    have been applied."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class RequestTimeout(TransportError):
    """The answer did not come within the request's timeout."""


class HTTPError(UrsulaError):
    """The server answered with a status the operation does not accept."""

    status: int = 0

    def __init__(self, status: int, reason: str = "", headers: Mapping[str, str] | None = None,
                 method: str = "", path: str = ""):
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{status} {reason}{where}".strip())


class BadRequest(HTTPError):
    """400: the request is malformed (a bug in the caller, not retried)."""


class Unauthorized(HTTPError):
    """401: a subscription callback, ack or release with a missing or invalid token."""


class Forbidden(HTTPError):
    """403."""


class StreamNotFound(HTTPError):
    """404: no such stream (or bucket, or subscription)."""


class Conflict(HTTPError):
    """409 (see the subclasses for the cases the client can tell apart)."""


class StreamExists(Conflict):
    """409 on create: the stream exists with a different configuration, or the path is a
    soft-deleted stream that forks still reference."""


class StreamClosed(Conflict):
    """409 with ``Stream-Closed: true``: the stream is closed; ``final_offset`` is its tail."""

    @property
    def final_offset(self) -> str | None:
        return self.headers.get("stream-next-offset")


class StreamGone(HTTPError):
    """410: the stream was deleted (soft-deleted while forks reference it), or the offset is
    before the retained data (then it is a ``Retained``)."""


class Retained(StreamGone):
    """410 with ``Stream-Next-Offset``: the offset is below the stream's retention floor (the
    history before it was compacted into a snapshot). ``retained_offset`` is the first offset
    still held; recover with ``bootstrap()`` (the snapshot and the records after it), then
    read on from the bootstrap's ``next_offset`` (or ``follow(..., on_retained="bootstrap")``)."""

    @property
    def retained_offset(self) -> str | None:
        return self.headers.get("stream-next-offset")

    def __str__(self) -> str:
        return (f"{super().__str__()}: the offset is below the retention floor "
                f"{self.retained_offset} (bootstrap, then read on from its next_offset)")


class SnapshotConflict(Conflict):
    """409 on ``publish_snapshot``: the offset is past the tail, older than the latest
    snapshot (``snapshot_offset`` names the latest), or another snapshot is published at this
    offset."""

    @property
    def snapshot_offset(self) -> str | None:
        return self.headers.get("stream-snapshot-offset")


class SnapshotMatchFailed(SnapshotConflict):
    """409 on a conditional ``publish_snapshot(..., match=digest)``: the current snapshot's
    digest is not ``digest`` (someone published in between: re-read and decide)."""


class RetentionConflict(Conflict):
    """409 on ``set_retention``: no snapshot is published yet, the offset is past the latest
    snapshot (the floor may only move up to it), or it would move the floor backwards."""


class MalformedResponse(UrsulaError, ValueError):
    """The server's answer does not have the form the protocol gives it (a multipart body
    that does not parse, a missing header); ``status`` is the answer's status."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class PreconditionFailed(HTTPError):
    """412: an ``If-Match`` append found another tail; ``current_tail`` is the stream's tail
    (the offset to retry against after re-reading)."""

    @property
    def current_tail(self) -> str | None:
        etag = self.headers.get("etag")
        if etag:
            return etag.strip().removeprefix("W/").strip('"')
        return self.headers.get("stream-next-offset")


class PayloadTooLarge(HTTPError):
    """413: the body is over the server's ``limits.max_body_bytes`` (or too many frames)."""


class TooManyRequests(HTTPError):
    """429."""


class ServerError(HTTPError):
    """5xx. ``retry_after`` is the server's ``Retry-After`` in seconds, if any."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class Unavailable(ServerError):
    """503: the cluster cannot serve this now (no leader, a leader change, a reader limit)."""


class ProducerError(UrsulaError):
    """An idempotent producer cannot go on (see the subclasses)."""


class ProducerFenced(ProducerError, Forbidden):
    """403: a newer epoch of this producer id exists (another instance took over);
    ``current_epoch`` is the server's."""

    @property
    def current_epoch(self) -> int | None:
        value = self.headers.get("producer-epoch")
        return int(value) if value is not None and value.isdigit() else None


class SequenceGap(ProducerError, Conflict):
    """409 with ``Producer-Expected-Seq``: the server expected another sequence number, and no
    batch this producer still holds can fill the gap (records were lost before they reached
    this producer, or another writer uses the same id and epoch)."""

    @property
    def expected_seq(self) -> int | None:
        value = self.headers.get("producer-expected-seq")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def received_seq(self) -> int | None:
        value = self.headers.get("producer-received-seq")
        return int(value) if value is not None and value.isdigit() else None


class ProducerConflict(ProducerError):
    """The first attempt of a batch was answered as a duplicate: another writer already used
    this producer id, epoch and sequence number (start with a higher epoch, or
    ``auto_claim=True``)."""


class ProducerClosed(ProducerError):
    """``append`` after ``close()`` (or after the producer failed)."""


class DeliveryTimeout(ProducerError):
    """A batch was retried for longer than the producer's ``delivery_timeout``; it may or may
    not be in the stream (a retry with the same producer, epoch and sequence would tell)."""


class SubscriptionError(HTTPError):
    """An error of the subscription routes: ``code`` is the JSON error code
    (``ALREADY_CLAIMED``, ``FENCED``, ``NO_PENDING_WORK``, ``WEBHOOK_URL_REJECTED``, ...)."""

    def __init__(self, status: int, reason: str = "", headers: Mapping[str, str] | None = None,
                 method: str = "", path: str = "", body: object = None):
        super().__init__(status, reason, headers, method, path)
        self.body = body

    @property
    def code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: not used by ursula
    return seconds if seconds >= 0 else None


_BY_STATUS: dict[int, type[HTTPError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: StreamNotFound, 409: Conflict,
    410: StreamGone, 412: PreconditionFailed, 413: PayloadTooLarge, 429: TooManyRequests,
    503: Unavailable,
}


def error_for(status: int, headers: Mapping[str, str], body: bytes, method: str = "",
              path: str = "", subscription: bool = False, creating: bool = False,
              conflict: type[Conflict] | None = None) -> HTTPError:
    """The exception for an unexpected answer. ``headers`` must have lowercase names;
    ``conflict``: the class of a plain 409 for this operation (a snapshot publish, a
    retention move)."""
    text = body.decode("utf-8", "replace").strip()
    if subscription:
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        reason = text
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            reason = str(parsed["error"].get("message") or parsed["error"].get("code") or text)
        return SubscriptionError(status, reason, headers, method, path, parsed)
    reason = text.splitlines()[0] if text else ""
    cls: type[HTTPError]
    if status == 403 and "producer-epoch" in headers:
        cls = ProducerFenced
    elif status == 409 and headers.get("stream-closed", "").lower() == "true":
        cls = StreamClosed
    elif status == 409 and "producer-expected-seq" in headers:
        cls = SequenceGap
    elif status == 409 and creating:
        cls = StreamExists
    elif status == 409 and conflict is SnapshotConflict \
            and "stream-snapshot-match" in reason.lower():
        cls = SnapshotMatchFailed
    elif status == 409 and conflict is not None:
        cls = conflict
    elif status == 410 and "stream-next-offset" in headers:
        cls = Retained
    elif status in _BY_STATUS:
        cls = _BY_STATUS[status]
    elif status >= 500:
        cls = ServerError
    else:
        cls = HTTPError
    return cls(status, reason, headers, method, path)
