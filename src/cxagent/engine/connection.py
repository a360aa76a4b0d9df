"""Connect an Ibis backend to a canonical dataset."""

from __future__ import annotations

from dataclasses import dataclass
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

    def table(self, name: str) -> ibis.Table:
        """A canonical table as an Ibis expression over its Parquet files."""
        files = table_files(self.root, name)
        if not files:
            raise DataValidationError(f"table '{name}' has no data", file=self.root / name)
        t = self.con.read_parquet([str(f) for f in files], table_name=f"cx_{name}")
        return t.select(*TABLES[name].column_names)

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
    return Engine(con=con, root=root, manifest=manifest)
