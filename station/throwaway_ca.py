"""A throwaway certificate authority for tests and benchmarks: a CA and the certificates it issues, as PEM files in
a folder, valid for a day. Real TLS between real brokers and clients, never a production PKI."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["ThrowawayCa"]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


class ThrowawayCa:
    """`ca.crt` in `folder`; `issue(name)` writes `name.crt` and `name.key` (common name `name`, and the names
    localhost and 127.0.0.1 so that a server on loopback passes hostname checks)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = _name("reflash throwaway CA")
        self.ca = folder / "ca.crt"
        certificate = self._certificate(self._subject, self._key, ca=True)
        self.ca.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def _certificate(self, subject: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def issue(self, name: str) -> tuple[Path, Path]:
        """The certificate and key files for `name` (a server or a client: the common name is `name`)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert_path, key_path = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        cert_path.write_bytes(self._certificate(_name(name), key, ca=False).public_bytes(serialization.Encoding.PEM))
        pem = serialization.Encoding.PEM
        key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return cert_path, key_path
