"""Connect an Ibis backend to a canonical dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import ibis
from ibis.backends import BaseBackend

from cxagent.data.io import table_files
from cxagent.data.schema import TABLES, Manifest
from cxagent.data.validate import check_schemas
from cxagent.errors import DataValidationError


@dataclass
class Engine:
    """An Ibis backend plus the dataset it reads."""

    con: BaseBackend
    root: Path
    manifest: Manifest
    # table name and its files -> the expression over them (see ``table``)
    _tables: dict[tuple[str, tuple[str, ...]], ibis.Table] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def table(self, name: str) -> ibis.Table:
        """A canonical table as an Ibis expression over its Parquet files.

        Registering the files with the backend and reading back their schema costs a few
        milliseconds, and one investigation asks for the same tables dozens of times: the
        expression is kept for as long as the table's files are the same ones."""
        files = tuple(str(f) for f in table_files(self.root, name))
        if not files:
            raise DataValidationError(f"table '{name}' has no data", file=self.root / name)
        key = (name, files)
        if key not in self._tables:
            t = self.con.read_parquet(list(files), table_name=f"cx_{name}")
            self._tables[key] = t.select(*TABLES[name].column_names)
        return self._tables[key]

    def has(self, name: str) -> bool:
        return self.manifest.has(name) and bool(table_files(self.root, name))


def connect(root: Path | str, *, threads: int = 2) -> Engine:
    """DuckDB (in memory, over the dataset's Parquet files), after a fast schema check."""
    root = Path(root)
    manifest = check_schemas(root)
    con = ibis.duckdb.connect(threads=threads)
    con.raw_sql("SET enable_progress_bar = false")
    # results are keyed, never positional: let DuckDB write them in any order (faster)
    con.raw_sql("SET preserve_insertion_order = false")
    # an investigation reads the same Parquet files in dozens of queries: parse each footer once
    con.raw_sql("SET parquet_metadata_cache = true")
    return Engine(con=con, root=root, manifest=manifest)
