"""Streaming export of audit records to CSV or Parquet for MES and BI tools.

One column per ``InspectionRecord`` field, in the dataclass's order (the record's one declaration,
:mod:`flawscope.audit.fields`); ``regions`` as JSON text and ``outcome`` as its string value.
``acquired_at`` is a point in time, not a number: ISO 8601 text with its time zone in CSV
(``2025-03-01T14:05:09.1234567+00:00``), a UTC nanosecond timestamp column in Parquet (what
pandas, Spark and BI tools read as a date-time). Both keep every digit of the stored value, so
:func:`epoch_seconds` gives back the exact float and each record's hash can still be re-checked
from the export alone. The file is written next to its destination and renamed into place when
complete, so a reader never sees half an export.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from flawscope.audit.chain import BOOL_FIELDS, FIELDS, FLOAT_FIELDS, OPTIONAL_INT_FIELDS, record_to_row
from flawscope.errors import InputError
from flawscope.types import InspectionRecord

FORMATS = ("csv", "parquet")
ROW_GROUP = 20_000


#: Fields holding seconds since the epoch, exported as date-times.
TIME_FIELDS = ("acquired_at",)
_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_NS = Decimal(10**9)


def _exact(seconds: float) -> Decimal:
    # The shortest decimal that reads back as this float: a UNIX time of today has at most seven
    # decimals, so nanoseconds and the ISO text below hold it without rounding.
    return Decimal(repr(float(seconds)))


def iso_time(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC text with every decimal of the float.

    ``1700000000.125`` gives ``2023-11-14T22:13:20.125+00:00``; ``""`` for NaN or infinity.
    """
    if not math.isfinite(seconds):
        return ""
    exact = _exact(seconds)
    whole = exact.to_integral_value(rounding=ROUND_FLOOR)
    fraction = format(exact - whole, "f").partition(".")[2].rstrip("0")
    stamp = datetime.fromtimestamp(int(whole), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}{'.' + fraction if fraction else ''}+00:00"


def _nanoseconds(seconds: float) -> int | None:
    if not math.isfinite(seconds):
        return None
    return int((_exact(seconds) * _NS).to_integral_value())


def epoch_seconds(value: str | datetime | int | float) -> float:
    """Seconds since the epoch of an exported time, exactly the float the audit log stores.

    Args:
        value: ISO 8601 text from a CSV export, nanoseconds since the epoch (a Parquet
            ``acquired_at`` column cast to int64), a timezone-aware ``datetime`` (microseconds
            only), or a number (returned as it is).

    Raises:
        ValueError: for text that is not an ISO 8601 time with a time zone.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone")
        return value.timestamp()
    if isinstance(value, int):
        return float(Decimal(value) / _NS)
    if isinstance(value, float):
        return value
    match = _ISO.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not an ISO 8601 time with a time zone")
    head, fraction, zone = match.groups()
    whole = datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone)).timestamp()
    return float(Decimal(int(whole)) + Decimal(fraction or "0"))


def _values(record: InspectionRecord) -> dict[str, Any]:
    return record_to_row(record, nan_as_null=False)


def _write_csv(records: Iterable[InspectionRecord], tmp: Path) -> int:
    n = 0
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for record in records:
            row = _values(record)
            # Empty cells for NaN/None: what spreadsheets and BI tools read as "no value".
            for name in TIME_FIELDS:
                row[name] = iso_time(row[name]) if row[name] is not None else ""
            writer.writerow(
                "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in row.values()
            )
            n += 1
    return n


def _chunks(records: Iterable[InspectionRecord], size: int) -> Iterator[list[InspectionRecord]]:
    chunk: list[InspectionRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_parquet(records: Iterable[InspectionRecord], tmp: Path, row_group: int) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("format", "Parquet export needs pyarrow: pip install pyarrow") from None
    types = {name: pa.string() for name in FIELDS}
    types.update({name: pa.float64() for name in FLOAT_FIELDS})
    types.update({name: pa.int64() for name in OPTIONAL_INT_FIELDS})
    types.update({name: pa.bool_() for name in BOOL_FIELDS})
    types.update({name: pa.timestamp("ns", tz="UTC") for name in TIME_FIELDS})
    schema = pa.schema([(name, types[name]) for name in FIELDS])
    n = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for chunk in _chunks(records, row_group):
            columns: dict[str, list[Any]] = {name: [] for name in FIELDS}
            for record in chunk:
                for name, value in _values(record).items():
                    columns[name].append(_nanoseconds(value) if name in TIME_FIELDS else value)
            del chunk
            writer.write_table(pa.Table.from_pydict(columns, schema=schema), row_group_size=row_group)
            n += len(columns["seq"])
    return n


def export_records(
    records: Iterable[InspectionRecord],
    path: str | os.PathLike[str],
    fmt: str = "csv",
    row_group: int = ROW_GROUP,
) -> int:
    """Write records to a CSV or Parquet file, streaming (one row group in memory at a time).

    Args:
        records: the records to write, in the order they should appear.
        path: destination file; its folder must exist. Replaced atomically when complete.
        fmt: ``"csv"`` or ``"parquet"``.
        row_group: Parquet rows per row group.

    Returns:
        Number of records written.

    Raises:
        InputError: unknown format, missing folder, or the file cannot be written.
    """
    if fmt not in FORMATS:
        raise InputError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    dest = Path(path)
    if not dest.parent.is_dir():
        raise InputError(dest, f"cannot export: directory {dest.parent} does not exist")
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        n = _write_csv(records, tmp) if fmt == "csv" else _write_parquet(records, tmp, row_group)
        os.replace(tmp, dest)
    except OSError as exc:
        raise InputError(dest, f"cannot export: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n
