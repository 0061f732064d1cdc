"""OPC UA security of the station's server and clients: policies, certificates, trust store, users.

Policies are named as asyncua names them: ``None``, ``Basic256Sha256_Sign``,
``Basic256Sha256_SignAndEncrypt``. A secure endpoint needs the application instance certificate
(its subject alternative name holds the application URI, as OPC UA Part 6 requires) with its
private key, and a trust-store folder: the peers' certificates it holds (one file each, DER or PEM)
are the only ones accepted. Users log in with a user name and a password read from an environment
variable; anonymous sessions are refused unless allowed.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import Any

from flawscope.config import Problem
from flawscope.integrate.certs import check_certificate

logger = logging.getLogger(__name__)


def _ua() -> Any:
    """Asyncua's ``ua`` module, untyped (its generated structures are made at run time)."""
    from asyncua import ua

    return ua


POLICIES = ("None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt")


def policy_types(names: tuple[str, ...]) -> list[Any]:
    """Asyncua ``SecurityPolicyType`` values for policy names."""
    ua = _ua()

    table = {
        "None": ua.SecurityPolicyType.NoSecurity,
        "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
        "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    }
    return [table[n] for n in names]


def validate_security(
    security: tuple[str, ...],
    certificate: Path | None,
    private_key: Path | None,
    trust_store: Path | None,
) -> list[Problem]:
    """Configuration checks shared by the server and client options."""
    problems = []
    for name in security:
        if name not in POLICIES:
            problems.append(Problem("security", f"unknown policy {name!r} (known: {', '.join(POLICIES)})"))
    if not security:
        problems.append(Problem("security", "give at least one policy"))
    secure = any(n != "None" for n in security)
    if secure:
        if certificate is None or private_key is None:
            problems.append(
                Problem("certificate", "a signed/encrypted policy needs certificate and private_key")
            )
        if trust_store is None:
            problems.append(Problem("trust_store", "a signed/encrypted policy needs a trust_store folder"))
    return problems


def certificate_problems(
    certificate: Path | None, private_key: Path | None, trust_store: Path | None, application_uri: str
) -> list[str]:
    """What is wrong with the certificate files and trust store, for ``station check``."""
    problems = check_certificate(
        certificate, what="the application certificate", application_uri=application_uri, key=private_key
    )
    if trust_store is not None:
        if not trust_store.is_dir():
            problems.append(f"the trust store {trust_store} is not a folder")
        else:
            for path in sorted(trust_store.iterdir()):
                if path.is_file():
                    problems += check_certificate(path, what="the trusted certificate")
    return problems


class PasswordUsers:
    """asyncua user manager: user names with passwords from environment variables.

    Args:
        users: user name -> environment variable holding the password.
        allow_anonymous: accept sessions without a user.
    """

    def __init__(self, users: dict[str, str], allow_anonymous: bool, sink: str = "") -> None:
        self.users = dict(users)
        self.allow_anonymous = allow_anonymous
        self.sink = sink
        self.refused = 0
        self.refused_certificates = 0

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> Any:
        """The session's user, or None to refuse it."""
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        variable = self.users.get(username)
        expected = os.environ.get(variable, "") if variable else ""
        given = password or ""
        if variable and expected and hmac.compare_digest(given.encode(), expected.encode()):
            return User(role=UserRole.User, name=username)
        self.refused += 1
        why = "unknown user" if not variable else "wrong password"
        logger.warning("%sOPC UA login refused for user %r (%s)", _prefix(self.sink), username, why)
        return None


def _prefix(sink: str) -> str:
    return f"sink {sink}: " if sink else ""


#: Why asyncua's certificate validator refused a peer, in words.
_CERTIFICATE_CODES = {
    "BadCertificateUntrusted": "is not in the trust store",
    "BadCertificateTimeInvalid": "has expired or is not valid yet",
    "BadCertificateUriInvalid": "does not hold the application URI the peer announced",
    "BadCertificateUseNotAllowed": "is not made for this use (key usage)",
    "BadCertificateInvalid": "is malformed (a required extension is missing)",
    "BadCertificateRevoked": "is revoked",
}


def _named_validator(validator: Any, users: PasswordUsers, trust_store: Path) -> Any:
    """The validator of asyncua, with one log line naming the sink, the peer and the reason on refusal."""
    from asyncua.ua.status_codes import get_name_and_doc
    from asyncua.ua.uaerrors import UaError

    async def validate(cert: Any, description: Any) -> None:
        try:
            await validator(cert, description)
        except UaError as exc:
            users.refused_certificates += 1
            code = getattr(exc, "code", None)
            label = get_name_and_doc(code)[0] if isinstance(code, int) else type(exc).__name__
            subject = cert.subject.rfc4514_string() if cert is not None else "?"
            why = _CERTIFICATE_CODES.get(label, label)
            logger.warning(
                "%sOPC UA session refused: the certificate of %s (%s) %s (%s; trust store %s)",
                _prefix(users.sink),
                getattr(description, "ApplicationUri", "") or "a client",
                subject,
                why,
                label,
                trust_store,
            )
            raise

    return validate


async def secure_server(
    server: Any,
    *,
    security: tuple[str, ...],
    certificate: Path | None,
    private_key: Path | None,
    trust_store: Path | None,
    users: PasswordUsers,
) -> None:
    """Configure an asyncua server's endpoints, certificate, trust store and identity tokens."""
    ua = _ua()
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

    server.set_security_policy(policy_types(security))
    if certificate is not None and private_key is not None:
        await server.load_certificate(str(certificate))
        await server.load_private_key(str(private_key))
    if trust_store is not None and any(n != "None" for n in security):
        store = TrustStore([trust_store], [])
        await store.load()
        options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        server.set_certificate_validator(
            _named_validator(CertificateValidator(options, store), users, trust_store)
        )
    tokens: list[Any] = [ua.UserNameIdentityToken]
    if users.allow_anonymous:
        tokens.append(ua.AnonymousIdentityToken)
    server.set_identity_tokens(tokens)
    server.iserver.user_manager = users


async def secure_client(
    client: Any,
    *,
    policy: str,
    certificate: Path | None,
    private_key: Path | None,
    trust_store: Path | None,
    username: str,
    password: str,
    application_uri: str,
) -> None:
    """Configure an asyncua client: its certificate, the server certificates it trusts, its user."""
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

    client.application_uri = application_uri
    if username:
        client.set_user(username)
        client.set_password(password)
    if policy == "None":
        return
    mode = "SignAndEncrypt" if policy.endswith("SignAndEncrypt") else "Sign"
    ua = _ua()

    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate),
        str(private_key),
        mode=ua.MessageSecurityMode[mode],
    )
    if trust_store is not None:
        store = TrustStore([trust_store], [])
        await store.load()
        options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_SERVER
        client.certificate_validator = CertificateValidator(options, store)
