"""ReadIndex bookkeeping on the leader: linearizable reads without writing to the log.

What lives here: `ReadState` (what the node hands the application: "once you have applied
`index`, serve the read tagged `ctx`"), and `ReadOnly`, the leader's queue of read requests
waiting for a heartbeat round to confirm that it is still the leader.

Protocol (Raft thesis §6.4): the leader records its commit index when the read arrives (only
once it has committed an entry of its own term), broadcasts a heartbeat carrying the request's
`ctx`, and releases the request, and every request queued before it, when a majority
(including itself) has answered that heartbeat.  No lease, so no clock assumption.

May import: the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReadState:
    index: int
    ctx: bytes


@dataclass(slots=True)
class ReadIndexStatus:
    ctx: bytes
    index: int
    requester: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, ctx: bytes, requester: int) -> None:
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(ctx, index, requester)
        self.queue.append(ctx)

    def recv_ack(self, node: int, ctx: bytes) -> set[int] | None:
        st = self.pending.get(ctx)
        if st is None:
            return None
        st.acks.add(node)
        return st.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release `ctx` and every request queued before it."""
        if ctx not in self.pending:
            return []
        out: list[ReadIndexStatus] = []
        while self.queue:
            c = self.queue.pop(0)
            out.append(self.pending.pop(c))
            if c == ctx:
                break
        return out

    def last_pending_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def reset(self) -> None:
        self.pending.clear()
        self.queue.clear()
