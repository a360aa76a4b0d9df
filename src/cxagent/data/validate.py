"""Validation of a dataset against the canonical schema.

Per file (pyarrow): columns present, types, nulls, ranges, allowed values, partition dates,
time order inside a row. Across files (DuckDB, streaming over Parquet): unique keys, foreign
keys, time order against the order, and derived cohort columns consistent with their source.
Every problem names the file, the column and an example row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cxagent.data.cohorts import (
    DAYPART_OF_HOUR,
    DAYPARTS,
    LARGE_BASKET_MIN_LINES,
    MEDIUM_BASKET_MIN_LINES,
)
from cxagent.data.io import load_manifest, table_files
from cxagent.data.schema import TABLES, Manifest, Table
from cxagent.errors import DataValidationError

_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
MAX_PROBLEMS = 50


@dataclass
class ValidationReport:
    root: Path
    manifest: Manifest | None
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[DataValidationError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_first(self) -> None:
        if self.problems:
            raise self.problems[0]


def _example(table: pa.Table, mask: pa.Array) -> dict[str, Any]:
    idx = int(np.flatnonzero(np.asarray(mask.fill_null(False)))[0])
    row = table.slice(idx, 1).to_pylist()[0]
    return {
        k: (str(v) if not isinstance(v, int | float | bool | str | type(None)) else v)
        for k, v in row.items()
    }


def _check_file(
    table: Table, path: Path, manifest: Manifest
) -> tuple[int, list[DataValidationError]]:
    problems: list[DataValidationError] = []
    try:
        data = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        return 0, [DataValidationError(f"not a readable Parquet file ({exc})", file=path)]
    missing_cols = set(manifest.missing_columns.get(table.name, []))
    for col in table.columns:
        if col.name not in data.column_names:
            problems.append(
                DataValidationError(
                    f"missing column of table '{table.name}'", file=path, column=col.name
                )
            )
            continue
        arr = data.column(col.name)
        if not arr.type.equals(col.arrow_type):
            try:
                arr = arr.cast(col.arrow_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                problems.append(
                    DataValidationError(
                        f"has type {arr.type}, expected {col.type}", file=path, column=col.name
                    )
                )
                continue
        if col.name in missing_cols:
            continue
        nulls = pc.is_null(arr)
        if not col.nullable and pc.any(nulls).as_py():
            problems.append(
                DataValidationError(
                    "has nulls but is required",
                    file=path,
                    column=col.name,
                    example=_example(data, nulls),
                )
            )
        checks: list[tuple[str, pa.Array]] = []
        if col.min is not None:
            checks.append((f"has values below {col.min}", pc.less(arr, col.min)))
        if col.max is not None:
            checks.append((f"has values above {col.max}", pc.greater(arr, col.max)))
        if col.allowed is not None:
            outside = pc.invert(pc.is_in(arr, value_set=pa.array(col.allowed)))
            checks.append(
                (f"has values outside {list(col.allowed)}", pc.and_(outside, pc.is_valid(arr)))
            )
        for message, bad in checks:
            if pc.any(bad).as_py():
                problems.append(
                    DataValidationError(
                        message, file=path, column=col.name, example=_example(data, bad)
                    )
                )
    if problems:
        return data.num_rows, problems
    match = _PARTITION.search(str(path.relative_to(path.parents[1])))
    if table.partition_time and match and data.num_rows:
        day = pc.strftime(data.column(table.partition_time), format="%Y-%m-%d")
        bad = pc.not_equal(day, match.group(1))
        if pc.any(bad).as_py():
            problems.append(
                DataValidationError(
                    f"row dated outside its partition date={match.group(1)}",
                    file=path,
                    column=table.partition_time,
                    example=_example(data, bad),
                )
            )
    for rule in table.time_order:
        if rule.via_order:
            continue
        bad = pc.less(data.column(rule.later), data.column(rule.earlier))
        if pc.any(bad).as_py():
            problems.append(
                DataValidationError(
                    f"is earlier than {rule.earlier}",
                    file=path,
                    column=rule.later,
                    example=_example(data, bad),
                )
            )
    return data.num_rows, problems


def check_schemas(root: Path | str) -> Manifest:
    """Fast check on read (Parquet footers only): every table's files have the canonical
    columns with compatible types. Raises the first problem; ``validate_dataset`` checks
    the values too."""
    root = Path(root)
    manifest = load_manifest(root)
    for name in TABLES:
        for path in table_files(root, name):
            try:
                schema = pq.read_schema(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataValidationError(
                    f"not a readable Parquet file ({exc})", file=path
                ) from None
            check_file_schema(name, path, schema)
    return manifest


def check_file_schema(name: str, path: Path | str, schema: pa.Schema) -> None:
    """One Parquet file of table ``name`` has the canonical columns with compatible types;
    raises the first problem, naming the file and the column."""
    for col in TABLES[name].columns:
        if col.name not in schema.names:
            raise DataValidationError(
                f"missing column of table '{name}'", file=path, column=col.name
            )
        found = schema.field(col.name).type
        if not found.equals(col.arrow_type) and not _castable(found, col.arrow_type):
            raise DataValidationError(
                f"has type {found}, expected {col.type}", file=path, column=col.name
            )


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    try:
        pa.array([], type=src).cast(dst)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return not (pa.types.is_string(src) and not pa.types.is_string(dst))


def _scan(files: list[Path]) -> str:
    names = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{names}], filename=true, hive_partitioning=false, union_by_name=true)"


def _first(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any] | None:
    cur = con.execute(sql)
    row = cur.fetchone()
    if row is None:
        return None
    cols = [d[0] for d in cur.description]
    return {
        c: (v if isinstance(v, int | float | str | bool | type(None)) else str(v))
        for c, v in zip(cols, row, strict=True)
    }


def _cross_checks(root: Path, files: dict[str, list[Path]]) -> list[DataValidationError]:
    problems: list[DataValidationError] = []
    con = duckdb.connect()
    con.execute("SET threads TO 2")

    def err(message: str, table: str, column: str, row: dict[str, Any]) -> None:
        file = row.pop("filename", None) or root / table
        problems.append(DataValidationError(message, file=file, column=column, example=row))

    for name, table in TABLES.items():
        if not files.get(name) or table.primary_key is None:
            continue
        key = table.primary_key
        row = _first(
            con,
            f"SELECT {key}, count(*) AS copies, min(filename) AS filename FROM {_scan(files[name])} "
            f"GROUP BY {key} HAVING count(*) > 1 LIMIT 1",
        )
        if row:
            err("duplicate key", name, key, row)
    for name, table in TABLES.items():
        for fk in table.foreign_keys:
            if not files.get(name) or not files.get(fk.table):
                continue
            row = _first(
                con,
                f"SELECT t.{fk.column}, t.filename FROM {_scan(files[name])} t "
                f"ANTI JOIN {_scan(files[fk.table])} r ON t.{fk.column} = r.{fk.ref_column} LIMIT 1",
            )
            if row:
                err(f"refers to a missing {fk.table}.{fk.ref_column}", name, fk.column, row)
        for rule in table.time_order:
            if not rule.via_order or not files.get(name) or not files.get("orders"):
                continue
            row = _first(
                con,
                f"SELECT t.order_id, t.{rule.later}, o.order_time, t.filename FROM {_scan(files[name])} t "
                f"JOIN {_scan(files['orders'])} o USING (order_id) WHERE t.{rule.later} < o.order_time LIMIT 1",
            )
            if row:
                err("is earlier than the order's order_time", name, rule.later, row)
    if files.get("orders"):
        cases = " ".join(
            f"WHEN hour(order_time) IN ({', '.join(str(h) for h in range(24) if _daypart(h) == d)}) THEN '{d}'"
            for d in DAYPARTS
        )
        row = _first(
            con,
            f"SELECT order_id, order_time, daypart, filename FROM {_scan(files['orders'])} "
            f"WHERE daypart <> (CASE {cases} END) LIMIT 1",
        )
        if row:
            err(
                "does not match the hour of order_time (see docs/data-model.md)",
                "orders",
                "daypart",
                row,
            )
        row = _first(
            con,
            f"SELECT order_id, item_count, basket_size, filename FROM {_scan(files['orders'])} WHERE basket_size <> "
            f"(CASE WHEN item_count >= {LARGE_BASKET_MIN_LINES} THEN 'large' "
            f"WHEN item_count >= {MEDIUM_BASKET_MIN_LINES} THEN 'medium' ELSE 'small' END) LIMIT 1",
        )
        if row:
            err("does not match item_count (see docs/data-model.md)", "orders", "basket_size", row)
    if files.get("deliveries"):
        row = _first(
            con,
            f"SELECT trip_id, count(*) AS orders_on_trip, min(order_id) AS order_id, "
            f"min(filename) AS filename FROM {_scan(files['deliveries'])} WHERE trip_id IS NOT NULL "
            f"GROUP BY trip_id HAVING (count(*) > 1 AND bool_or(NOT batched_flag)) "
            f"OR (count(*) = 1 AND bool_or(batched_flag)) LIMIT 1",
        )
        if row:
            err(
                "disagrees with trip_id: true exactly when the trip has other orders",
                "deliveries",
                "batched_flag",
                row,
            )
    for name in ("deliveries", "items"):
        if files.get(name) and files.get("orders"):
            row = _first(
                con,
                f"SELECT t.order_id, t.order_time, o.order_time AS orders_order_time, t.filename "
                f"FROM {_scan(files[name])} t JOIN {_scan(files['orders'])} o USING (order_id) "
                f"WHERE t.order_time <> o.order_time LIMIT 1",
            )
            if row:
                err("differs from orders.order_time", name, "order_time", row)
    return problems


def _daypart(hour: int) -> str:
    return DAYPARTS[int(DAYPART_OF_HOUR[hour])]


def validate_dataset(root: Path | str) -> ValidationReport:
    """Check every table of the dataset at ``root``; problems are collected, not raised."""
    root = Path(root)
    try:
        manifest = load_manifest(root)
    except DataValidationError as exc:
        return ValidationReport(root, None, problems=[exc])
    report = ValidationReport(root, manifest)
    for table_name, cols in manifest.missing_columns.items():
        if table_name not in TABLES:
            report.problems.append(
                DataValidationError(
                    f"missing_columns names unknown table '{table_name}'",
                    file=root / "dataset.json",
                )
            )
            continue
        for c in cols:
            if (
                c not in TABLES[table_name].column_names
                or not TABLES[table_name].column(c).nullable
            ):
                report.problems.append(
                    DataValidationError(
                        f"missing_columns lists '{table_name}.{c}', which is not a nullable column",
                        file=root / "dataset.json",
                    )
                )
    for name in manifest.missing_tables:
        if name not in TABLES or TABLES[name].required:
            report.problems.append(
                DataValidationError(
                    f"missing_tables lists '{name}', which is not an optional table",
                    file=root / "dataset.json",
                )
            )
    files: dict[str, list[Path]] = {}
    for name, table in TABLES.items():
        found = table_files(root, name)
        if not found:
            if name not in manifest.missing_tables:
                report.problems.append(
                    DataValidationError(
                        f"table '{name}' has no Parquet files and is not listed in missing_tables",
                        file=root / name,
                    )
                )
            continue
        files[name] = found
        total = 0
        for path in found:
            n, problems = _check_file(table, path, manifest)
            total += n
            report.problems.extend(problems)
            if len(report.problems) >= MAX_PROBLEMS:
                return report
        report.rows[name] = total
    if report.ok:
        report.problems.extend(_cross_checks(root, files))
    return report
