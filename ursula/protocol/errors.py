"""The protocol's error type and the mapping from state-machine error codes to HTTP.

May import: the standard library only.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A request that cannot be served, with the HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


# Error codes produced by ursula.stream, and the HTTP status each one maps to.
STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "invalid_json": 400,
    "empty_append": 400,
    "empty_json_array": 400,
    "invalid_producer": 400,
    "invalid_fork": 400,
    "invalid_offset": 400,
    "if_match_with_producer": 400,
    "if_match_wildcard": 400,
    "snapshot_unaligned": 400,
    "retention_unaligned": 400,
    "producer_epoch_stale": 403,
    "not_found": 404,
    "bucket_not_found": 404,
    "fork_source_not_found": 404,
    "exists_conflict": 409,
    "content_type_mismatch": 409,
    "closed": 409,
    "stream_seq_conflict": 409,
    "producer_seq_gap": 409,
    "soft_deleted_conflict": 409,
    "bucket_not_empty": 409,
    "snapshot_beyond_tail": 409,
    "snapshot_older": 409,
    "snapshot_digest_conflict": 409,
    "snapshot_match_failed": 409,
    "retention_backwards": 409,
    "retention_no_snapshot": 409,
    "retention_beyond_snapshot": 409,
    "snapshot_not_found": 404,
    "gone": 410,
    "retained": 410,
    "precondition_failed": 412,
    "too_large": 413,
    "compute_digest_mismatch": 400,
    "compute_not_bound": 404,
    "compute_bound": 409,
    "compute_history": 409,
    "compute_render_failed": 422,
    "compute_unavailable": 409,
}

REASON_BY_CODE: dict[str, str] = {
    "bad_request": "bad request",
    "invalid_json": "body is not valid JSON",
    "empty_append": "empty body requires Stream-Closed: true",
    "empty_json_array": "empty JSON array cannot be appended",
    "invalid_producer": "a new producer epoch must start at Producer-Seq 0",
    "invalid_fork": "invalid fork offset",
    "invalid_offset": "offset is beyond the stream tail",
    "if_match_with_producer": "If-Match cannot be combined with producer headers",
    "if_match_wildcard": 'If-Match: * is not supported (send the quoted tail offset)',
    "producer_epoch_stale": "producer epoch is stale",
    "not_found": "stream not found",
    "bucket_not_found": "bucket not found",
    "fork_source_not_found": "fork source stream not found",
    "exists_conflict": "stream exists with a different configuration",
    "content_type_mismatch": "content type does not match the stream",
    "closed": "stream is closed",
    "stream_seq_conflict": "Stream-Seq must increase",
    "producer_seq_gap": "producer sequence gap",
    "soft_deleted_conflict": "stream was deleted and is still referenced by forks",
    "bucket_not_empty": "bucket is not empty",
    "gone": "stream was deleted",
    "retained": "offset is below the stream's retention floor (Stream-Next-Offset is the "
                "first retained offset; GET {stream}/bootstrap recovers)",
    "snapshot_unaligned": "snapshot offset is not a record boundary of the stream",
    "retention_unaligned": "retention offset is not a record boundary of the stream",
    "snapshot_beyond_tail": "snapshot offset is beyond the stream tail",
    "snapshot_older": "a newer snapshot is published (its offset is in Stream-Snapshot-Offset)",
    "snapshot_digest_conflict": "a different snapshot is published at this offset",
    "snapshot_match_failed": "Stream-Snapshot-Match is not the digest of the current snapshot",
    "retention_backwards": "the retention floor only moves forward",
    "retention_no_snapshot": "retention needs a published snapshot first",
    "retention_beyond_snapshot": "retention cannot pass the latest snapshot's offset",
    "snapshot_not_found": "no snapshot at this offset",
    "precondition_failed": "If-Match does not match the stream's tail (the current tail is in "
                           "ETag and Stream-Next-Offset)",
    "too_large": "payload too large",
    "compute_digest_mismatch": "the module's SHA-256 is not the digest given",
    "compute_not_bound": "no compute module is bound to this stream",
    "compute_bound": "another compute binding exists on this stream (DELETE {stream}/compute "
                     "first)",
    "compute_history": "the stream's history is not all held (a retention floor or cold "
                       "bytes): bind a module before compacting the stream",
    "compute_render_failed": "the module failed to render the state (see GET "
                             "{stream}/compute for the error kind)",
    "compute_unavailable": "the compute extension is disabled on this server ([compute] "
                           "enabled = false)",
}


def status_for(code: str) -> int:
    """HTTP status for a state-machine error code (500 for an unknown code)."""
    return STATUS_BY_CODE.get(code, 500)


def reason_for(code: str) -> str:
    return REASON_BY_CODE.get(code, code)
