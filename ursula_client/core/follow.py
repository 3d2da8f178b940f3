"""A follower without I/O: which request to make next to tail a stream from an offset (long-poll
or SSE), and what each answer means, so that a reconnect (after a dropped connection, a 503, a
leader change, a node that died) resumes from the last offset the server confirmed and the
reader sees every record exactly once. Below the retention floor (410 ``Retained``) it can
bootstrap instead: the snapshot and the records after it, as one batch carrying ``snapshot``,
then on from the bootstrap's ``next_offset``.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

from ursula_client.core import ops
from ursula_client.core.errors import Retained, UrsulaError
from ursula_client.core.http import Request, Response
from ursula_client.core.offsets import START, check_offset
from ursula_client.core.retry import NotSent, is_transient
from ursula_client.core.sse import StreamEvents
from ursula_client.core.types import Bootstrap, ReadBatch, is_json_type

LIVE_MODES = ("long-poll", "sse")
#: what a follower does when its offset is below the retention floor (410 ``Retained``):
#: raise it, or bootstrap (the snapshot and the records after it) and follow on from there
ON_RETAINED = ("raise", "bootstrap")


class FollowState:
    """``offset``: where the next read starts (the last ``Stream-Next-Offset`` or control
    ``streamNextOffset`` seen); ``done`` once the stream is closed and fully read."""

    def __init__(self, ref: ops.StreamRef, offset: str = START, *, live: str = "long-poll",
                 json_mode: bool | None = None, request_timeout: float | None = None,
                 on_retained: str = "raise"):
        if live not in LIVE_MODES:
            raise ValueError(f"live is one of {LIVE_MODES}")
        if on_retained not in ON_RETAINED:
            raise ValueError(f"on_retained is one of {ON_RETAINED}")
        self.on_retained = on_retained
        #: bootstraps done after a ``Retained``
        self.bootstraps = 0
        self.ref = ref
        self.offset = check_offset(offset)
        self.live = live
        self.json_mode = json_mode
        self.base64_mode = False
        self.cursor: str | None = None
        self.done = False
        self.request_timeout = request_timeout
        self.reconnects = 0

    @property
    def needs_head(self) -> bool:
        """SSE answers do not say whether the stream is JSON: learn it by HEAD first."""
        return self.live == "sse" and self.json_mode is None

    def on_head(self, content_type: str) -> None:
        self.json_mode = is_json_type(content_type)

    def next_request(self) -> Request:
        return ops.read_request(self.ref, self.offset, live=self.live, cursor=self.cursor,
                                timeout=self.request_timeout)

    # -- long-poll ------------------------------------------------------------------------

    def on_response(self, response: Response, request: Request) -> ReadBatch:
        """A long-poll answer (200 data, 204 timeout or EOF); raises for an error status."""
        batch = ops.parse_read(response, request, self.offset, self.json_mode)
        assert batch is not None  # no If-None-Match is sent
        if response.status == 200 and response.header("content-type"):
            self.json_mode = batch.json_mode
        self._advance(batch)
        return batch

    # -- SSE ------------------------------------------------------------------------------

    def sse_events(self, response: Response, request: Request) -> StreamEvents:
        """Check an SSE answer's status and headers (its body is read by the caller) and give
        the parser for its bytes."""
        ops.expect(response, request, (200,))
        self.base64_mode = (response.header("stream-sse-data-encoding") or "").lower() == "base64"
        return StreamEvents(self.offset, json_mode=bool(self.json_mode),
                            base64_mode=self.base64_mode)

    def on_batch(self, batch: ReadBatch) -> None:
        """A complete SSE batch (data confirmed by its control event)."""
        self._advance(batch)

    # -- below the retention floor --------------------------------------------------------

    def recovers(self, error: BaseException) -> bool:
        """Whether ``error`` is a ``Retained`` this follower answers with a bootstrap."""
        return self.on_retained == "bootstrap" and isinstance(error, Retained)

    def on_bootstrap(self, bootstrap: Bootstrap) -> ReadBatch:
        """The batch to hand out for a bootstrap (``snapshot`` set: the reader replaces its
        state with it, then applies the records); the follower goes on from its
        ``next_offset``."""
        batch = bootstrap.as_batch()
        self.bootstraps += 1
        self.cursor = None
        if bootstrap.updates:
            self.json_mode = bootstrap.json_mode
        self._advance(batch)
        return batch

    def _advance(self, batch: ReadBatch) -> None:
        self.offset = batch.next_offset
        if batch.cursor is not None:
            self.cursor = batch.cursor
        if batch.closed:
            self.done = True

    # -- failures -------------------------------------------------------------------------

    @staticmethod
    def retryable(error: BaseException) -> bool:
        """A follower rides out anything transient (it only reads): no answer, 5xx, 429."""
        return isinstance(error, NotSent) or (isinstance(error, UrsulaError)
                                              and is_transient(error))
