"""The cluster's webhook signing key and the tokens of callbacks and claims.

The key is an Ed25519 key whose 32-byte seed is generated once per cluster: the first
``Subscription(op="key")`` command committed in the group of ``__ds/keys`` sets it (later
proposals get the same seed back), so every node signs with the same key and a new leader keeps
it. It is never rendered by any route: ``jwks.json`` publishes only the public key. ``kid`` is
``ds_`` plus the key's RFC 7638 JWK thumbprint (stable for the key's lifetime).

Tokens (``Authorization: Bearer``) are ``<base64url(json claims)>.<base64url(HMAC-SHA256)>``
with a key derived from the seed; claims: bucket, subscription id, generation, wake id, expiry
(ms). ``check_token`` verifies the MAC and expiry; the generation and wake id are then fenced
against the replicated state (``ursula.stream.subscriptions``).

May import: the standard library, cryptography and Twisted (Deferreds only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet import defer
from twisted.python.failure import Failure


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """A bearer token that is malformed, forged or expired (``code``: the protocol's)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class Signer:
    def __init__(self, seed: bytes):
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.x = b64url(public)
        thumb = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": self.x},
                           separators=(",", ":"), sort_keys=True).encode()
        self.kid = "ds_" + b64url(hashlib.sha256(thumb).digest())[:22]
        self._mac_key = hashlib.sha256(b"ursula callback tokens\0" + seed).digest()

    def jwk(self) -> dict:
        return {"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig", "alg": "EdDSA",
                "x": self.x}

    def signature_header(self, body: bytes, t: int) -> str:
        """``Webhook-Signature``: Ed25519 over ``<t>.<raw body>``."""
        sig = self._private.sign(str(t).encode() + b"." + body)
        return f"t={t},kid={self.kid},ed25519={b64url(sig)}"

    def make_token(self, bucket: str, sub_id: str, generation: int, wake_id: str,
                   expires_ms: int) -> str:
        claims = json.dumps({"b": bucket, "s": sub_id, "g": generation, "w": wake_id,
                             "e": expires_ms}, separators=(",", ":")).encode()
        mac = hmac.new(self._mac_key, claims, hashlib.sha256).digest()
        return b64url(claims) + "." + b64url(mac)

    def check_token(self, token: str, bucket: str, sub_id: str, now_ms: int) -> dict:
        """The token's claims, or ``TokenError`` (forged, malformed, another subscription's,
        expired)."""
        try:
            claims_text, mac_text = token.split(".")
            claims_raw, mac = unb64url(claims_text), unb64url(mac_text)
        except (ValueError, TypeError):
            raise TokenError("TOKEN_INVALID") from None
        expected = hmac.new(self._mac_key, claims_raw, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise TokenError("TOKEN_INVALID")
        claims = json.loads(claims_raw)
        if claims.get("b") != bucket or claims.get("s") != sub_id:
            raise TokenError("TOKEN_INVALID")
        if claims.get("e", 0) < now_ms:
            raise TokenError("TOKEN_EXPIRED")
        return claims


class KeyStore:
    """Fetches (creating once per cluster) the signing key through ``core.submit``; cached."""

    def __init__(self, core, command_factory, random_bytes=os.urandom):
        self.core = core
        self.command_factory = command_factory  # seed -> the Subscription(op="key") command
        self.random_bytes = random_bytes
        self.signer: Signer | None = None
        self._waiting: list[defer.Deferred] | None = None

    def get(self) -> defer.Deferred:
        if self.signer is not None:
            return defer.succeed(self.signer)
        d = defer.Deferred()
        if self._waiting is not None:
            self._waiting.append(d)
            return d
        self._waiting = [d]

        def got(outcome):
            seed = (outcome.payload or {}).get("seed")
            if outcome.error or not isinstance(seed, bytes) or len(seed) != 32:
                raise RuntimeError(f"no signing key ({outcome.error})")
            self.signer = Signer(seed)
            return self.signer

        def finish(result):
            waiting, self._waiting = self._waiting, None
            for w in waiting:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result)
        submitted = defer.maybeDeferred(self.core.submit,
                                        self.command_factory(self.random_bytes(32)))
        submitted.addCallback(got).addBoth(finish)
        return d
