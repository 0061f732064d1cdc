"""flawscope.signing: Ed25519 keys, signatures and trust (bundles, threshold versions, audit heads).

See :mod:`flawscope.signing.keys` for the key store and :mod:`flawscope.signing.trust` for what a
machine accepts.
"""

from flawscope.signing.keys import ENV_VAR, KeyInfo, KeyStore, key_id, public_pem, read_public_file
from flawscope.signing.trust import Signature, TrustPolicy, sign, sign_with

__all__ = [
    "ENV_VAR",
    "KeyInfo",
    "KeyStore",
    "Signature",
    "TrustPolicy",
    "key_id",
    "public_pem",
    "read_public_file",
    "sign",
    "sign_with",
]
