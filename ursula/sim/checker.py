"""Safety and client-visible invariants, checked as the simulation runs.

What lives here: `Checker`, fed by the replicas and clients at every step, and `Violation`,
raised at the first broken rule (the run stops there and reports it):

- election safety: at most one leader per term;
- log matching: two logs holding an entry with the same index and term hold the same data
  and agree on the term of the previous entry (checked for every persisted entry, which by
  induction gives the whole-prefix property);
- leader completeness: a node that becomes leader of term T holds every entry committed in a
  term before T (an entry counts as committed before T if it was first applied while no
  leader of term T or later had been seen: a node frozen as a candidate may win an old term
  long after later terms committed more, and that is allowed);
- state-machine safety: no two replicas apply different entries (or get different outcomes)
  at one index;
- acknowledged appends: an acknowledged append was applied exactly once, at the offsets it
  was acknowledged with, and is readable there in every replica that applied that far;
  a linearizable read sees every append acknowledged before the read was sent;
- conditional appends (If-Match), at apply (``on_applied_appends``, each log index once, in
  log order): a stream's appends are contiguous, a conditional one succeeds only when its
  expected offset is the tail at apply, and a 412 carries that tail; and as the client sees
  them (``on_conditional``): a success started at the offset it expected, no two successes
  expected the same offset of a stream, and a 412 carries a tail ahead of the expectation and
  of every append acknowledged before the attempt was made.

May import: the standard library only.
"""

from __future__ import annotations

import hashlib


class Violation(Exception):
    pass


def _h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=12).digest()


