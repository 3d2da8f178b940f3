"""``WebhookSender`` (``IWebhookSender``): one webhook POST with a deadline and a bounded
answer, over treq (redirects are not followed: a redirect could lead past the SSRF guard).

``deliver(url, body, headers)`` fires with ``(status, answer_bytes)``, or fails (connection
refused, DNS, TLS, the deadline of ``timeout_s``, an answer over ``max_answer_bytes``, a host
name that now resolves to an address the SSRF guard refuses: checked before every POST, so a
name that pointed elsewhere at creation cannot reach a private address later, short of a
rebinding between this lookup and treq's own). Retrying
is the caller's job (``ursula.core.subscriptions``: back-off replicated with the wake). Tests use
a fake ``post`` (any callable returning a Deferred of a treq-like response) on a ``task.Clock``.

May import: Twisted, treq, zope.interface, ``ursula.subscriptions`` and ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ursula.subscriptions.urls import address_allowed, is_loopback_host, literal_address


class IWebhookSender(Interface):
    def deliver(url: str, body: bytes, headers: dict):
        """POST ``body``; a Deferred of ``(status, answer bytes)``."""


class AnswerTooLarge(Exception):
    pass


class AddressRefused(Exception):
    """The webhook host resolves to an address the SSRF guard refuses."""


class _Collect(protocol.Protocol):
    def __init__(self, limit: int, done: defer.Deferred):
        self.limit = limit
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if not self.done.called:
                self.done.errback(AnswerTooLarge(f"answer over {self.limit} bytes"))
            self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason=None) -> None:
        if not self.done.called:
            self.done.callback(b"".join(self.parts))


def _treq_post(reactor):
    import treq
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    agent = Agent(reactor, pool=pool)

    def post(url: str, body: bytes, headers: dict):
        return treq.post(url, data=body, headers=headers, agent=agent, allow_redirects=False)
    return post


@implementer(IWebhookSender)
class WebhookSender:
    def __init__(self, reactor, timeout_s: float = 10.0, max_answer_bytes: int = 65536,
                 post=None, resolve=None, allow_loopback: bool = True):
        self.reactor = reactor
        self.resolve = resolve if resolve is not None else getattr(reactor, "resolve", None)
        self.allow_loopback = allow_loopback
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        self._post = post
        self.in_flight = 0

    def deliver(self, url: str, body: bytes, headers: dict) -> defer.Deferred:
        if self._post is None:
            self._post = _treq_post(self.reactor)
        self.in_flight += 1
        result = defer.Deferred()
        request = self._checked(url).addCallback(lambda _: self._post(url, body, headers))
        timer = self.reactor.callLater(self.timeout_s, self._time_out, request, result)

        def answered(response):
            done = defer.Deferred()
            response.deliverBody(_Collect(self.max_answer_bytes, done))
            return done.addCallback(lambda data: (response.code, data))

        def finish(outcome):
            self.in_flight -= 1
            if timer.active():
                timer.cancel()
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
        request.addCallback(answered).addBoth(finish)
        return result

    def _checked(self, url: str) -> defer.Deferred:
        """Fires when the URL's host may be called now (its name resolved and checked)."""
        from urllib.parse import urlsplit
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        if literal_address(host) is not None or is_loopback_host(host):
            if is_loopback_host(host) and not self.allow_loopback:
                return defer.fail(AddressRefused(f"{host} is loopback"))
            return defer.succeed(None)
        if self.resolve is None:
            return defer.succeed(None)

        def check(address):
            if not address_allowed(address, self.allow_loopback):
                raise AddressRefused(f"{host} resolves to {address}, a refused address")
        return defer.maybeDeferred(self.resolve, host).addCallback(check)

    def _time_out(self, request: defer.Deferred, result: defer.Deferred) -> None:
        if not result.called:
            result.errback(defer.TimeoutError(f"no answer in {self.timeout_s} s"))
        request.cancel()
