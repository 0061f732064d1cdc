"""Streaming export of audit records to CSV or Parquet for MES and BI tools.

One column per ``InspectionRecord`` field, in the dataclass's order (the record's one declaration,
:mod:`flawscope.audit.fields`); ``regions`` as JSON text and ``outcome`` as its string value. The
file is written next to its destination and renamed into place when complete, so a reader never
sees half an export.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flawscope.audit.chain import BOOL_FIELDS, FIELDS, FLOAT_FIELDS, OPTIONAL_INT_FIELDS, record_to_row
from flawscope.errors import InputError
from flawscope.types import InspectionRecord

FORMATS = ("csv", "parquet")
ROW_GROUP = 20_000


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
    schema = pa.schema([(name, types[name]) for name in FIELDS])
    n = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for chunk in _chunks(records, row_group):
            columns: dict[str, list[Any]] = {name: [] for name in FIELDS}
            for record in chunk:
                for name, value in _values(record).items():
                    columns[name].append(value)
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
