"""TLS under the HMAC handshake: a throw-away cluster CA made with `cryptography` in the test."""

from __future__ import annotations

import datetime
import os

import pytest
import pytest_twisted

pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
pytest.importorskip("cryptography")
pytest.importorskip("OpenSSL")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from twisted.internet import ssl  # noqa: E402

from tests.wire.helpers import eventually, sleep  # noqa: E402


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, public_key, signing_key, ca: bool):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cluster_ca():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(_name("ursula test cluster CA"), _name("ursula test cluster CA"),
               ca_key.public_key(), ca_key, ca=True)
    return ca_key, ca


def _options(ca_key, ca, trust=None) -> ssl.CertificateOptions:
    """Node certificate signed by `ca_key`; peers must present a cert signed by `trust`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(_name("ursula node"), ca.subject, key.public_key(), ca_key, ca=False)
    node = ssl.PrivateCertificate.loadPEM(_key_pem(key) + _pem(cert))
    root = ssl.Certificate.loadPEM(_pem(trust if trust is not None else ca))
    return ssl.CertificateOptions(privateKey=node.privateKey.original,
                                  certificate=node.original,
                                  trustRoot=ssl.trustRootFromCertificates([root]))


@pytest_twisted.ensureDeferred
async def test_raft_and_forward_over_mutual_tls(clusters):
    ca_key, ca = _cluster_ca()
    c = await clusters(3, tls=_options(ca_key, ca))
    await c.all_connected()
    for a, b in [(1, 2), (1, 3), (2, 3)]:
        proto = c.nodes[a]._conns[b]
        assert proto.transport.getPeerCertificate() is not None  # really TLS
    c.nodes[3].on_forward(lambda group, payload: payload[::-1])
    payload = os.urandom(2 * 2**20)
    assert await c.nodes[1].forward(3, 1, payload) == payload[::-1]
    c.nodes[2].send_raft(1, [(5, b"hb")])
    await eventually(lambda: c.received[1])
    assert c.received[1] == [(2, [(5, b"hb")])]


@pytest_twisted.ensureDeferred
async def test_certificate_from_another_ca_never_connects(clusters):
    ca_key, ca = _cluster_ca()
    other_key, other = _cluster_ca()
    c = await clusters(2, tls=_options(ca_key, ca))
    # node 1 presents a certificate from a foreign CA (but trusts the cluster CA)
    c.nodes[1].tls_options = _options(other_key, other, trust=ca)
    restarted = await c.restart(1)
    await sleep(0.5)
    assert not restarted.connected(2) and not c.nodes[2].connected(1)
