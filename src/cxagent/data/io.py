"""Parquet datasets on disk: one directory per table, partitioned by date where large.

Layout::

    DIR/dataset.json                        the Manifest
    DIR/orders/date=2024-01-03/part-0.parquet
    DIR/stores/part-0.parquet
    DIR/truth.json                          (generated scenarios only)

Writes are atomic: a ``DatasetWriter`` fills a hidden temporary directory beside the target
and renames it into place on ``commit``; on any error the temporary directory is removed and
the target is left as it was. Datasets are written locally; ``load_manifest`` also reads one
on object storage (``cxagent.engine.storage``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cxagent.data.schema import TABLES, Manifest, Table
from cxagent.engine.storage import Location
from cxagent.errors import DataValidationError, OutputExistsError

MANIFEST_FILE = "dataset.json"


def to_arrow(table: Table, data: pd.DataFrame | pa.Table, *, source: str = "<memory>") -> pa.Table:
    """Select and cast ``data`` to the canonical schema of ``table``.

    Raises DataValidationError naming the column when one is missing or cannot be cast.
    """
    if isinstance(data, pd.DataFrame):
        missing = [c for c in table.column_names if c not in data.columns]
        if missing:
            raise DataValidationError(
                f"missing column(s) {missing} for table '{table.name}'",
                file=source,
                column=missing[0],
            )
        data = pa.Table.from_pandas(data[list(table.column_names)], preserve_index=False)
    arrays = []
    for col in table.columns:
        if col.name not in data.column_names:
            raise DataValidationError(
                f"missing column for table '{table.name}'", file=source, column=col.name
            )
        arr = data.column(col.name)
        if not arr.type.equals(col.arrow_type):
            try:
                arr = arr.cast(col.arrow_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataValidationError(
                    f"has type {arr.type}, expected {col.type} ({exc})",
                    file=source,
                    column=col.name,
                ) from exc
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=table.arrow_schema)


def _write_parquet_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd", compression_level=1)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(value: Any) -> Any:
    """Plain JSON data: NaN and infinities become None (JSON has neither), tuples lists,
    dates ISO text, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return json_safe(value.item())
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_part(
    root: Path, name: str, data: pd.DataFrame | pa.Table, *, date: str | None, part: str
) -> Path:
    """Write ``root/name[/date=DATE]/part-PART.parquet`` atomically, cast to the schema."""
    arrow = to_arrow(TABLES[name], data, source=f"{name} (being written)")
    folder = Path(root) / name
    if date is not None:
        folder = folder / f"date={date}"
    path = folder / f"part-{part}.parquet"
    _write_parquet_atomic(path, arrow)
    return path


def table_dir(root: Path, name: str) -> Path:
    return Path(root) / name


class DatasetWriter:
    """Writes a whole dataset into a temporary directory, then renames it into place.

    Use as a context manager; call ``commit`` at the end of the ``with`` block. Leaving the
    block without ``commit`` (or with an exception) discards everything written.
    """

    def __init__(self, out: Path | str, *, overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise OutputExistsError(
                f"output directory {self.out} exists; choose another --out or pass --overwrite"
            )
        if self.out.exists() and not self.out.is_dir():
            raise OutputExistsError(f"output path {self.out} exists and is not a directory")
        self.overwrite = overwrite
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._parts: dict[tuple[str, str | None], int] = {}
        self._committed = False

    def __enter__(self) -> DatasetWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write(
        self,
        name: str,
        data: pd.DataFrame | pa.Table,
        *,
        date: str | None = None,
        part: str | None = None,
    ) -> Path:
        """Write one part of table ``name``; ``date`` (YYYY-MM-DD) picks the partition.

        ``part`` names the file (for writers in other processes); by default parts are numbered.
        """
        if part is None:
            key = (name, date)
            part = str(self._parts.get(key, 0))
            self._parts[key] = int(part) + 1
        return write_part(self.tmp, name, data, date=date, part=part)

    def write_json(self, filename: str, payload: Any) -> None:
        write_json_atomic(self.tmp / filename, payload)

    def commit(self, manifest: Manifest) -> Path:
        """Write the manifest, make sure every required table exists, and move into place."""
        for name, table in TABLES.items():
            if (self.tmp / name).exists() or name in manifest.missing_tables:
                continue
            # An empty table is still a table: write its schema so readers find it.
            self.write(name, table.arrow_schema.empty_table())
        write_json_atomic(self.tmp / MANIFEST_FILE, asdict(manifest))
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        self._committed = True
        return self.out


def load_manifest(root: Path | str | Location) -> Manifest:
    """The manifest of the dataset at ``root``: a directory or an object-storage URL."""
    location = Location.of(root)
    path = location.child(MANIFEST_FILE)
    if not location.remote and not location.path.is_dir():
        raise DataValidationError("dataset directory does not exist", file=location.url)
    try:
        text = location.read_text(MANIFEST_FILE)
    except FileNotFoundError:
        raise DataValidationError(
            "no dataset.json manifest: not a cxagent dataset", file=path
        ) from None
    try:
        raw = json.loads(text)
        return Manifest(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataValidationError(f"malformed manifest ({exc})", file=path) from exc


def table_files(root: Path | str, name: str) -> list[Path]:
    """The Parquet files of table ``name``, in partition order."""
    folder = table_dir(Path(root), name)
    return sorted(folder.rglob("*.parquet")) if folder.exists() else []


def read_table(
    root: Path | str,
    name: str,
    *,
    columns: list[str] | None = None,
    filter: ds.Expression | None = None,
) -> pa.Table:
    """Read a canonical table (all partitions) as one Arrow table, partition column dropped."""
    files = table_files(root, name)
    table = TABLES[name]
    if not files:
        return table.arrow_schema.empty_table().select(columns or list(table.column_names))
    dataset = ds.dataset([str(f) for f in files], schema=table.arrow_schema, format="parquet")
    return dataset.to_table(columns=columns, filter=filter)


def read_frame(root: Path | str, name: str, *, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a canonical table as a pandas DataFrame (for small tables and tests)."""
    return read_table(root, name, columns=columns).to_pandas()
