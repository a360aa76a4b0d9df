"""Expressions that Ibis compiles differently on its backends, written once for all of them.

Ibis translates ``epoch_seconds`` to DuckDB's ``EPOCH`` (seconds with their microseconds) but
to Spark's ``unix_timestamp`` (whole seconds), so an order 0.4 s late would be on time on one
engine and late on the other. ``seconds_between`` keeps the microseconds on both.
``sample_key`` is a hash of an integer id that both engines compute alike, for samples drawn
on the engine that keep the same rows on each.
"""

from __future__ import annotations

import datetime as dt

import ibis
import ibis.expr.types as ir

SPARK: str = "pyspark"  # Ibis's name of the Spark backend


@ibis.udf.scalar.builtin(name="unix_micros")
def _unix_micros(ts: dt.datetime) -> int:  # type: ignore[empty-body]
    """Spark SQL's microseconds since the epoch of a (local time zone) timestamp."""


@ibis.udf.scalar.builtin(name="to_timestamp_ltz")
def _to_ltz(ts: dt.datetime) -> dt.datetime:  # type: ignore[empty-body]
    """Spark SQL: the wall-clock timestamp (``TIMESTAMP_NTZ``, as Parquet without a time zone
    reads) in the session time zone; with the session in UTC, differences are exact."""


def seconds_between(
    backend: str, later: ir.TimestampValue, earlier: ir.TimestampValue
) -> ir.FloatingValue:
    """``later - earlier`` in seconds, microseconds included, on the backend named ``backend``
    (``Engine.backend``)."""
    if backend == SPARK:
        micros = _unix_micros(_to_ltz(later)) - _unix_micros(_to_ltz(earlier))
        # an integer literal cast to double: Spark SQL reads a bare 1e6 literal's type its own way
        return micros.cast("float64") / ibis.literal(1_000_000).cast("float64")
    return (later.epoch_seconds() - earlier.epoch_seconds()).cast("float64")


def sample_key(key: ir.IntegerValue) -> ir.StringValue:
    """A uniform pseudo-random key of an integer id, the same on every engine: the MD5 (32
    lower-case hex digits, so text order is number order) of the id's decimal text. MD5 is a
    standard, and DuckDB's ``md5`` and Spark's agree; the engines' ``hash`` functions do not
    (DuckDB's own 64-bit hash against Spark's 32-bit Murmur3), and an arithmetic hash of
    consecutive ids (``id * a mod p``) keeps runs of neighbouring ids together."""
    return key.cast("string").hexdigest("md5")
