"""ursula_client: a Python client of the Durable Streams Protocol for ursula (and any server
that speaks the protocol), with an exactly-once idempotent producer.

Front ends: ``ursula_client.aio`` (asyncio, httpx), ``ursula_client.twisted`` (Twisted, treq,
Deferreds) and ``ursula_client.sync`` (blocking, over the asyncio one). This package itself
holds only the protocol core's public names (errors, results, offsets) and imports neither
httpx nor Twisted.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

from ursula_client.core.errors import (
    BadRequest,
    Conflict,
    DeliveryTimeout,
    Forbidden,
    HTTPError,
    MalformedResponse,
    PayloadTooLarge,
    PreconditionFailed,
    ProducerClosed,
    ProducerConflict,
    ProducerError,
    ProducerFenced,
    RequestTimeout,
    Retained,
    RetentionConflict,
    SequenceGap,
    ServerError,
    SnapshotConflict,
    SnapshotMatchFailed,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamNotFound,
    SubscriptionError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unavailable,
    UrsulaError,
)
from ursula_client.core.offsets import NOW, START, ZERO
from ursula_client.core.producer import ProducerSettings
from ursula_client.core.retry import RetryPolicy
from ursula_client.core.subscriptions import AckResult, Wake, WakeStream
from ursula_client.core.types import (
    AppendResult,
    BatchItem,
    Bootstrap,
    BucketEntry,
    BucketPage,
    CreateResult,
    ReadBatch,
    Snapshot,
    StreamInfo,
)

__version__ = "0.1.0"

__all__ = [
    "NOW", "START", "ZERO", "AckResult", "AppendResult", "BadRequest", "BatchItem", "Bootstrap",
    "MalformedResponse", "Retained", "RetentionConflict", "Snapshot", "SnapshotConflict",
    "SnapshotMatchFailed",
    "BucketEntry", "BucketPage", "Conflict", "CreateResult", "DeliveryTimeout", "Forbidden",
    "HTTPError", "PayloadTooLarge", "PreconditionFailed", "ProducerClosed", "ProducerConflict",
    "ProducerError", "ProducerFenced", "ProducerSettings", "ReadBatch", "RequestTimeout",
    "RetryPolicy", "SequenceGap", "ServerError", "StreamClosed", "StreamExists", "StreamGone",
    "StreamInfo", "StreamNotFound", "SubscriptionError", "TooManyRequests", "TransportError",
    "Unauthorized", "Unavailable", "UrsulaError", "Wake", "WakeStream",
]
