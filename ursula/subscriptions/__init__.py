"""Helpers of the subscription APIs that are not replicated state: the webhook signing key
(Ed25519, published as a JWK set) and callback / claim tokens (``signing``), and the SSRF
guard for webhook URLs (``urls``).

The replicated state lives in ``ursula.stream.subscriptions``; the runtime that sends webhooks
and writes wake events in ``ursula.core.subscriptions`` and ``ursula.core.webhooks``; the
routes in ``ursula.http.subscriptions``.

May import: the standard library, cryptography, Twisted (Deferreds only) and ``ursula.stream``.
"""
