"""Connect an Ibis backend to a canonical dataset: DuckDB (default) or Spark.

The same expressions run on both (``cxagent.engine.facts``, ``cube``); ``engine`` (or
``CXAGENT_ENGINE``) chooses. DuckDB reads the Parquet files in process; Spark reads each
table's folder (its ``date=`` partitions) on the session ``cxagent.engine.spark`` opens.
The dataset is a local directory or a folder on object storage (``cxagent.engine.storage``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import ibis
import pyarrow as pa
from ibis.backends import BaseBackend

from cxagent.data.io import load_manifest
from cxagent.data.schema import TABLES, Manifest
from cxagent.data.validate import check_file_schema, check_schemas
from cxagent.engine.storage import Location, spark_read_error
from cxagent.errors import DataValidationError, SpecError

ENGINE_ENV: Final = "CXAGENT_ENGINE"
ENGINES: Final = ("duckdb", "spark")


@dataclass
class Engine:
    """An Ibis backend plus the dataset it reads."""

    con: BaseBackend
    location: Location
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
        files = self.location.files(name)
        if not files:
            raise DataValidationError(f"table '{name}' has no data", file=self.location.child(name))
        key = (name, files)
        if key not in self._tables:
            self._tables[key] = self._read(name, files).select(*TABLES[name].column_names)
        return self._tables[key]

    def _read(self, name: str, files: tuple[str, ...]) -> ibis.Table:
        view = f"cx_{name}"
        if self.backend == "pyspark":  # Spark lists the folder's partitions itself
            url = self.location.spark_url(name)
            try:
                return self.con.read_parquet(url, table_name=view)
            except Exception as exc:  # Py4J's and Spark's errors: no connector, no access
                if not self.location.remote:
                    raise
                raise spark_read_error(url, exc) from exc
        if self.location.remote:
            # Ibis's read_parquet would load DuckDB's httpfs extension for an s3:// path (a
            # download, and not needed): the view reads through the registered fsspec one
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            self.con.raw_sql(
                f"CREATE OR REPLACE TEMPORARY VIEW {view} AS SELECT * FROM read_parquet([{listed}])"
            )
            return self.con.table(view)
        return self.con.read_parquet(list(files), table_name=view)

    def materialise(self, name: str, expr: ibis.Table) -> ibis.Table:
        """``expr`` computed once and kept for the queries that follow (DuckDB: a table in
        memory; Spark: a cached view, so nothing is written to a warehouse)."""
        if self.backend == "pyspark":
            return expr.cache()
        return self.con.create_table(name, expr, overwrite=True)

    @property
    def root(self) -> Path | str:
        """The dataset's directory, or its URL on object storage."""
        return self.location.url if self.location.remote else self.location.path

    def to_arrow(self, expr: ibis.Table) -> pa.Table:
        """The result of ``expr`` as an Arrow table. On Spark straight from its Arrow batches
        (``DataFrame.toArrow``, pyspark 4): Ibis goes through pandas there, which took more
        than 16 GB in Python to collect the 11.5 M-row window cube of 100 M orders."""
        if self.backend == "pyspark":
            frame = self.con.raw_sql(self.con.compile(expr))
            if hasattr(frame, "toArrow"):
                from ibis.formats.pyarrow import PyArrowData

                return PyArrowData.convert_table(frame.toArrow(), expr.schema())
        return self.con.to_pyarrow(expr)

    @property
    def backend(self) -> str:
        """Ibis's name of the backend: ``duckdb`` or ``pyspark``."""
        return str(self.con.name)

    def has(self, name: str) -> bool:
        return self.manifest.has(name) and bool(self.location.files(name))


def check_engine(engine: str, field: str = "engine") -> str:
    """``engine`` if it is one this project runs on, else a SpecError naming ``field``."""
    if engine not in ENGINES:
        raise SpecError(f"{field}: {engine!r} is not one of {', '.join(ENGINES)}")
    return engine


def connect(
    root: Path | str | Location,
    *,
    threads: int = 2,
    engine: str | None = None,
    spark_master: str | None = None,
) -> Engine:
    """The dataset at ``root`` (a directory, or a URL on object storage such as
    ``s3://bucket/prefix``) on ``engine`` (``duckdb`` in memory over its Parquet files, or
    ``spark``; default ``$CXAGENT_ENGINE`` or duckdb), after a fast schema check."""
    location = Location.of(root)
    engine = engine or os.environ.get(ENGINE_ENV) or "duckdb"
    check_engine(engine)
    manifest = checked_manifest(location)
    if engine == "spark":
        from cxagent.engine.spark import spark_session

        session = spark_session(spark_master, cores=threads)
        return Engine(con=ibis.pyspark.connect(session), location=location, manifest=manifest)
    con = ibis.duckdb.connect(threads=threads)
    location.register(con)  # a dataset on object storage: read through its fsspec filesystem
    con.raw_sql("SET enable_progress_bar = false")
    # results are keyed, never positional: let DuckDB write them in any order (faster)
    con.raw_sql("SET preserve_insertion_order = false")
    # an investigation reads the same Parquet files in dozens of queries: parse each footer once
    con.raw_sql("SET parquet_metadata_cache = true")
    return Engine(con=con, location=location, manifest=manifest)


def checked_manifest(location: Location) -> Manifest:
    """The dataset's manifest after the fast check on read (``validate.check_schemas``:
    Parquet footers only); on object storage the same check, the footers read through the
    location's filesystem."""
    if not location.remote:
        return check_schemas(location.path)
    manifest = load_manifest(location)
    for name in TABLES:
        files = list(location.files(name))
        for path, schema in zip(files, location.read_schemas(files), strict=True):
            check_file_schema(name, path, schema)
    return manifest
