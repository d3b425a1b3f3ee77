"""TLS for the test server: a throwaway CA made at start and a server certificate it signs.

A real API server is only ever reached over TLS, and clients verify it against the CA their kubeconfig
carries. Serving plain http would leave every TLS path of the product (verification, the CA in the
kubeconfig, ``insecure-skip-tls-verify``) untested, so the test server does what a cluster does:
its kubeconfig names an ``https://`` URL and holds the CA as ``certificate-authority-data``.

ECDSA P-256 keys: generated in milliseconds and the cheapest handshake kubectl, helm (Go) and the
Python client all accept.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerTls", "generate"]

HOSTS = ("localhost",)
IPS = ("127.0.0.1", "::1")
VALID_DAYS = 7  # a test session is hours; a CA that outlives it is of no use to anyone


@dataclass(frozen=True)
class ServerTls:
    """The files of one server's TLS: ``ca_file`` (what clients trust), ``cert_file``/``key_file``."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # what kube-apiserver accepts by default
        ctx.load_cert_chain(self.cert_file, self.key_file)
        # HTTP/1.1 only: Go clients offer h2 first and fall back to this, as with any server without h2
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def generate(directory: str | Path, common_name: str = "opsbook-kubeapi") -> ServerTls:
    """A fresh CA and a server certificate for ``localhost``/``127.0.0.1``/``::1`` in ``directory``
    (the key files readable by the owner only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in HOSTS]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IPS]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    tls = ServerTls(ca_file=d / "ca.crt", cert_file=d / "server.crt", key_file=d / "server.key")
    _write(d / "ca.key", ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
           private=True)
    _write(tls.key_file, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
           private=True)
    _write(tls.ca_file, ca.public_bytes(pem))
    _write(tls.cert_file, cert.public_bytes(pem))
    return tls


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.touch(mode=0o600 if private else 0o644)
    path.write_bytes(data)
