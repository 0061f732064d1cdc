"""X.509 certificates for the station's secure connections (cryptography): make them, check them.

OPC UA needs an *application instance certificate* whose subject alternative name holds the
application URI (and the host names), with the key usages of OPC UA Part 6; MQTT and HTTPS need an
ordinary TLS server certificate. :func:`make_certificate` writes either (PEM or DER), optionally
signed by a CA from :func:`make_ca`; :func:`check_certificate` says what is wrong with one
(missing, unreadable, expired, not yet valid, without the application URI), in words.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    """Paths of a certificate and its private key."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flawscope"),
        ]
    )


def _write(cert: x509.Certificate, key: rsa.RSAPrivateKey, folder: Path, stem: str, der: bool) -> KeyPair:
    folder.mkdir(parents=True, exist_ok=True)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    cert_path = folder / f"{stem}.{'der' if der else 'pem'}"
    key_path = folder / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(encoding))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return KeyPair(cert_path, key_path)


def make_ca(folder: Path, name: str = "flawscope test CA", days: int = 3650) -> KeyPair:
    """A self-signed CA (PEM) to sign server and client certificates with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return _write(cert, key, folder, "ca", der=False)


def make_certificate(
    folder: Path,
    stem: str,
    *,
    common_name: str,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    application_uri: str = "",
    ca: KeyPair | None = None,
    der: bool = False,
    days: int = 825,
    not_before: dt.datetime | None = None,
) -> KeyPair:
    """A certificate and key: server and client TLS use, and OPC UA application use.

    Args:
        folder: where to write ``<stem>.pem|der`` and ``<stem>-key.pem``.
        stem: file name stem.
        common_name: subject CN.
        hosts: DNS names and IP addresses for the SAN.
        application_uri: the OPC UA application URI (put in the SAN as a URI); ``""`` for none.
        ca: sign with this CA (default: self-signed).
        der: write the certificate as DER (what OPC UA stacks usually exchange).
        days: validity.
        not_before: start of validity (default: now); tests pass a past date to make expired ones.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    names: list[x509.GeneralName] = []
    if application_uri:
        names.append(x509.UniformResourceIdentifier(application_uri))
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if ca is not None:
        ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
        issuer, signer = ca_cert.subject, ca_key
    else:
        issuer, signer = _name(common_name), key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment (OPC UA Part 6).
            x509.KeyUsage(True, True, True, True, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    cert = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    return _write(cert, key, folder, stem, der)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM or DER certificate.

    Raises:
        ValueError: the file holds neither.
    """
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def application_uris(cert: x509.Certificate) -> list[str]:
    """The URIs in a certificate's subject alternative name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def check_certificate(
    path: Path | None, *, what: str, application_uri: str = "", key: Path | None = None
) -> list[str]:
    """What is wrong with a certificate file, in words (``[]``: usable).

    Args:
        path: the certificate (PEM or DER).
        what: how to name it in messages ("the server certificate").
        application_uri: the OPC UA application URI its SAN must hold (not checked when empty).
        key: its private key, which must exist and be readable.
    """
    if path is None:
        return [f"{what} is not configured"]
    if not path.is_file():
        return [f"{what} {path} does not exist"]
    try:
        cert = load_certificate(path)
    except (OSError, ValueError) as exc:
        return [f"{what} {path} is not a PEM or DER certificate ({exc})"]
    problems = []
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        problems.append(f"{what} {path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        problems.append(f"{what} {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    if application_uri and application_uri not in application_uris(cert):
        found = ", ".join(application_uris(cert)) or "none"
        problems.append(
            f"{what} {path} does not hold the application URI {application_uri!r} in its subject "
            f"alternative name (it holds: {found})"
        )
    if key is not None:
        if not key.is_file():
            problems.append(f"the private key {key} of {what} does not exist")
        else:
            try:
                serialization.load_pem_private_key(key.read_bytes(), password=None)
            except (OSError, ValueError, TypeError) as exc:
                problems.append(f"the private key {key} of {what} cannot be read ({exc})")
    return problems
