"""DoorDash delivery-duration data (early 2015) mapped to the canonical tables.

SRC is the DoorDash folder (holding ``historical_data*.csv(.gz)``) or the CSV file itself.
Times are converted from UTC to US/Pacific wall-clock time and stored naive. DoorDash makes
no promise, so ``promised_eta`` is an adapter assumption: the platform's own duration
estimates plus a fixed buffer (``PROMISE_BUFFER``). Every rule is in ``docs/importers.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxagent.data.importers.common import (
    COURIER_DETAIL_COLUMNS,
    DropLog,
    add_cohorts,
    date_range,
    parse_times,
    read_csv,
    write_table,
)
from cxagent.data.importers.doordash_tables import build_stores, build_supply
from cxagent.data.io import DatasetWriter
from cxagent.data.schema import ITEMS, SKUS, Manifest
from cxagent.errors import SourceDataError

LOCAL_TZ = "America/Los_Angeles"  # the IANA name of US/Pacific
PROMISE_BUFFER = pd.Timedelta(minutes=20)  # fixed a priori, not tuned to the data
INDEX_COLUMN = "Unnamed: 0"  # the unnamed first column of the sample: original row index
COLUMNS = (
    "market_id",
    "created_at",
    "actual_delivery_time",
    "store_id",
    "store_primary_category",
    "subtotal",
    "num_distinct_items",
    "total_onshift_dashers",
    "total_busy_dashers",
    "total_outstanding_orders",
    "estimated_order_place_duration",
    "estimated_store_to_consumer_driving_duration",
)
NUMERIC = (
    "market_id",
    "store_id",
    "subtotal",
    "num_distinct_items",
    "total_onshift_dashers",
    "total_busy_dashers",
    "total_outstanding_orders",
    "estimated_order_place_duration",
    "estimated_store_to_consumer_driving_duration",
)
MISSING_TABLES = ["skus", "items", "inventory_events", "support_events", "ratings", "change_events"]
MISSING_COLUMNS = {
    "orders": ["eta_model"],
    "deliveries": list(COURIER_DETAIL_COLUMNS),
}
DESCRIPTION = (
    "DoorDash delivery-duration data (anonymised hiring exercise, early 2015). No licence "
    "stated: internal test use only; do not redistribute or ship."
)


def source_file(src: Path) -> Path:
    """The CSV(.gz) to read: ``src`` itself, or the one historical_data file in it."""
    if src.is_file():
        return src
    if not src.is_dir():
        raise SourceDataError(f"{src}: DoorDash folder or file not found")
    for name in ("historical_data.csv", "historical_data.csv.gz"):
        if (src / name).is_file():
            return src / name
    found = sorted(p for p in src.glob("historical_data*.csv*") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceDataError(f"{src}: expected file historical_data.csv(.gz) is missing")
    names = ", ".join(p.name for p in found)
    raise SourceDataError(f"{src}: several historical_data files ({names}); pass one file")


def _to_local(utc: pd.Series) -> pd.Series:
    local = utc.dt.tz_localize("UTC").dt.tz_convert(LOCAL_TZ).dt.tz_localize(None)
    return local.astype("datetime64[us]")


def _map(raw: pd.DataFrame, log: DropLog, notes: list[str]) -> pd.DataFrame:
    d = raw.copy()
    index = pd.to_numeric(d[INDEX_COLUMN], errors="coerce") if INDEX_COLUMN in d else None
    if index is not None and index.notna().all() and index.is_unique and (index >= 0).all():
        d["order_id"] = index.astype("int64")
        notes.append("order_id = the source's first (unnamed) column, the original row index")
    else:
        d["order_id"] = np.arange(len(d), dtype=np.int64)
        notes.append("order_id = row number in the source file (no unique row-index column)")
    for column in NUMERIC:
        d[column] = pd.to_numeric(d[column], errors="coerce")
    d["created"] = parse_times(d["created_at"])
    d["actual"] = parse_times(d["actual_delivery_time"])
    d = log.drop(d, d["created"].isna(), "created_at missing or unparsable")
    d = log.drop(d, d["actual"].isna(), "actual_delivery_time missing or unparsable")
    d = log.drop(d, d["actual"] < d["created"], "actual_delivery_time before created_at")
    d = log.drop(d, d["market_id"].isna(), "market_id missing (no region)")
    d = log.drop(d, d["store_id"].isna(), "store_id missing or not a number")
    d = log.drop(d, ~(d["subtotal"] >= 0), "subtotal missing or negative")
    d = log.drop(d, d["num_distinct_items"].isna(), "num_distinct_items missing")
    estimates = ["estimated_order_place_duration", "estimated_store_to_consumer_driving_duration"]
    no_estimate = d[estimates].isna().any(axis=1) | (d[estimates] < 0).any(axis=1)
    d = log.drop(d, no_estimate, "platform duration estimate missing or negative (no promise)")

    d["order_time"] = _to_local(d["created"])
    d["actual_delivery_time"] = _to_local(d["actual"])
    estimate_s = d[estimates].sum(axis=1).round()
    d["promised_eta"] = _to_local(
        d["created"] + pd.to_timedelta(estimate_s, unit="s") + PROMISE_BUFFER
    )
    d["region"] = "market_" + d["market_id"].round().astype("int64").astype(str)
    d["store_id"] = d["store_id"].round().astype("int64")
    d["user_id"] = d["order_id"]
    d["item_count"] = d["num_distinct_items"].clip(lower=1).round().astype("int64")
    d["basket_value"] = d["subtotal"] / 100.0
    d["eta_model"] = None
    return add_cohorts(d)


def _assumption_notes(d: pd.DataFrame) -> list[str]:
    on_time = float((d["actual_delivery_time"] <= d["promised_eta"]).mean()) if len(d) else 0.0
    minutes = int(PROMISE_BUFFER.total_seconds() // 60)
    return [
        "times converted from UTC to US/Pacific (America/Los_Angeles) local time, stored naive",
        f"promised_eta is an adapter assumption, not a DoorDash promise: created_at + "
        f"estimated_order_place_duration + estimated_store_to_consumer_driving_duration + "
        f"{minutes} min fixed buffer; {on_time:.1%} of imported orders arrive by it",
        "user_id = order_id: the source has no customer key (each order is its own customer)",
        "canceled_flag is False for every order: the source holds delivered orders only",
        "skus and items written empty and listed missing: the source has item counts and "
        "prices per order, not products or item lines",
    ]


def import_doordash(src: Path | str, out: Path | str, *, overwrite: bool = False) -> Manifest:
    """Map the DoorDash data at ``src`` to a canonical dataset at ``out``; return its manifest."""
    path = source_file(Path(src))
    writer = DatasetWriter(out, overwrite=overwrite)  # fails early if --out exists
    raw = read_csv(path, COLUMNS, optional=(INDEX_COLUMN,))
    notes: list[str] = [f"{len(raw):,} rows read from {path.name}"]
    log = DropLog("orders")
    d = _map(raw, log, notes)
    notes.extend(log.notes)
    stores, categories = build_stores(d, notes)
    d["category"] = d["store_id"].map(categories)
    supply = build_supply(d, notes)
    deliveries = d[["order_id", "order_time", "actual_delivery_time"]].assign(canceled_flag=False)
    for column in MISSING_COLUMNS["deliveries"]:
        deliveries[column] = None
    notes.extend(_assumption_notes(d))

    start, end = date_range(d["order_time"])
    manifest = Manifest(
        source="doordash",
        description=DESCRIPTION,
        start=start,
        end=end,
        missing_tables=list(MISSING_TABLES),
        missing_columns={k: list(v) for k, v in MISSING_COLUMNS.items()},
        notes=notes,
    )
    with writer:
        write_table(writer, "stores", stores)
        write_table(writer, "orders", d)
        write_table(writer, "deliveries", deliveries)
        write_table(writer, "supply", supply)
        # Required tables the source cannot fill: written empty and listed as missing.
        writer.write("skus", SKUS.arrow_schema.empty_table())
        writer.write("items", ITEMS.arrow_schema.empty_table())
        writer.commit(manifest)
    return manifest
