"""The SSRF guard of webhook URLs (``ursula.subscriptions.urls``)."""

from __future__ import annotations

import pytest

from ursula.subscriptions.urls import address_allowed, check_webhook_url


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/x", "https://93.184.216.34/h", "http://127.0.0.1:8080/h",
    "http://localhost/h", "http://[::1]:9/h", "https://[2606:4700::1111]/h",
])
def test_accepted(url):
    assert check_webhook_url(url) == url


@pytest.mark.parametrize("url,why", [
    ("http://10.0.0.1/hook", "private"), ("https://192.168.1.1/", "private"),
    ("http://93.184.216.34/", "https"),
    ("https://172.16.5.4/", "private"), ("http://169.254.169.254/latest", "private"),
    ("https://169.254.169.254/latest", "private"), ("https://[fd00::1]/", "private"),
    ("https://[fe80::1]/", "private"), ("https://100.64.1.1/", "private"),
    ("https://0.0.0.0/", "private"), ("https://224.0.0.1/", "private"),
    ("https://[::ffff:10.0.0.1]/", "private"), ("http://hooks.example.com/", "https"),
    ("ftp://example.com/", "http(s)"), ("https://user:pw@example.com/", "credentials"),
    ("https://metadata.google.internal/", "local"), ("https://printer.local/", "local"),
    ("https://intranet/", "local"), ("https:///nohost", "host"), ("", "non-empty"),
    ("https://exa mple.com:99999/", "valid"),
])
def test_refused(url, why):
    with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
        check_webhook_url(url)


def test_loopback_and_http_switches():
    with pytest.raises(ValueError, match="loopback"):
        check_webhook_url("http://127.0.0.1/h", allow_loopback=False)
    assert check_webhook_url("http://hooks.example.com/", allow_http=True)
    assert not address_allowed("127.0.0.1", allow_loopback=False)
    assert address_allowed("::1", allow_loopback=True)
    assert not address_allowed("not an address", True)
