"""Turning state-machine results into HTTP: statuses, headers, bodies, ETags.

May import: the standard library, ``ursula.protocol`` and ``ursula.stream`` result types.
"""

from __future__ import annotations

from ursula.http.common import error_body
from ursula.protocol.errors import reason_for, status_for
from ursula.protocol.jsonmode import render_records
from ursula.protocol.offsets import render_offset, tail_etag

CACHE_HISTORICAL = b"public, max-age=60, stale-while-revalidate=300"


def outcome_error(request, outcome, reason: str | None = None) -> bytes:
    """Render a failed ``Outcome`` with the headers its error code calls for (``reason``
    replaces the code's one-line reason)."""
    code = outcome.error
    headers: dict[str, str] = {}
    if code in ("closed", "content_type_mismatch", "stream_seq_conflict", "producer_seq_gap",
                "empty_append", "producer_epoch_stale", "precondition_failed", "retained"):
        headers["Stream-Next-Offset"] = render_offset(outcome.next_offset)
    if code == "precondition_failed":  # the current tail, for the writer's retry
        headers["ETag"] = tail_etag(outcome.next_offset)
    if code == "closed" or (outcome.closed and code in ("producer_epoch_stale",
                                                         "precondition_failed")):
        headers["Stream-Closed"] = "true"
    if code == "snapshot_older":
        headers["Stream-Snapshot-Offset"] = render_offset(outcome.next_offset)
    if code == "producer_epoch_stale":
        headers["Producer-Epoch"] = str(outcome.producer_epoch)
    if code == "producer_seq_gap":
        headers["Producer-Expected-Seq"] = str(outcome.expected_seq)
        headers["Producer-Received-Seq"] = str(outcome.received_seq)
    return error_body(request, status_for(code), reason or reason_for(code), headers)


def stream_error(request, code: str, next_offset: int | None = None) -> bytes:
    headers = {}
    if next_offset is not None:  # "retained": the first offset a reader may resume from
        headers["Stream-Next-Offset"] = render_offset(next_offset)
    return error_body(request, status_for(code), reason_for(code), headers)


def etag(result) -> bytes:
    suffix = ":c" if result.closed else ""
    return f'"{result.info.uid}:{result.start}:{result.next_offset}{suffix}"'.encode()


def body_of(result) -> bytes:
    """The response body for a read: the JSON array for JSON streams, else the raw bytes."""
    return render_records(result.data) if result.info.json else result.data


def set_read_headers(request, result) -> None:
    set_header = request.setHeader
    set_header(b"content-type", result.info.content_type.encode("latin-1", "replace"))
    set_header(b"stream-next-offset", render_offset(result.next_offset).encode())
    if result.up_to_date:
        set_header(b"stream-up-to-date", b"true")
    if result.closed:
        set_header(b"stream-closed", b"true")


def finish_body(request, body: bytes) -> bytes:
    request.setHeader(b"content-length", str(len(body)).encode())
    return body