class Checker:
    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        # (leader, term) -> the highest commit index seen while it led that term
        self.leader_commits: dict[tuple[int, int], int] = {}
        self.entry_at: dict[tuple[int, int], tuple[bytes, int | None]] = {}
        # index -> (term, data hash, outcome summary) of what was applied there
        self.applied: dict[int, tuple[int, bytes, tuple]] = {}
        self.max_applied = 0
        self.max_term = 0  # the highest term any leader has had
        # index -> the highest leader term when it was first applied (it was committed in a
        # term no higher than that)
        self.commit_bound: dict[int, int] = {}
        # (producer, seq) -> (stream, start, next, index) of the one real (non-duplicate) write
        self.written: dict[tuple[str, int], tuple[str, int, int, int]] = {}
        # stream -> list of (body, start, next, ack time)
        self.acked: dict[str, list[tuple[bytes, int, int, int]]] = {}
        self.acked_keys: set[tuple[str, int]] = set()
        # stream -> the highest end offset of an acknowledged append
        self.acked_tail: dict[str, int] = {}
        # conditional appends: (stream, expected offset) -> the (writer, attempt) that won it
        self.cas_won: dict[tuple[str, int], tuple[str, int]] = {}
        self.cas_refused = 0
        # the stream tails as the applied log makes them (each index judged once, in order)
        self.model_tails: dict[str, int] = {}
        self.model_index = 0
        self.model_resets = 0
        self.model_requests: set[str] = set()
        self.checks = 0

    def fail(self, what: str) -> None:
        raise Violation(what)

    # -- Raft ---------------------------------------------------------------------------------
    def on_leader(self, node_id: int, term: int) -> None:
        self.checks += 1
        if term > self.max_term:
            self.max_term = term
        other = self.leader_of_term.setdefault(term, node_id)
        if other != node_id:
            self.fail(f"election safety: nodes {other} and {node_id} both lead term {term}")

    def on_leader_commit(self, node_id: int, term: int, commit: int, commit_term) -> None:
        """The commitment rule (Raft Figure 2, section 5.4.2): a leader only ever moves its
        commit index to an entry of its own term (earlier entries are committed with it, never
        by counting their replicas)."""
        self.checks += 1
        key = (node_id, term)
        seen = self.leader_commits.setdefault(key, commit)
        if commit > seen:
            self.leader_commits[key] = commit
            if commit_term != term:
                self.fail(f"commitment rule: leader {node_id} of term {term} advanced its commit "
                          f"index to {commit}, an entry of term {commit_term} (counted replicas "
                          f"of a previous term's entry)")

    def on_new_leader(self, node_id: int, term: int, log) -> None:
        """Leader completeness, checked when `node_id` has just become leader of `term`."""
        self.checks += 1
        lo = log.first_index() - 1
        last = log.last_index()
        bound = self.commit_bound
        for i in range(max(lo, 1), self.max_applied + 1):
            rec = self.applied.get(i)
            if rec is None or bound[i] >= term:
                continue
            if i > last:
                self.fail(
                    f"leader completeness: leader {node_id} of term {term} ends at {last}, "
                    f"index {i} was committed before term {term}"
                )
            if log.term(i) != rec[0]:
                self.fail(
                    f"leader completeness: leader {node_id} of term {term} has term "
                    f"{log.term(i)} at committed index {i} (term {rec[0]})"
                )

    def on_persist(self, node_id: int, entries, log, prev_term=None) -> None:
        """Log matching, for entries a node has just made durable. ``prev_term``: the term
        before the first entry when the write was made (default: in ``log`` now)."""
        self.checks += 1
        emap = self.entry_at
        if prev_term is None:
            prev_term = log.term(entries[0].index - 1)
        for e in entries:
            key = (e.index, e.term)
            mine = (_h(e.data), prev_term)
            seen = emap.get(key)
            if seen is None:
                emap[key] = mine
            elif seen[0] != mine[0]:
                self.fail(f"log matching: node {node_id} has different data at {key}")
            elif seen[1] is not None and prev_term is not None and seen[1] != prev_term:
                self.fail(
                    f"log matching: node {node_id} has term {prev_term} before {key}, "
                    f"another log has {seen[1]}"
                )
            prev_term = e.term

    def on_apply(self, node_id: int, index: int, term: int, data: bytes, summary: tuple) -> None:
        """State-machine safety: every replica applies the same thing at `index`."""
        self.checks += 1
        rec = (term, _h(data), summary)
        seen = self.applied.setdefault(index, rec)
        if seen is rec:
            self.commit_bound[index] = self.max_term
        if seen != rec:
            what = "entry" if seen[:2] != rec[:2] else "outcome"
            self.fail(
                f"state-machine safety: node {node_id} applied a different {what} at index "
                f"{index} (term {term} vs {seen[0]}; {summary} vs {seen[2]})"
            )
        if index > self.max_applied:
            self.max_applied = index

    # -- the stream layer ---------------------------------------------------------------------
    def on_write(self, producer: str, seq: int, stream: str, start: int, nxt: int, index: int):
        """A non-duplicate successful append of (producer, seq) applied at log `index`."""
        key = (producer, seq)
        rec = (stream, start, nxt, index)
        seen = self.written.setdefault(key, rec)
        # a request id replayed by the machine's dedup reports the first write's offsets
        if seen[:3] != rec[:3]:
            self.fail(
                f"exactly once: append {key} written twice: at index {seen[3]} offsets "
                f"{seen[1]}..{seen[2]} and at index {index} offsets {start}..{nxt}"
            )

    def on_ack(
        self, producer: str, seq: int, stream: str, body: bytes, start: int, nxt: int, now: int
    ) -> None:
        self.checks += 1
        key = (producer, seq)
        w = self.written.get(key)
        if w is None or (w[0], w[1], w[2]) != (stream, start, nxt):
            self.fail(f"ack: {key} acknowledged at {stream}@{start}..{nxt} but written as {w}")
        if nxt - start != len(body):
            self.fail(f"ack: {key} acknowledged with {nxt - start} bytes, body has {len(body)}")
        if key in self.acked_keys:
            return  # a duplicated reply
        self.acked_keys.add(key)
        self.acked.setdefault(stream, []).append((body, start, nxt, now))
        if nxt > self.acked_tail.get(stream, 0):
            self.acked_tail[stream] = nxt

    # -- conditional appends (If-Match) ---------------------------------------------------------
    def on_applied_appends(self, index: int, effects) -> None:
        """The appends of log entry ``index`` as the state machine judged them: ``(request
        id, stream, kind, if_match, error, duplicate, start, next)`` with kind ``create``,
        ``append`` or ``batch``. Each index is judged once, at its first application (every
        replica applies the same entries: state-machine safety), so the model tails follow
        the log. A request id applied before is answered with its first outcome (the
        machine's request memory) and changes nothing."""
        if index <= self.model_index:
            return
        self.checks += 1
        if index != self.model_index + 1:  # never seen: first applications have no gaps
            self.model_tails.clear()
            self.model_resets += 1
        self.model_index = index
        tails = self.model_tails
        for rid, stream, kind, if_match, error, duplicate, start, nxt in effects:
            if rid is not None:
                if rid in self.model_requests:
                    continue
                self.model_requests.add(rid)
            if kind == "create":  # duplicate: it existed already
                if error is None and not duplicate:
                    tails[stream] = nxt
                continue
            tail = tails.get(stream)
            if tail is None:
                continue  # not created in this run (a 404)
            if if_match is not None:
                if error is None and if_match != tail:
                    self.fail(f"If-Match at apply: a conditional append to {stream} expecting "
                              f"{if_match} succeeded at index {index}, the tail was {tail}")
                if error == "precondition_failed" and (if_match == tail or nxt != tail):
                    self.fail(f"If-Match at apply: a 412 on {stream} at index {index} expected "
                              f"{if_match} and answered tail {nxt}; the tail was {tail}")
            if error is None and not duplicate:
                if kind == "append" and start != tail:
                    self.fail(f"appends at apply: an append to {stream} at index {index} "
                              f"started at {start}, the tail was {tail}")
                tails[stream] = nxt

    def on_conditional(self, writer: str, attempt: int, stream: str, expected: int, floor: int,
                       error: str | None, start: int, nxt: int) -> None:
        """What a writer was answered to a conditional append that expected the tail
        ``expected``; ``floor`` is the highest end of an append acknowledged before the
        attempt was made."""
        self.checks += 1
        what = f"If-Match {writer}/{attempt} on {stream} expecting {expected}"
        if error is None:
            if start != expected:
                self.fail(f"{what}: succeeded at offset {start}")
            if expected < floor:
                self.fail(f"{what}: succeeded although appends up to {floor} were acknowledged "
                          f"before it was sent")
            other = self.cas_won.setdefault((stream, expected), (writer, attempt))
            if other != (writer, attempt):
                self.fail(f"{what}: succeeded, and so did {other[0]}/{other[1]} expecting the "
                          f"same offset")
            return
        if error != "precondition_failed":
            self.fail(f"{what}: unexpected error {error}")
        self.cas_refused += 1
        if nxt <= expected:
            self.fail(f"{what}: 412 with tail {nxt}, not ahead of the expectation (tails only "
                      f"grow, and the writer saw {expected})")
        if nxt < floor:
            self.fail(f"{what}: 412 with tail {nxt}, behind the {floor} acknowledged before the "
                      f"attempt (a stale view)")

    def check_stream_data(self, where: str, stream: str, data: bytes, upto: int | None = None):
        """Every acknowledged append (of the first `upto`, default all) that `data` reaches is
        present at its offsets, exactly once."""
        self.checks += 1
        acks = self.acked.get(stream, [])
        if upto is not None:
            acks = acks[:upto]
        for body, start, nxt, _ in acks:
            if len(data) < nxt:
                if upto is not None:
                    self.fail(f"{where}: read of {stream} ends at {len(data)}, acked up to {nxt}")
                continue
            if data[start:nxt] != body:
                self.fail(
                    f"{where}: {stream}@{start}..{nxt} holds {data[start:nxt]!r}, "
                    f"acknowledged {body!r}"
                )
            if data.count(body) != 1:
                self.fail(f"{where}: {body!r} appears {data.count(body)} times in {stream}")
