"""The idempotent producer as a state machine without I/O.

Records go in with ``add``; ``poll(now)`` hands out the requests to send (``Send``); the
front end sends them and reports each outcome with ``on_answer`` or ``on_failure``;
``take_completions()`` gives back which records are acknowledged (or failed, and why);
``next_wakeup()`` says when ``poll`` has work again (linger time, retry back-off).

How it keeps exactly-once and order:

- Records are batched: a batch is one POST with ``Producer-Id``, ``Producer-Epoch`` and
  ``Producer-Seq``; its sequence number is fixed when it is sealed and never changes (except
  when a new epoch is claimed before anything of the old one may have been written).
- Up to ``max_in_flight`` batches are in flight at once. The server accepts only
  ``seq == last + 1``, so the stream holds batches in sequence order whatever order the
  requests arrive in; a batch that arrives early is answered 409 with ``Producer-Expected-Seq``
  naming a batch this producer still holds, and is sent again once every batch before it is
  acknowledged.
- A batch whose request got no answer (timeout, broken connection) or a 5xx is sent again
  with the same (epoch, seq), on the next node, until ``delivery_timeout``: if the first try
  was applied, the retry is answered 204 (duplicate) and nothing is stored twice.
- The first batch of an epoch goes alone; the pipeline opens once it is acknowledged. A first
  attempt answered "duplicate" means another writer used this (id, epoch, seq):
  ``ProducerConflict`` (or, with ``auto_claim``, the next epoch). A 403 means a newer epoch
  exists: ``ProducerFenced`` once anything of ours may be in the stream, otherwise (with
  ``auto_claim``) this producer takes the epoch after the server's and renumbers from 0.
- Any other error is fatal: the producer fails every record it holds with it (a later batch
  could never be stored without the failed one: the sequence would have a gap).

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import collections
import json
import random
from dataclasses import dataclass
from typing import Any

from ursula_client.core import ops
from ursula_client.core.errors import (
    DeliveryTimeout,
    ProducerClosed,
    ProducerConflict,
    ProducerFenced,
    SequenceGap,
    UrsulaError,
    error_for,
)
from ursula_client.core.http import Request, Response
from ursula_client.core.retry import NotSent, RetryPolicy, is_transient, retry_after
from ursula_client.core.types import AppendResult

MAX_EPOCH = 2 ** 53 - 1
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True)
class ProducerSettings:
    """``max_batch_bytes``: a batch is sent once it holds this much (a bigger record goes
    alone); ``linger``: seconds a batch waits for more records before it is sent;
    ``max_in_flight``: batches sent and not yet answered; ``delivery_timeout``: seconds a batch
    may be retried before the producer fails; ``request_timeout``: seconds per attempt."""

    max_batch_bytes: int = 1024 * 1024
    max_batch_records: int | None = None
    linger: float = 0.005
    max_in_flight: int = 5
    delivery_timeout: float | None = 120.0
    request_timeout: float = 10.0
    retry: RetryPolicy = RetryPolicy(initial_delay=0.05, max_delay=1.0, deadline=None)
    #: keep the last N sends and outcomes in ``ProducerCore.history`` (for debugging)
    history: int = 0


@dataclass
class _Batch:
    number: int  # creation order, stable across renumbering
    seq: int
    tokens: list[Any]
    parts: list[bytes]
    close: bool = False
    attempts: int = 0
    first_sent: float | None = None
    maybe_written: bool = False
    in_flight: bool = False
    not_before: float = 0.0
    held_for_gap: bool = False
    acks_at_send: int = 0  # how many acknowledgements had come when this attempt went

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)


@dataclass(frozen=True)
class Send:
    """A request to send now; report its outcome with the same object."""

    batch: int
    attempt: int
    request: Request


@dataclass
class _Stats:
    batches_sent: int = 0
    attempts: int = 0
    retries: int = 0
    duplicates: int = 0
    reorders: int = 0
    records_acked: int = 0
    claims: int = 0


class ProducerCore:
    def __init__(self, ref: ops.StreamRef, producer_id: str, content_type: str, *,
                 epoch: int = 0, auto_claim: bool = False, json_mode: bool | None = None,
                 settings: ProducerSettings | None = None, rng: random.Random | None = None):
        if not producer_id:
            raise ValueError("a producer id is a non-empty string")
        if not 0 <= epoch <= MAX_EPOCH:
            raise ValueError("an epoch is an int from 0 to 2**53-1")
        self.ref = ref
        self.producer_id = producer_id
        self.content_type = content_type
        self.json_mode = ops.is_json_type(content_type) if json_mode is None else json_mode
        self.epoch = epoch
        self.auto_claim = auto_claim
        self.settings = settings or ProducerSettings()
        self.rng = rng or random.Random()
        self.stats = _Stats()
        self.failed: UrsulaError | None = None
        self.closing = False  # no more records (close() called)
        self._open: list[tuple[Any, bytes]] = []
        self._open_bytes = 0
        self._open_since = 0.0
        self._flush = False
        self._batches: list[_Batch] = []  # sealed, not acknowledged, in seq order
        self._next_seq = 0
        self._numbers = 0
        self._confirmed = False  # a batch of this epoch has been acknowledged
        self._epoch_dirty = False  # something of this epoch is, or may be, in the stream
        self._claim_to: int | None = None
        self._completions: list[tuple[Any, Any]] = []
        self.last_result: AppendResult | None = None
        self._acks = 0
        self._in_flight = 0
        self._acked_at: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.history: collections.deque[tuple] | None = (
            collections.deque(maxlen=self.settings.history) if self.settings.history else None)

    # -- input ----------------------------------------------------------------------------

    def add(self, record: Any, token: Any, now: float) -> bool:
        """Queue one record (bytes for a byte stream; any JSON value for a JSON stream).
        Returns whether ``poll`` has something new to do (the record opened a batch, whose
        linger time starts now, or filled one); if not, the front end may skip it."""
        if self.failed is not None:
            raise ProducerClosed(f"the producer failed: {self.failed}") from self.failed
        if self.closing:
            raise ProducerClosed("the producer is closed")
        part = self.encode(record)
        first = not self._open
        if first:
            self._open_since = now
        self._open.append((token, part))
        self._open_bytes += len(part)
        return first or self._flush or self._full(self._open_bytes, len(self._open))

    def encode(self, record: Any) -> bytes:
        if self.json_mode:
            return _JSON(record).encode()
        if isinstance(record, str):
            return record.encode("utf-8")
        if not isinstance(record, (bytes, bytearray, memoryview)):
            raise TypeError("a byte stream's records are bytes or str (JSON streams take any "
                            "JSON value)")
        if not record:
            raise ValueError("an empty record cannot be appended")
        return bytes(record)

    def flush(self) -> None:
        """Send what is buffered without waiting for the linger time."""
        self._flush = True

    def close(self, close_stream: bool = False, token: Any = None) -> None:
        """No more records. With ``close_stream`` the stream is closed after the last batch,
        by a close-only request with producer headers (its completion carries ``token``)."""
        if self.closing:
            return
        self.closing = True
        self._flush = True
        if close_stream and self.failed is None:
            self._seal(force=True)
            self._batches.append(_Batch(self._new_number(), self._take_seq(), [token], [],
                                        close=True))

    def abort(self, error: UrsulaError) -> None:
        """Fail everything held (the front end gave up)."""
        self._fail(error)

    # -- output ---------------------------------------------------------------------------

    def poll(self, now: float) -> list[Send]:
        if self.failed is not None:
            return []
        self._check_deadlines(now)
        if self.failed is not None:
            return []
        if self._claim_to is not None:
            if self._in_flight:
                return []
            self._finish_claim()
            if self.failed is not None:
                return []
        self._seal_ready(now)
        sends = []
        limit = self.settings.max_in_flight if self._confirmed else 1
        in_flight = self._in_flight
        for index, batch in enumerate(self._batches):
            if in_flight >= limit:
                break
            if batch.in_flight or batch.not_before > now:
                continue
            if batch.held_for_gap and index > 0:
                continue  # sent again once every batch before it is acknowledged
            if not self._confirmed and index > 0:
                break
            batch.held_for_gap = False
            batch.in_flight = True
            self._in_flight += 1
            batch.attempts += 1
            batch.acks_at_send = self._acks
            if batch.first_sent is None:
                batch.first_sent = now
                self.stats.batches_sent += 1
            else:
                self.stats.retries += 1
            self.stats.attempts += 1
            in_flight += 1
            sends.append(Send(batch.number, batch.attempts, self._request(batch)))
            if self.history is not None:
                self.history.append((now, "send", self.epoch, batch.seq, batch.attempts))
        return sends

    def take_completions(self) -> list[tuple[Any, Any]]:
        """``(token, AppendResult or exception)`` for each record finished since last time."""
        out, self._completions = self._completions, []
        return out

    def next_wakeup(self) -> float | None:
        """The earliest time at which ``poll`` may have something new to do by itself (a
        linger time or a back-off running out); None when only an answer can move it on."""
        if self.failed is not None or self._claim_to is not None:
            return None
        limit = self.settings.max_in_flight if self._confirmed else 1
        times = []
        deadline = self.settings.delivery_timeout
        # batches are sent in order: past the first one never sent, none has a time
        for index, batch in enumerate(self._batches):
            if batch.first_sent is None:
                if self._in_flight < limit and batch.not_before > 0:
                    times.append(batch.not_before)
                break
            if batch.in_flight:
                continue
            if deadline is not None:
                times.append(batch.first_sent + deadline)
            if self._in_flight < limit and not (batch.held_for_gap and index > 0) \
                    and (self._confirmed or index == 0):
                times.append(batch.not_before)
        if self._in_flight < limit and self._open \
                and self._in_flight == len(self._batches):
            times.append(self._open_since + (0.0 if self._flush or self.closing
                                             else self.settings.linger))
        return min(times) if times else None

    @property
    def idle(self) -> bool:
        """Nothing buffered, queued or in flight."""
        return not self._open and not self._batches

    @property
    def pending_records(self) -> int:
        return len(self._open) + sum(len(b.tokens) for b in self._batches if not b.close)

    @property
    def buffered_bytes(self) -> int:
        return self._open_bytes + sum(b.size for b in self._batches)

    # -- outcomes -------------------------------------------------------------------------

    def on_answer(self, send: Send, response: Response, now: float) -> None:
        batch = self._find(send)
        if batch is None:
            return
        batch.in_flight = False
        self._in_flight -= 1
        status = response.status
        if self.history is not None:
            self.history.append((now, "answer", self.epoch, batch.seq, batch.attempts, status,
                                 {k: v for k, v in response.headers.items()
                                  if k.startswith(("producer-", "stream-"))}))
        if status in (200, 204):
            self._acked(batch, response, now)
            return
        error = error_for(status, response.headers, response.body, "POST",
                          send.request.target)
        if status == 403 and isinstance(error, ProducerFenced):
            self._fenced(error)
        elif status == 409 and isinstance(error, SequenceGap):
            self._gap(batch, error, now)
        elif is_transient(error):
            batch.maybe_written = True
            self._epoch_dirty = True
            self._retry(batch, now, retry_after(error))
        else:
            self._fail(error)

    def on_failure(self, send: Send, error: BaseException, now: float) -> None:
        """No answer (``TransportError``); anything else is a bug in the front end and fails
        the producer."""
        batch = self._find(send)
        if batch is None:
            return
        batch.in_flight = False
        self._in_flight -= 1
        if self.history is not None:
            self.history.append((now, "failure", self.epoch, batch.seq, batch.attempts,
                                 type(error).__name__))
        if not isinstance(error, NotSent):
            batch.maybe_written = True
            self._epoch_dirty = True
        if is_transient(error):
            self._retry(batch, now, None)
        else:
            self._fail(error if isinstance(error, UrsulaError)
                       else UrsulaError(f"producer request failed: {error!r}"))

    # -- internals ------------------------------------------------------------------------

    def _request(self, batch: _Batch) -> Request:
        body = b""
        if batch.parts:
            body = (b"[" + b",".join(batch.parts) + b"]") if self.json_mode \
                else b"".join(batch.parts)
        request = ops.append_request(self.ref, body, self.content_type, close=batch.close,
                                     producer=(self.producer_id, self.epoch, batch.seq))
        return Request(request.method, request.target, request.headers, request.body,
                       timeout=self.settings.request_timeout)

    def _find(self, send: Send) -> _Batch | None:
        for batch in self._batches:
            if batch.number == send.batch and batch.attempts == send.attempt:
                return batch
        return None

    def _new_number(self) -> int:
        self._numbers += 1
        return self._numbers

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _full(self, size: int, count: int) -> bool:
        max_records = self.settings.max_batch_records
        return size >= self.settings.max_batch_bytes \
            or (max_records is not None and count >= max_records)

    def _seal(self, force: bool = False) -> None:
        """The open records as batches of up to max_batch_bytes (a bigger record alone); the
        last, not full, stays open unless ``force``. One pass over the open records."""
        if not self._open or (not force and not self._full(self._open_bytes, len(self._open))):
            return
        limit = self.settings.max_batch_bytes
        max_records = self.settings.max_batch_records
        tokens: list[Any] = []
        parts: list[bytes] = []
        size = 0
        for token, part in self._open:
            if parts and (size + len(part) > limit
                          or (max_records is not None and len(parts) >= max_records)):
                self._batches.append(_Batch(self._new_number(), self._take_seq(), tokens, parts))
                tokens, parts, size = [], [], 0
            tokens.append(token)
            parts.append(part)
            size += len(part)
        if parts and (force or self._full(size, len(parts))):
            self._batches.append(_Batch(self._new_number(), self._take_seq(), tokens, parts))
            tokens, parts, size = [], [], 0
        self._open = list(zip(tokens, parts, strict=True))
        self._open_bytes = size

    def _seal_ready(self, now: float) -> None:
        if not self._open:
            self._flush = False
            return
        self._seal()  # full batches always
        if not self._open:
            return
        limit = self.settings.max_in_flight if self._confirmed else 1
        free = self._in_flight == len(self._batches) < limit
        lingered = now >= self._open_since + self.settings.linger
        if self._flush or self.closing or (free and lingered):
            self._seal(force=True)
            self._flush = False

    def _acked(self, batch: _Batch, response: Response, now: float) -> None:
        first_try_duplicate = (response.status == 204 and not batch.close
                               and batch.attempts == 1 and not batch.maybe_written)
        if first_try_duplicate:
            self.stats.duplicates += 1
            if self.auto_claim and batch.seq == 0 and not self._epoch_dirty:
                self._start_claim(self.epoch + 1)
                return
            self._fail(ProducerConflict(
                f"producer {self.producer_id!r} epoch {self.epoch} seq {batch.seq} was already "
                f"written by another writer: start with a higher epoch (or auto_claim=True)"))
            return
        if response.status == 204 and not batch.close:
            self.stats.duplicates += 1
        self._epoch_dirty = True
        self._confirmed = True
        epoch = response.header("producer-epoch")
        result = AppendResult(
            next_offset=response.header("stream-next-offset") if response.status == 200
            or batch.close else None,
            closed=response.flag("stream-closed"),
            producer_epoch=int(epoch) if epoch and epoch.isdigit() else self.epoch,
            producer_seq=batch.seq,
            duplicate=response.status == 204 and not batch.close)
        self.last_result = result
        self._batches.remove(batch)
        self._acks += 1
        self._acked_at[batch.seq] = self._acks
        if len(self._acked_at) > 4096:
            self._acked_at.popitem(last=False)
        if not batch.close:
            self.stats.records_acked += len(batch.tokens)
        for token in batch.tokens:
            self._completions.append((token, result))

    def _retry(self, batch: _Batch, now: float, server_wait: float | None) -> None:
        batch.not_before = now + self.settings.retry.delay(batch.attempts, server_wait, self.rng)

    def _gap(self, batch: _Batch, error: SequenceGap, now: float) -> None:
        """409 "expected seq E": the batch overtook E. Benign when E is still ours to send,
        or when E's acknowledgement came after this attempt left (the server judged this
        batch before E, and the answers crossed); then the batch goes again once every batch
        before it is acknowledged. Anything else is a real gap."""
        expected = error.expected_seq
        held = {b.seq for b in self._batches}
        crossed = expected is not None and \
            self._acked_at.get(expected, -1) > batch.acks_at_send
        if expected is not None and expected < batch.seq and (expected in held or crossed):
            self.stats.reorders += 1
            batch.held_for_gap = True  # an earlier batch is still on its way
            return
        held_text = ", ".join(str(s) for s in sorted(held)[:8]) + (" ..." if len(held) > 8 else "")
        self._fail(SequenceGap(
            error.status, f"{error.reason}: the server expects seq {expected} from producer "
            f"{self.producer_id!r} epoch {self.epoch}, got {batch.seq}; this producer still "
            f"holds seqs [{held_text}] and had every other seq up to {self._next_seq - 1} "
            f"acknowledged", error.headers, error.method, error.path))

    def _fenced(self, error: ProducerFenced) -> None:
        current = error.current_epoch
        if self.auto_claim and current is not None and not self._epoch_dirty \
                and current < MAX_EPOCH:
            self._start_claim(current + 1)
        else:
            self._fail(error)

    def _start_claim(self, epoch: int) -> None:
        self._claim_to = max(self._claim_to or 0, epoch)

    def _finish_claim(self) -> None:
        epoch, self._claim_to = self._claim_to, None
        if self._epoch_dirty or epoch is None:
            self._fail(ProducerFenced(403, f"producer {self.producer_id!r} was fenced by a newer "
                                      f"epoch while its records were in flight",
                                      {"producer-epoch": str((epoch or 1) - 1)}))
            return
        self.stats.claims += 1
        self.epoch = epoch
        self._next_seq = 0
        self._acked_at.clear()
        for batch in self._batches:
            batch.seq = self._take_seq()
            batch.attempts = 0
            batch.first_sent = None
            batch.not_before = 0.0
            batch.held_for_gap = False

    def _check_deadlines(self, now: float) -> None:
        deadline = self.settings.delivery_timeout
        if deadline is None:
            return
        for batch in self._batches:
            if batch.first_sent is None:
                break  # the rest were never sent either
            if not batch.in_flight and now - batch.first_sent >= deadline:
                self._fail(DeliveryTimeout(
                    f"batch seq {batch.seq} (epoch {self.epoch}) not acknowledged after "
                    f"{batch.attempts} attempts in {deadline} s; it may or may not be stored"))
                return

    def _fail(self, error: UrsulaError) -> None:
        if self.failed is None:
            self.failed = error
        for batch in self._batches:
            for token in batch.tokens:
                self._completions.append((token, error))
        for token, _ in self._open:
            self._completions.append((token, error))
        self._batches, self._open, self._open_bytes = [], [], 0
        self._in_flight = 0
