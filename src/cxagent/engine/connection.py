"""Connect an Ibis backend to a canonical dataset: DuckDB (default) or Spark.

The same expressions run on both (``cxagent.engine.facts``, ``cube``); ``engine`` (or
``CXAGENT_ENGINE``) chooses. DuckDB reads the Parquet files in process; Spark reads each
table's folder (its ``date=`` partitions) on the session ``cxagent.engine.spark`` opens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import ibis
from ibis.backends import BaseBackend

from cxagent.data.io import table_dir, table_files
from cxagent.data.schema import TABLES, Manifest
from cxagent.data.validate import check_schemas
from cxagent.errors import DataValidationError, SpecError

ENGINE_ENV: Final = "CXAGENT_ENGINE"
ENGINES: Final = ("duckdb", "spark")


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
            if self.backend == "pyspark":  # Spark lists the folder's partitions itself
                t = self.con.read_parquet(str(table_dir(self.root, name)), table_name=f"cx_{name}")
            else:
                t = self.con.read_parquet(list(files), table_name=f"cx_{name}")
            self._tables[key] = t.select(*TABLES[name].column_names)
        return self._tables[key]

    def materialise(self, name: str, expr: ibis.Table) -> ibis.Table:
        """``expr`` computed once and kept for the queries that follow (DuckDB: a table in
        memory; Spark: a cached view, so nothing is written to a warehouse)."""
        if self.backend == "pyspark":
            return expr.cache()
        return self.con.create_table(name, expr, overwrite=True)

    @property
    def backend(self) -> str:
        """Ibis's name of the backend: ``duckdb`` or ``pyspark``."""
        return str(self.con.name)

    def has(self, name: str) -> bool:
        return self.manifest.has(name) and bool(table_files(self.root, name))


def check_engine(engine: str, field: str = "engine") -> str:
    """``engine`` if it is one this project runs on, else a SpecError naming ``field``."""
    if engine not in ENGINES:
        raise SpecError(f"{field}: {engine!r} is not one of {', '.join(ENGINES)}")
    return engine


def connect(
    root: Path | str,
    *,
    threads: int = 2,
    engine: str | None = None,
    spark_master: str | None = None,
) -> Engine:
    """The dataset at ``root`` on ``engine`` (``duckdb`` in memory over its Parquet files, or
    ``spark``; default ``$CXAGENT_ENGINE`` or duckdb), after a fast schema check."""
    root = Path(root)
    engine = engine or os.environ.get(ENGINE_ENV) or "duckdb"
    check_engine(engine)
    manifest = check_schemas(root)
    if engine == "spark":
        from cxagent.engine.spark import spark_session

        session = spark_session(spark_master, cores=threads)
        return Engine(con=ibis.pyspark.connect(session), root=root, manifest=manifest)
    con = ibis.duckdb.connect(threads=threads)
    con.raw_sql("SET enable_progress_bar = false")
    # results are keyed, never positional: let DuckDB write them in any order (faster)
    con.raw_sql("SET preserve_insertion_order = false")
    # an investigation reads the same Parquet files in dozens of queries: parse each footer once
    con.raw_sql("SET parquet_metadata_cache = true")
    return Engine(con=con, root=root, manifest=manifest)
