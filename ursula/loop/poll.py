"""``lean_poll(reactor)``: the epoll reactor's poll step without a logging context per event.

Twisted's ``EPollReactor.doPoll`` runs each ready descriptor's ``doRead``/``doWrite`` inside
``log.callWithLogger``, which builds and pushes a context dict (the selectable's log prefix,
for legacy ``twisted.python.log`` messages) for every single event: measured with py-spy under
append load, that wrapper was about 7 % of the reactor thread. ursula logs through
``twisted.logger`` with its own fields and does not use that prefix, so the core processes
replace the reactor's ``doIteration`` with the same loop minus the wrapper. Errors are still
caught and logged per event (``_doReadOrWrite`` itself already disconnects a selectable whose
``doRead`` raised), so one broken connection never stops the loop.

Only an ``EPollReactor`` (the default on Linux) is changed; any other reactor is left as it is.

May import: Twisted and the standard library.
"""

from __future__ import annotations

import errno
import types

from twisted.logger import Logger

log = Logger()


def _do_poll(self, timeout):
    if timeout is None:
        timeout = -1
    try:
        events = self._poller.poll(timeout, len(self._selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        raise
    selectables = self._selectables
    handle = self._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        try:
            handle(selectable, fd, event)
        except BaseException:
            log.failure("unexpected error handling an I/O event of {selectable!r}",
                        selectable=selectable)


def lean_poll(reactor) -> bool:
    """Give ``reactor`` the lean poll step if it is an epoll reactor; returns whether it did."""
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return False
    if not isinstance(reactor, EPollReactor):
        return False
    reactor.doIteration = types.MethodType(_do_poll, reactor)
    return True
