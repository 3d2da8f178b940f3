"""When to try a request again, and how long to wait first.

The rule of the client: a request is retried when it is safe and the failure is transient.
Safe: reads, HEAD, PUT (creating is idempotent: the same configuration answers 200), and
appends with producer headers (the server deduplicates a repeated (id, epoch, seq)); any
request that never left the client (the connection was refused). Transient: no answer (a
broken connection, a timeout), 5xx, 429. A plain append, a DELETE or a POST to the
subscription routes is not retried once it may have reached the server: use a producer for
exactly-once appends.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ursula_client.core.errors import HTTPError, ServerError, TooManyRequests, TransportError
from ursula_client.core.http import Request


class NotSent(TransportError):
    """The request never reached the server (no connection): always safe to retry."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter. ``deadline``: give up after this many seconds since
    the first attempt (None: never); ``max_attempts`` likewise (None: no limit)."""

    initial_delay: float = 0.05
    max_delay: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int | None = None
    deadline: float | None = 30.0

    def delay(self, attempt: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 have failed). A
        server's ``Retry-After`` is honoured up to ``max_delay``."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        wait = base * (1 + spread)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return max(0.0, wait)

    def gives_up(self, attempt: int, elapsed: float) -> bool:
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return True
        return self.deadline is not None and elapsed >= self.deadline


#: the default for one-off requests; a producer and a follower use deadline=None
DEFAULT_POLICY = RetryPolicy()


def is_transient(error: BaseException) -> bool:
    """No answer, a 5xx or a 429: the same request may well succeed later."""
    return isinstance(error, (TransportError, ServerError, TooManyRequests))


def is_safe(request: Request) -> bool:
    return request.method in ("GET", "HEAD", "PUT", "OPTIONS") \
        or request.header("producer-id") is not None


def should_retry(request: Request, error: BaseException) -> bool:
    if isinstance(error, NotSent):
        return True
    return is_transient(error) and is_safe(request)


def retry_after(error: BaseException) -> float | None:
    if isinstance(error, ServerError):
        return error.retry_after
    if isinstance(error, HTTPError) and error.status == 429:
        from ursula_client.core.errors import parse_retry_after
        return parse_retry_after(error.headers.get("retry-after"))
    return None


def moves_endpoint(error: BaseException) -> bool:
    """A failure that says "try another node": no answer, or a 5xx."""
    return isinstance(error, (TransportError, ServerError))
