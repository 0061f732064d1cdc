"""Audit records as OPC 40100-1 results: ``ResultDataType``, ``ResultReady`` event fields, filters.

The spec's fields are filled from the record (and the job that triggered it):

=========================  ==================================================================
ResultDataType field       from
=========================  ==================================================================
ResultId                   the result id ``<seq>-<hash prefix>`` (same as MQTT/webhooks)
IsPartial / IsSimulated    false / true when the camera's source is the line simulator
ResultState                1 Completed (pass, review, fail); 4 Failed (error, not_inspected)
MeasId, PartId, ProductId  what the PLC passed with the trigger (PartId: the record's part id)
ExternalRecipeId           the recipe id the PLC passed
InternalRecipeId           Id = model version, Version = threshold version, Hash = model hash
InternalConfigurationId    Id = ``<station>/<camera>``
JobId                      the job that triggered the part (``free-<camera>`` when free-running)
CreationTime               acquisition time
ProcessingTimes            StartTime = acquisition, EndTime = verdict, ProcessingDuration (ms)
ResultContent              flawscope's fields as KeyValuePairs: Outcome, OutcomeCode, Accept,
                           Score, NormalizedScore, Category, ModelVersion, ModelHash,
                           ThresholdVersion, Seq, RecordHash, Reason
=========================  ==================================================================

The MachineVision structure classes exist once the NodeSet is imported (asyncua generates them into
``asyncua.ua``), so they are looked up when used.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from flawscope.acquire.triggered import trigger_of
from flawscope.integrate.payload import OUTCOME_CODES, camera_of, result_id
from flawscope.types import InspectionRecord, Outcome

COMPLETED = 1
FAILED = 4


def _ua() -> Any:
    from asyncua import ua

    return ua


def result_state(record: InspectionRecord) -> int:
    """ResultStateDataType: 1 Completed for a judged part, 4 Failed for one that was not."""
    return FAILED if record.outcome in (Outcome.ERROR, Outcome.NOT_INSPECTED) else COMPLETED


def job_id(record: InspectionRecord) -> str:
    """The job of a record: the PLC's job, or ``free-<camera>`` for a free-running camera's part."""
    return trigger_of(record.source).get("job_id") or f"free-{camera_of(record)}"


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds if math.isfinite(seconds) else 0.0, UTC)


def content(record: InspectionRecord) -> list[Any]:
    """Flawscope's own result fields as ``KeyValuePair`` variants (ResultContent)."""
    ua = _ua()

    def pair(key: str, value: Any, kind: Any) -> Any:
        return ua.Variant(ua.KeyValuePair(Key=ua.QualifiedName(key, 0), Value=ua.Variant(value, kind)))

    score = record.score if math.isfinite(record.score) else float("nan")
    normalized = record.normalized_score if math.isfinite(record.normalized_score) else float("nan")
    return [
        pair("Outcome", record.outcome.value, ua.VariantType.String),
        pair("OutcomeCode", OUTCOME_CODES[Outcome(record.outcome)], ua.VariantType.Int32),
        pair("Accept", Outcome(record.outcome).is_accept, ua.VariantType.Boolean),
        pair("Score", score, ua.VariantType.Double),
        pair("NormalizedScore", normalized, ua.VariantType.Double),
        pair("Category", record.category or "", ua.VariantType.String),
        pair("ModelVersion", record.model_version, ua.VariantType.String),
        pair("ModelHash", record.model_hash, ua.VariantType.String),
        pair(
            "ThresholdVersion",
            -1 if record.threshold_version is None else record.threshold_version,
            ua.VariantType.Int32,
        ),
        pair("Seq", record.seq or 0, ua.VariantType.Int64),
        pair("RecordHash", record.record_hash, ua.VariantType.String),
        pair("Reason", record.reason, ua.VariantType.String),
    ]


def fields(record: InspectionRecord, simulated: bool = False) -> dict[str, Any]:
    """The ResultDataType fields of a record, as asyncua values (also the ResultReady event's)."""
    ua = _ua()
    job = trigger_of(record.source)
    latency = record.latency_ms if math.isfinite(record.latency_ms) else 0.0
    model_hash = bytes.fromhex(record.model_hash) if len(record.model_hash) == 64 else None
    optional_id = lambda cls, value: cls(Id=value) if value else None  # noqa: E731
    return {
        "ResultId": ua.ResultIdDataType(Id=result_id(record)),
        "HasTransferableDataOnFile": False,
        "IsPartial": False,
        "IsSimulated": simulated,
        "ResultState": result_state(record),
        "MeasId": optional_id(ua.MeasIdDataType, job.get("meas_id", "")),
        "PartId": ua.PartIdDataType(Id=record.part_id),
        "ExternalRecipeId": optional_id(ua.RecipeIdExternalDataType, job.get("recipe_id", "")),
        "InternalRecipeId": ua.RecipeIdInternalDataType(
            Id=record.model_version or "none",
            Version=None if record.threshold_version is None else str(record.threshold_version),
            Hash=model_hash,
            HashAlgorithm="SHA-256" if model_hash else None,
        ),
        "ProductId": optional_id(ua.ProductIdDataType, job.get("product_id", "")),
        "ExternalConfigurationId": None,
        "InternalConfigurationId": ua.ConfigurationIdDataType(Id=record.station),
        "JobId": ua.JobIdDataType(Id=job_id(record)),
        "CreationTime": _time(record.acquired_at),
        "ProcessingTimes": ua.ProcessingTimesDataType(
            StartTime=_time(record.acquired_at),
            EndTime=_time(record.acquired_at + latency / 1000),
            ProcessingDuration=latency,
        ),
        "ResultContent": content(record),
    }


def to_result(record: InspectionRecord, simulated: bool = False) -> Any:
    """A ``ResultDataType`` structure."""
    return _ua().ResultDataType(**fields(record, simulated))


def matches(record: InspectionRecord, wanted: dict[str, str], state: int) -> bool:
    """Whether a record passes GetResultListFiltered's filters (empty filter values match all)."""
    if state and result_state(record) != state:
        return False
    job = trigger_of(record.source)
    have = {
        "part_id": record.part_id,
        "job_id": job_id(record),
        "meas_id": job.get("meas_id", ""),
        "recipe_id": job.get("recipe_id", ""),
        "product_id": job.get("product_id", ""),
        "internal_recipe_id": record.model_version,
        "internal_configuration_id": record.station,
    }
    return all(not value or have.get(key) == value for key, value in wanted.items())


def parse_result_id(text: str) -> tuple[int, str] | None:
    """``(seq, hash prefix)`` of a result id, None when it is not one."""
    seq, sep, prefix = text.partition("-")
    if not sep or not seq.isdigit() or len(prefix) != 16:
        return None
    return int(seq), prefix
