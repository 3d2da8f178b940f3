"""The SSRF guard for webhook URLs (PROTOCOL.md 6.2 and 12.8).

``check_webhook_url`` refuses (``ValueError`` with a one-line reason) URLs that are not
``http(s)``, carry credentials, or whose host is an address in a private (RFC 1918, RFC 4193),
link-local (incl. the cloud metadata address 169.254.169.254), shared (100.64/10), multicast,
reserved or unspecified range, or a name that is local by convention (``*.local``,
``*.internal``, ``metadata.*``). Loopback (127.0.0.0/8, ::1, ``localhost``) is allowed only with
``allow_loopback`` ([subscriptions] allow_loopback_webhooks, default true: the conformance
suite's receiver listens on loopback). Plain ``http`` is allowed for loopback targets and, for
others, only with ``allow_http`` ([subscriptions] allow_http_webhooks, default false).
``address_allowed`` applies the same rule to an address a name resolved to (the webhook sender
checks it before every POST).

May import: the standard library only.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def literal_address(host: str):
    """The ``ipaddress`` address ``host`` spells, or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def address_allowed(address, allow_loopback: bool) -> bool:
    ip = address if not isinstance(address, str) else literal_address(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return not (ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or ip in ipaddress.ip_network("100.64.0.0/10"))


def is_loopback_host(host: str) -> bool:
    ip = literal_address(host)
    if ip is not None:
        return ip.is_loopback
    return host in _LOCAL_NAMES or host.endswith(".localhost")


def check_webhook_url(url: str, allow_loopback: bool = True, allow_http: bool = False,
                      max_length: int = 2048) -> str:
    """The URL if it may receive webhooks, else ``ValueError(reason)``."""
    if not isinstance(url, str) or not url:
        raise ValueError("webhook.url must be a non-empty string")
    if len(url) > max_length:
        raise ValueError(f"webhook.url is longer than {max_length} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("webhook.url is not a valid URL") from None
    del port
    if parts.scheme not in ("http", "https"):
        raise ValueError("webhook.url must be http(s)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("webhook.url must not carry credentials")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise ValueError("webhook.url has no host")
    loopback = is_loopback_host(host)
    if loopback:
        if not allow_loopback:
            raise ValueError("loopback webhook URLs are not allowed on this server")
        return url
    ip = literal_address(host)
    if ip is not None and not address_allowed(ip, allow_loopback):
        raise ValueError("webhook.url targets a private, link-local or reserved address")
    if ip is None and (host.endswith(_LOCAL_SUFFIXES) or host.startswith("metadata.")
                       or "." not in host):
        raise ValueError("webhook.url targets a local network name")
    if parts.scheme != "https" and not allow_http:
        raise ValueError("webhook.url must use https (http only for localhost)")
    return url
