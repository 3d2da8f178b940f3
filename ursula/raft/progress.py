"""Leader-side bookkeeping of each follower: Progress, the in-flight window, the tracker.

What lives here:
- `Inflights`: the window of AppendEntries sent to one follower and not yet acknowledged
  (pipelining: at most `cap` messages in flight, identified by their last index).
- `Progress`: match/next indexes and the replication state of one follower:
  PROBE (one message at a time until we find where the logs match), REPLICATE (optimistic,
  pipelined), SNAPSHOT (an InstallSnapshot transfer is in progress, chunk by chunk).
- `ProgressTracker`: the voters and learners, every member's Progress, the votes of an
  election, and the quorum arithmetic over the voters only (commit index by majority match,
  vote tally, check-quorum activity); learners are replicated to and never counted.

May import: the standard library and ursula.raft.messages only.
"""

from __future__ import annotations

from collections import deque

from ursula.raft.messages import Snapshot

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"

VOTE_PENDING = "pending"
VOTE_WON = "won"
VOTE_LOST = "lost"


class Inflights:
    __slots__ = ("cap", "q")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        if len(self.q) >= self.cap:
            raise AssertionError("inflights overflow")
        self.q.append(last_index)

    def free_le(self, index: int) -> None:
        q = self.q
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self.q:
            self.q.popleft()

    def full(self) -> bool:
        return len(self.q) >= self.cap

    def count(self) -> int:
        return len(self.q)

    def reset(self) -> None:
        self.q.clear()


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "pending_snapshot",
        "recent_active",
        "inflights",
        "snap",
        "snap_offset",
        "snap_answered",
        "snap_low",
        "snap_sent",
        "commit_sent",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.inflights = Inflights(max_inflight)
        self.snap: Snapshot | None = None  # the image being sent, fixed for the transfer
        self.snap_offset = 0  # bytes the follower acknowledged
        self.snap_answered = False  # an answer moved the transfer on since the last heartbeat
        self.snap_low: int | None = None  # the follower said it is behind snap_offset
        self.snap_sent = 0  # the end of the furthest chunk sent
        self.commit_sent = -1  # the commit index the last AppendEntries to it carried

    def __repr__(self) -> str:
        return (
            f"Progress({self.state} match={self.match} next={self.next} "
            f"inflight={self.inflights.count()} active={self.recent_active})"
        )

    def _reset_state(self, state: str) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()
        self.snap = None
        self.snap_offset = 0
        self.snap_answered = False
        self.snap_low = None
        self.snap_sent = 0

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snap: Snapshot) -> None:
        self._reset_state(SNAPSHOT)
        self.pending_snapshot = snap.meta.index
        self.snap = snap

    def maybe_update(self, n: int) -> bool:
        """A success ack for index n.  Returns True if match moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of prev_index `rejected`.  Returns False if the rejection is stale."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        # never below match + 1: a stale or duplicated rejection must not send us back into
        # entries the follower already has (they may be compacted, forcing a needless snapshot)
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    def __init__(self, voters: tuple[int, ...], max_inflight: int,
                 learners: tuple[int, ...] = ()) -> None:
        self.voters: tuple[int, ...] = tuple(sorted(voters))
        self.learners: tuple[int, ...] = tuple(sorted(learners))
        self.max_inflight = max_inflight
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    @property
    def members(self) -> tuple[int, ...]:
        return self.voters + self.learners

    def set_members(self, voters, learners, last_index: int) -> None:
        """A membership change: keep the Progress of members that stay, start new ones probing
        from ``last_index + 1``, forget the ones that left."""
        self.voters = tuple(sorted(voters))
        self.learners = tuple(sorted(learners))
        old = self.progress
        self.progress = {m: old.get(m) or Progress(last_index + 1, self.max_inflight)
                         for m in self.members}
        self.votes = {v: g for v, g in self.votes.items() if v in self.voters}

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def reset_progress(self, self_id: int, last_index: int, self_match: int) -> None:
        self.progress = {m: Progress(last_index + 1, self.max_inflight) for m in self.members}
        if self_id in self.progress:
            pr = self.progress[self_id]
            pr.match = self_match
            pr.recent_active = True

    unsafe_learners_count = False  # BROKEN on purpose when set (tests only): see Config

    def committed(self) -> int:
        """The largest index that a majority of voters have in their logs."""
        counted = self.members if self.unsafe_learners_count else self.voters
        matches = sorted((self.progress[v].match for v in counted), reverse=True)
        return matches[self.quorum - 1]

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node: int, granted: bool) -> None:
        if node in self.voters and node not in self.votes:
            self.votes[node] = granted

    def tally(self) -> str:
        granted = sum(1 for g in self.votes.values() if g)
        rejected = len(self.votes) - granted
        if granted >= self.quorum:
            return VOTE_WON
        if rejected > len(self.voters) - self.quorum:
            return VOTE_LOST
        return VOTE_PENDING

    def quorum_active(self, self_id: int) -> bool:
        n = sum(1 for v in self.voters if v == self_id or self.progress[v].recent_active)
        return n >= self.quorum

    def reset_recent_active(self, self_id: int) -> None:
        for v, pr in self.progress.items():
            pr.recent_active = v == self_id

    def has_quorum(self, acks: set[int]) -> bool:
        return sum(1 for v in self.voters if v in acks) >= self.quorum
