"""flawscope.audit: the tamper-evident, append-only audit trail of inspections.

Which model and which thresholds judged which part, in a hash chain that ``AuditLog.verify`` checks.
"""

from flawscope.audit.chain import GENESIS_HASH, compute_hash
from flawscope.audit.errors import AuditWriteError
from flawscope.audit.store import DEFAULT_URL, AuditLog
from flawscope.audit.verify import ChainHead, VerifyResult

__all__ = [
    "DEFAULT_URL",
    "GENESIS_HASH",
    "AuditLog",
    "AuditWriteError",
    "ChainHead",
    "VerifyResult",
    "compute_hash",
]
