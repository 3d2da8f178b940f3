"""``[cluster] tls_*``: PEM files become mutual-TLS options for the peer plane."""

from __future__ import annotations

import datetime

import pytest

from ursula.config import ConfigError, parse_config
from ursula.supervisor import peer_tls_options

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _write_pki(tmp_path):
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cluster CA")])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    node = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node 1")])
    cert = (x509.CertificateBuilder().subject_name(node).issuer_name(name)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "node.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "node.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_tls_files_become_mutual_tls_options(tmp_path):
    _write_pki(tmp_path)
    config = parse_config(f"[cluster]\ntls_cert = {tmp_path}/node.pem\n"
                          f"tls_key = {tmp_path}/node.key\ntls_ca = {tmp_path}/ca.pem\n")
    options = peer_tls_options(config)
    assert options is not None
    assert options.verify and options.requireCertificate
    assert peer_tls_options(parse_config("")) is None


def test_tls_keys_go_together_and_must_load(tmp_path):
    with pytest.raises(ConfigError, match="tls_key"):
        parse_config(f"[cluster]\ntls_cert = {tmp_path}/x.pem\n")
    (tmp_path / "junk.pem").write_text("not a certificate")
    config = parse_config(f"[cluster]\ntls_cert = {tmp_path}/junk.pem\n"
                          f"tls_key = {tmp_path}/junk.pem\ntls_ca = {tmp_path}/junk.pem\n")
    with pytest.raises(ConfigError, match="cannot load"):
        peer_tls_options(config)
