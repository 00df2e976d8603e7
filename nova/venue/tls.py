"""A self-signed certificate for serving the venue over ``https://`` and ``wss://`` (``nova venue --tls``).

Why: some client libraries refuse plain ``ws://`` URLs (cryptofeed insists on ``wss://``), so pointing them at
the venue needs TLS. The venue makes its own certificate for the names it is reached by (``localhost``,
127.0.0.1 and the bound host), valid for a year, and says where the certificate is so that the client can
trust exactly it (``ssl.create_default_context(cafile=...)``, ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from pathlib import Path

CERT_FILE = "venue-cert.pem"
KEY_FILE = "venue-key.pem"


def self_signed(directory: Path | None, host: str) -> tuple[Path, Path]:
    """Write a fresh self-signed certificate and its key into ``directory`` (a new temporary one if None)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = Path(tempfile.mkdtemp(prefix="nova-venue-tls-")) if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nova venue")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
