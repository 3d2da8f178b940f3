"""Finding the streams a glob pattern matches: page through ``ICore.list_streams`` from the
pattern's literal prefix (``events/`` for ``events/*``) and stop past it. Used at creation (the
protocol's backfill: existing matches are linked at their tails) and by the leader's
reconciliation.

May import: Twisted (Deferreds only) and ``ursula.stream``.
"""

from __future__ import annotations

from ursula.stream.machine import StreamError
from ursula.stream.subscriptions import glob_match, literal_prefix


def list_matching(core, bucket: str, pattern: str, page: int, cap: int):
    """A Deferred of ``[[name, uid, tail]]`` for the bucket's streams matching ``pattern`` (at
    most ``cap``); a bucket that does not exist matches nothing."""
    prefix = literal_prefix(pattern)
    # list_streams answers names > after: start just below the prefix
    after = prefix[:-1] + chr(ord(prefix[-1]) - 1) + "\U0010ffff" if prefix else ""
    found: list = []

    def got(items):
        for name, info in items:
            if not name.startswith(prefix):
                return found
            if glob_match(pattern, name):
                found.append([name, info.uid, info.tail])
        if len(items) < page or len(found) >= cap:
            return found
        return core.list_streams(bucket, items[-1][0], page).addCallback(got)

    def no_bucket(failure):
        failure.trap(StreamError)
        return found
    return core.list_streams(bucket, after, page).addCallback(got).addErrback(no_bucket)
