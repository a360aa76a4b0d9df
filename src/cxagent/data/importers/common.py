"""Helpers shared by the source importers: CSV reading with clear errors, time parsing,
stable integer keys, cohort columns, counted row drops and partitioned writes."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from cxagent.data.cohorts import basket_sizes, dayparts
from cxagent.data.io import DatasetWriter
from cxagent.data.schema import TABLES
from cxagent.errors import SourceDataError

# Formats tried in turn. Month-first for slashed dates: the Olist re-saved sample uses it.
TIME_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
)

# Delivery columns neither public source records (no prep times, couriers, trips or pay).
COURIER_DETAIL_COLUMNS: tuple[str, ...] = (
    "merchant_prep_time_s",
    "dasher_wait_s",
    "distance_mi",
    "batched_flag",
    "dasher_id",
    "trip_id",
    "dasher_active_s",
    "delivery_cost",
)


def find_csv(folder: Path, stem: str) -> Path:
    """``folder/stem.csv`` or ``folder/stem.csv.gz``; SourceDataError naming both if absent."""
    for suffix in (".csv", ".csv.gz"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise SourceDataError(f"{folder}: expected file {stem}.csv (or {stem}.csv.gz) is missing")


def read_csv(path: Path, columns: Sequence[str], *, optional: Sequence[str] = ()) -> pd.DataFrame:
    """Read ``path`` as text columns (UTF-8, BOM and CRLF tolerated, .gz by suffix).

    Returns ``columns`` plus whichever ``optional`` columns exist. Raises SourceDataError
    naming the file and the first missing column.
    """
    if not path.is_file():
        raise SourceDataError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skipinitialspace=False)
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        gzip.BadGzipFile,
        zlib.error,
        EOFError,
    ) as exc:
        raise SourceDataError(f"{path}: cannot be read as CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceDataError(
            f"{path}: missing column '{missing[0]}'"
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + f"; found columns: {', '.join(df.columns)}"
        )
    keep = list(columns) + [c for c in optional if c in df.columns and c not in columns]
    return df[keep].copy()


def parse_times(values: pd.Series) -> pd.Series:
    """Parse text timestamps (any of ``TIME_FORMATS``) to naive datetime64[us]; NaT if not."""
    text = values.astype("string").str.strip()
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    for fmt in TIME_FORMATS:
        todo = out.isna() & text.notna()
        if not todo.any():
            break
        parsed = pd.to_datetime(text[todo], format=fmt, errors="coerce")
        out.loc[todo] = parsed.astype("datetime64[us]")
    return out


def unparsable(raw: pd.Series, parsed: pd.Series) -> pd.Series:
    """Rows where the source has a value that did not parse."""
    return raw.notna() & (raw.astype("string").str.strip() != "") & parsed.isna()


def stable_ids(keys: Iterable[str]) -> npt.NDArray[np.int64]:
    """Positive int64 keys from text ids (BLAKE2b, 63 bits): the same text gives the same id
    on every run and in every subset of a source."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") >> 1
            for k in keys
        ),
        dtype=np.int64,
    )


def check_unique_ids(text: pd.Series, ids: pd.Series, what: str) -> None:
    """Guard against a hash collision between distinct source ids (never expected)."""
    pairs = pd.DataFrame({"text": text.to_numpy(), "id": ids.to_numpy()}).drop_duplicates()
    if pairs["id"].duplicated().any():
        raise SourceDataError(f"{what}: two source ids hash to the same int64 key")


def add_cohorts(orders: pd.DataFrame) -> pd.DataFrame:
    """Set ``daypart`` and ``basket_size`` with the shared definitions of ``cohorts``."""
    orders["daypart"] = dayparts(orders["order_time"].dt.hour.to_numpy())
    orders["basket_size"] = basket_sizes(orders["item_count"].to_numpy())
    return orders


class DropLog:
    """Drops rows that cannot be mapped and records one note per reason with its count."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.notes: list[str] = []

    def drop(self, df: pd.DataFrame, mask: pd.Series, reason: str) -> pd.DataFrame:
        drop = mask.fillna(False).to_numpy(dtype=bool)
        n = int(drop.sum())
        if n:
            self.notes.append(f"dropped {n:,} {self.what}: {reason}")
        return df.loc[~drop].copy()


def write_table(writer: DatasetWriter, name: str, df: pd.DataFrame) -> None:
    """Write ``df`` as table ``name``: one part per date when the table is partitioned.

    An empty frame writes nothing (``commit`` then writes the empty table)."""
    if df.empty:
        return
    column = TABLES[name].partition_time
    if column is None:
        writer.write(name, df)
        return
    days = df[column].dt.strftime("%Y-%m-%d")
    for day, part in df.groupby(days.to_numpy(), sort=True):
        writer.write(name, part, date=str(day))


def date_range(times: pd.Series) -> tuple[str | None, str | None]:
    """First and last calendar date of ``times`` (ISO), or (None, None) when empty."""
    if times.empty:
        return None, None
    return times.min().strftime("%Y-%m-%d"), times.max().strftime("%Y-%m-%d")
