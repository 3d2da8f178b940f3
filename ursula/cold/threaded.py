"""``ThreadedStore``: the Twisted face of a cold store whose I/O blocks (files, boto3): each
call runs the subclass's ``_put`` / ``_get`` / ``_delete`` / ``_list`` in the reactor's thread pool (or the
pool given) and answers with a Deferred.

May import: Twisted.
"""

from __future__ import annotations

from twisted.internet.threads import deferToThreadPool


class ThreadedStore:
    reactor = None
    pool = None

    def _run(self, fn, *args):
        pool = self.pool or self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, fn, *args)

    def put(self, key, data):
        return self._run(self._put, key, bytes(data))

    def get(self, key, start=0, end=None):
        return self._run(self._get, key, start, end)

    def delete(self, key):
        return self._run(self._delete, key)

    def list(self, prefix):
        return self._run(self._list, prefix)
