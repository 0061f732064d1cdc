"""The model registry of a station: versions, lineage, which one is live, and who changed it and why.

Bundles live in a registry folder, one deployable bundle per version (``ROOT/<version label>/``,
copied in by :meth:`ModelRegistry.register` after its signature is checked). What happened to
them is the audit log: every registration, comparison, promotion, refusal and rollback is a
record of kind ``model`` (hash-chained like every result), whose ``reason`` holds a JSON object
(``{"action": ..., ...}``) and ``operator`` who did it. The live version is the one the latest
promotion or rollback names: the registry has no state the audit trail does not prove.

Promotion is refused unless the candidate's latest comparison with the version live *now*
passed its gates (:mod:`flawscope.improve.compare`); an override needs a person with the
engineer role (checked against the web app's users) and a reason, and is audited as such.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flawscope.audit import AuditLog
from flawscope.bundle import check_trust, read_bundle
from flawscope.errors import InputError
from flawscope.types import InspectionRecord, Outcome

logger = logging.getLogger(__name__)
ACTIONS = ("register", "compare", "promote", "refuse", "rollback", "shadow")
COMPARISON = "comparison-{live}.json"


class PromotionRefusedError(InputError):
    """The gates did not hold (or were not checked) and nobody allowed to override did."""


@dataclass(frozen=True)
class ModelEvent:
    """One registry record, read back from the audit log.

    Attributes:
        seq: the audit record's ``seq``.
        action: ``register``, ``compare``, ``promote``, ``refuse``, ``rollback`` or ``shadow``.
        version: the version it is about.
        model_hash: that version's weights hash.
        by: who.
        at: when (seconds since the epoch).
        details: the rest of the record's JSON (reason, gates, previous version...).
    """

    seq: int
    action: str
    version: str
    model_hash: str
    by: str
    at: float
    details: dict[str, Any]


@dataclass(frozen=True)
class ModelVersion:
    """A registered version.

    Attributes:
        version: its label (``<model hash prefix>.t<threshold version>``).
        path: its bundle folder in the registry.
        model_hash: weights hash.
        model: the model's registry name.
        lineage: what it was retrained from (None: trained from scratch).
        live: whether it is the live version.
    """

    version: str
    path: Path
    model_hash: str
    model: str
    lineage: Any
    live: bool


Authorise = Callable[[str, str], bool]


class ModelRegistry:
    """A station's models: a folder of bundles and the audit log's ``model`` records.

    Args:
        root: the registry folder (created if missing).
        audit: the audit log (opened by the caller, writable for changes).
        station: the station the registry belongs to (its records' ``station``).
    """

    def __init__(self, root: str | os.PathLike[str], audit: AuditLog, station: str = "station") -> None:
        self.root = Path(root).expanduser().absolute()
        self.audit = audit
        self.station = station

    # --------------------------------------------------------------------------------- reading

    def events(self) -> Iterator[ModelEvent]:
        """The registry's records, oldest first."""
        for record in self.audit.records():
            if record.kind != "model" or record.station != self.station or record.seq is None:
                continue
            try:
                details = json.loads(record.reason)
            except ValueError:
                details = {"action": "note", "note": record.reason}
            yield ModelEvent(
                seq=record.seq,
                action=str(details.pop("action", "note")),
                version=record.model_version,
                model_hash=record.model_hash,
                by=record.operator,
                at=record.acquired_at,
                details=details,
            )

    def live_version(self) -> str | None:
        """The version the latest promotion or rollback made live (None: none yet)."""
        live = None
        for event in self.events():
            if event.action in ("promote", "rollback"):
                live = event.version
        return live

    def history(self) -> list[str]:
        """The versions made live, oldest first (a rollback returns to the previous one)."""
        chain: list[str] = []
        for event in self.events():
            if event.action == "promote":
                chain.append(event.version)
            elif event.action == "rollback" and chain:
                chain.pop()
        return chain

    def path_of(self, version: str) -> Path:
        """A registered version's bundle folder.

        Raises:
            InputError: there is no such version.
        """
        path = self.root / version
        if not (path / "manifest.json").is_file():
            known = (
                ", ".join(sorted(p.name for p in self.root.iterdir() if p.is_dir()))
                if self.root.is_dir()
                else ""
            )
            raise InputError(
                "version", f"{version!r} is not registered in {self.root} (known: {known or 'none'})"
            )
        return path

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        if not self.root.is_dir():
            return []
        live = self.live_version()
        found = []
        for path in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            if not (path / "manifest.json").is_file():
                continue
            manifest = read_bundle(path).manifest
            found.append(
                ModelVersion(
                    path.name,
                    path,
                    manifest.model_hash,
                    manifest.model.name,
                    manifest.lineage,
                    path.name == live,
                )
            )
        return found

    # ------------------------------------------------------------------------------- changing

    def _record(
        self, action: str, version: str, model_hash: str, by: str, outcome: Outcome, **details: Any
    ) -> InspectionRecord:
        if not by.strip():
            raise InputError("by", "a registry change must name who made it")
        record = InspectionRecord(
            part_id=f"model:{version}",
            station=self.station,
            acquired_at=time.time(),
            outcome=outcome,
            model_hash=model_hash,
            model_version=version,
            reason=json.dumps({"action": action, **details}, sort_keys=True, default=str),
            operator=by,
            kind="model",
        )
        return self.audit.append_many([record])[0]

    def register(self, bundle: str | os.PathLike[str], by: str, note: str = "", **trust: Any) -> ModelVersion:
        """Copy a deployable bundle into the registry (its signature checked first) and record it.

        Raises:
            InputError: not a deployable bundle with thresholds, or the version is registered already.
            BundleError: an altered bundle or one without a trusted signature.
        """
        loaded = read_bundle(bundle)
        check_trust(loaded, trust.get("trusted_keys"), allow_unsigned=bool(trust.get("allow_unsigned")))
        manifest = loaded.manifest
        if manifest.deploy is None or manifest.select_thresholds() is None:
            raise InputError(bundle, "only a deployable bundle with calibrated thresholds can be registered")
        version = manifest.version_label()
        target = self.root / version
        if target.exists():
            same = read_bundle(target).manifest
            if same.files == manifest.files and same.thresholds == manifest.thresholds:
                raise InputError(bundle, f"version {version} is already registered ({target})")
            # The same weights with other thresholds (calibrated elsewhere): a version of its own.
            thresholds = manifest.select_thresholds()
            version = f"{version}-{thresholds.sha256[:8] if thresholds else 'x'}"
            target = self.root / version
            if target.exists():
                raise InputError(bundle, f"version {version} is already registered ({target})")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(loaded.path, staging)
        staging.rename(target)
        lineage = manifest.lineage
        self._record(
            "register",
            version,
            manifest.model_hash,
            by,
            Outcome.PASS,
            note=note,
            source=str(loaded.path),
            base=None if lineage is None else lineage.base_version,
        )
        return next(v for v in self.versions() if v.version == version)

    def save_comparison(self, candidate: str, comparison: Any, by: str) -> Path:
        """Keep a comparison of ``candidate`` with the live version beside it, and record it."""
        live = comparison.live.version if comparison.live is not None else (self.live_version() or "none")
        path = self.path_of(candidate).with_name(f"{candidate}.{COMPARISON.format(live=live)}")
        path.write_text(json.dumps(comparison.to_dict(), indent=2), encoding="utf-8")
        manifest = read_bundle(self.path_of(candidate)).manifest
        self._record(
            "compare",
            candidate,
            manifest.model_hash,
            by,
            Outcome.PASS if comparison.passed else Outcome.FAIL,
            against=live,
            passed=comparison.passed,
            refused=comparison.refused,
            failed=[g.name for g in comparison.gates if not g.passed],
            file=path.name,
            **gate_evidence(comparison.to_dict()),
        )
        return path

    def comparison(self, candidate: str, live: str) -> dict[str, Any] | None:
        """The saved comparison of ``candidate`` with ``live`` (None: never compared)."""
        path = self.path_of(candidate).with_name(f"{candidate}.{COMPARISON.format(live=live)}")
        if not path.is_file():
            return None
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def promote(
        self,
        version: str,
        by: str,
        reason: str,
        *,
        override: bool = False,
        authorise: Authorise | None = None,
    ) -> ModelEvent:
        """Make ``version`` live if its comparison with the live version passed its gates.

        Args:
            version: the candidate.
            by: who promotes it.
            reason: why (required).
            override: promote although the gates did not hold (needs ``authorise``).
            authorise: ``(user, role) -> bool``: whether ``by`` holds the role (the web app's users).

        Raises:
            PromotionRefusedError: the gates did not hold or were not checked, and no valid override
                was given; the refusal is recorded too.
            InputError: an unknown version, a missing reason or name.
        """
        if not reason.strip():
            raise InputError("reason", "a promotion must say why")
        path = self.path_of(version)
        manifest = read_bundle(path).manifest
        live = self.live_version()
        if live == version:
            raise InputError("version", f"{version} is live already")
        problem = ""
        comparison = None
        if live is not None:
            comparison = self.comparison(version, live)
            if comparison is None:
                problem = (
                    f"{version} was never compared with the live version {live} ('flawscope model compare')"
                )
            elif comparison.get("refused"):
                problem = f"its comparison with {live} was refused: {comparison['refused']}"
            elif not comparison.get("passed"):
                failed = [g["name"] for g in comparison.get("gates", []) if not g["passed"]]
                problem = f"its comparison with {live} failed the gate(s): {', '.join(failed)}"
        if problem and override:
            if authorise is None or not authorise(by, "engineer"):
                self._record(
                    "refuse",
                    version,
                    manifest.model_hash,
                    by,
                    Outcome.FAIL,
                    reason=reason,
                    problem=problem,
                    override="not authorised",
                )
                raise PromotionRefusedError(
                    "override",
                    f"{by!r} is not an engineer: only an engineer may override the gates ({problem})",
                )
            logger.warning("promotion of %s by %s overrides the gates: %s", version, by, problem)
        elif problem:
            self._record(
                "refuse", version, manifest.model_hash, by, Outcome.FAIL, reason=reason, problem=problem,
                **({} if comparison is None else gate_evidence(comparison)),
            )  # fmt: skip
            raise PromotionRefusedError("promote", f"refused: {problem}")
        record = self._record(
            "promote",
            version,
            manifest.model_hash,
            by,
            Outcome.PASS,
            reason=reason,
            previous=live,
            override=problem if override and problem else "",
            **({} if comparison is None else gate_evidence(comparison)),
        )
        return next(e for e in self.events() if e.seq == record.seq)

    def rollback(self, by: str, reason: str) -> ModelEvent:
        """Make the version that was live before the current one live again.

        Raises:
            InputError: there is no earlier live version, or no reason.
        """
        if not reason.strip():
            raise InputError("reason", "a rollback must say why")
        chain = self.history()
        if len(chain) < 2:
            raise InputError("rollback", "there is no earlier live version to roll back to")
        current, previous = chain[-1], chain[-2]
        manifest = read_bundle(self.path_of(previous)).manifest
        record = self._record(
            "rollback", previous, manifest.model_hash, by, Outcome.PASS, reason=reason, replaced=current
        )
        return next(e for e in self.events() if e.seq == record.seq)

    def live_path(self) -> Path | None:
        """The live version's bundle folder (None: nothing promoted yet)."""
        live = self.live_version()
        return None if live is None else self.path_of(live)


def web_authoriser(db_url: str, password: str | None = None, token: str | None = None) -> Authorise:
    """An authoriser that checks a user's password or API token and role in the web app's user table.

    Raises:
        InputError: the web app is not installed.
    """
    try:
        from flawscope.web.database import WebDB
        from flawscope.web.users import authenticate, find_token
    except ImportError:
        raise InputError(
            "override", "checking the engineer role needs the web app: pip install 'flawscope[web]'"
        ) from None

    def authorise(user: str, role: str) -> bool:
        db = WebDB(db_url)
        try:
            found = find_token(db, token) if token else authenticate(db, user, password or "")
        finally:
            db.close()
        return found is not None and found.username == user and found.allows(role)

    return authorise


def gate_evidence(comparison: dict[str, Any]) -> dict[str, Any]:
    """What an audit record keeps of a comparison: the gates' settings and each gate's result and test."""
    gates = []
    for gate in comparison.get("gates", []):
        test = gate.get("test") or {}
        kept = {k: test[k] for k in ("n", "live_only", "candidate_only", "difference", "low", "high",
                                     "margin", "rule", "method", "p_value") if k in test}  # fmt: skip
        gates.append({"name": gate["name"], "passed": gate["passed"], "detail": gate["detail"], **kept})
    return {"gates": gates, "gate_config": comparison.get("config")}
