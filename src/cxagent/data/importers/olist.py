"""Olist Brazilian e-commerce orders (2016-2018) mapped to the canonical tables.

SRC is the Olist folder: ``full/`` (products, sellers, category translation) and one or more
order folders (``full/`` itself if it holds the orders file, then every ``sample_*/`` in name
order). An order present in several folders is taken from the first one, with its items and
reviews. Every mapping rule and every dropped-row rule is described in ``docs/importers.md``.
Olist times are local Brazilian wall-clock times and stay naive.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxagent.data.importers.common import (
    COURIER_DETAIL_COLUMNS,
    DropLog,
    add_cohorts,
    check_unique_ids,
    date_range,
    find_csv,
    parse_times,
    read_csv,
    stable_ids,
    unparsable,
    write_table,
)
from cxagent.data.importers.olist_tables import (
    build_lines,
    build_ratings,
    build_stores_skus,
    finish_items,
)
from cxagent.data.io import DatasetWriter
from cxagent.data.schema import Manifest
from cxagent.errors import SourceDataError

ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "order_status",
    "order_purchase_timestamp",
    "order_delivered_customer_date",
    "order_estimated_delivery_date",
)
CUSTOMER_COLUMNS = ("customer_id", "customer_unique_id", "customer_state")
ITEM_COLUMNS = ("order_id", "order_item_id", "product_id", "seller_id", "price")
REVIEW_COLUMNS = ("order_id", "review_score", "review_creation_date")
REVIEW_OPTIONAL = ("review_id", "review_comment_message")
CANCELED_STATUSES = frozenset({"canceled", "unavailable"})

MISSING_TABLES = ["inventory_events", "support_events", "supply", "change_events"]
MISSING_COLUMNS = {
    "orders": ["eta_model"],
    "deliveries": list(COURIER_DETAIL_COLUMNS),
    "items": ["substituted_flag", "missing_flag", "refund_amount"],
}
DESCRIPTION = (
    "Olist Brazilian e-commerce public dataset (2016-2018), CC BY-NC-SA 4.0, published by "
    "Olist; non-commercial testing only, with attribution."
)


def _order_folders(src: Path) -> list[Path]:
    if not src.is_dir():
        raise SourceDataError(f"{src}: Olist folder not found")
    if not (src / "full").is_dir():
        raise SourceDataError(f"{src}: expected sub-folder full/ (products, sellers) is missing")
    candidates = [src / "full", *sorted(p for p in src.glob("sample_*") if p.is_dir())]
    folders = [f for f in candidates if any(f.glob("olist_orders_dataset.csv*"))]
    if not folders:
        raise SourceDataError(
            f"{src}: expected file olist_orders_dataset.csv(.gz) in full/ or a sample_*/ folder"
        )
    return folders


def _load(folders: list[Path], notes: list[str]) -> tuple[pd.DataFrame, ...]:
    """Orders (with customer columns), item lines and reviews, one copy of each order."""
    orders, items, reviews = [], [], []
    seen: set[str] = set()
    duplicates = 0
    for folder in folders:
        o = read_csv(find_csv(folder, "olist_orders_dataset"), ORDER_COLUMNS)
        c = read_csv(find_csv(folder, "olist_customers_dataset"), CUSTOMER_COLUMNS)
        i = read_csv(find_csv(folder, "olist_order_items_dataset"), ITEM_COLUMNS)
        r = read_csv(
            find_csv(folder, "olist_order_reviews_dataset"),
            REVIEW_COLUMNS,
            optional=REVIEW_OPTIONAL,
        )
        o = o.dropna(subset=["order_id"]).drop_duplicates("order_id")
        new = ~o["order_id"].isin(seen)
        duplicates += int((~new).sum())
        o = o.loc[new]
        seen.update(o["order_id"])
        o = o.merge(c.drop_duplicates("customer_id"), on="customer_id", how="left")
        notes.append(f"{len(o):,} orders read from {folder.name}/")
        orders.append(o)
        items.append(i.loc[i["order_id"].isin(o["order_id"])])
        reviews.append(r.loc[r["order_id"].isin(o["order_id"])])
    if any(f.name == "sample_cabg" for f in folders):
        notes.append(
            "sample_cabg holds every non-delivered order but only a 5.36% random sample of the "
            "delivered ones: unweighted rates over this dataset overstate non-delivery (weight "
            "its delivered orders by 18.65 to estimate full-data rates)"
        )
    if duplicates:
        notes.append(
            f"{duplicates:,} orders appear in more than one folder: kept the copy (with its items "
            "and reviews) from the first folder (full/, then sample_* in name order)"
        )
    return tuple(
        pd.concat(frames, ignore_index=True).rename(columns={"order_id": "order_ref"})
        for frames in (orders, items, reviews)
    )


def _map_orders(raw: pd.DataFrame, log: DropLog) -> pd.DataFrame:
    o = raw.copy()
    o["order_time"] = parse_times(o["order_purchase_timestamp"])
    o["promised_eta"] = parse_times(o["order_estimated_delivery_date"])
    o["actual_delivery_time"] = parse_times(o["order_delivered_customer_date"])
    o = log.drop(o, o["order_time"].isna(), "order_purchase_timestamp missing or unparsable")
    o = log.drop(o, o["promised_eta"].isna(), "order_estimated_delivery_date missing or unparsable")
    o = log.drop(
        o,
        unparsable(o["order_delivered_customer_date"], o["actual_delivery_time"]),
        "order_delivered_customer_date unparsable",
    )
    o = log.drop(
        o,
        o["customer_state"].isna() | o["customer_unique_id"].isna(),
        "customer not in the customers file (no region)",
    )
    o = log.drop(o, o["promised_eta"] < o["order_time"], "estimated delivery date before purchase")
    o = log.drop(o, o["actual_delivery_time"] < o["order_time"], "delivered before purchase")
    return o


def _finish_orders(o: pd.DataFrame, lines: pd.DataFrame, log: DropLog) -> pd.DataFrame:
    """Attach basket and store (seller of the first item line); drop orders with no lines."""
    per_order = lines.groupby("order_ref", sort=False).agg(
        item_count=("line", "size"),
        basket_value=("price", "sum"),
        seller_id=("seller_id", "first"),
        sellers=("seller_id", "nunique"),
    )
    o = o.merge(per_order, left_on="order_ref", right_index=True, how="left")
    no_lines = o["item_count"].isna()
    canceled = int((no_lines & o["order_status"].isin(CANCELED_STATUSES)).sum())
    o = log.drop(o, no_lines, "no item lines, so no seller, store or basket")
    if canceled:
        log.notes.append(
            f"{canceled:,} of the orders dropped for having no item lines were canceled or "
            "unavailable: cancellation rates on this dataset are understated"
        )
    multi = int((o["sellers"] > 1).sum())
    if multi:
        log.notes.append(f"{multi:,} orders have items from several sellers: store = first line's")
    o["item_count"] = o["item_count"].astype("int64")
    return o


def import_olist(src: Path | str, out: Path | str, *, overwrite: bool = False) -> Manifest:
    """Map the Olist folder ``src`` to a canonical dataset at ``out`` and return its manifest."""
    src = Path(src)
    folders = _order_folders(src)
    writer = DatasetWriter(out, overwrite=overwrite)  # fails early if --out exists
    notes: list[str] = []
    raw_orders, raw_items, raw_reviews = _load(folders, notes)
    full = src / "full"
    products = read_csv(
        find_csv(full, "olist_products_dataset"), ("product_id", "product_category_name")
    )
    sellers = read_csv(find_csv(full, "olist_sellers_dataset"), ("seller_id", "seller_state"))
    translation = read_csv(
        find_csv(full, "product_category_name_translation"),
        ("product_category_name", "product_category_name_english"),
    )

    log = DropLog("orders")
    o = _map_orders(raw_orders, log)
    lines, line_log = build_lines(raw_items.loc[raw_items["order_ref"].isin(o["order_ref"])])
    o = _finish_orders(o, lines, log)
    lines = lines.loc[lines["order_ref"].isin(o["order_ref"])]
    stores, skus, categories = build_stores_skus(lines, o, products, sellers, translation, notes)

    ratings, rating_log = build_ratings(raw_reviews, o)
    items = finish_items(lines, o)
    for key, text in (("user_id", "customer_unique_id"), ("store_id", "seller_id")):
        o[key] = stable_ids(o[text])
        check_unique_ids(o[text], o[key], f"Olist {text}")
    o["category"] = o["seller_id"].map(categories)
    o["region"] = o["customer_state"].str.strip()
    o["eta_model"] = None
    o = add_cohorts(o)
    canceled = o["order_status"].isin(CANCELED_STATUSES)
    nulled = int((canceled & o["actual_delivery_time"].notna()).sum())
    if nulled:
        notes.append(f"{nulled:,} canceled/unavailable orders carry a delivery date: set to null")
    o.loc[canceled, "actual_delivery_time"] = pd.NaT
    open_orders = int((~canceled & o["actual_delivery_time"].isna()).sum())
    notes.append(
        f"{open_orders:,} orders are neither canceled nor delivered (or have no delivery date): "
        "actual_delivery_time null, canceled_flag False"
    )
    o["order_id"] = stable_ids(o["order_ref"])
    check_unique_ids(o["order_ref"], o["order_id"], "Olist order_id")
    deliveries = o[["order_id", "order_time", "actual_delivery_time"]].assign(
        canceled_flag=canceled.to_numpy()
    )
    for column in MISSING_COLUMNS["deliveries"]:
        deliveries[column] = None
    notes.extend(log.notes + line_log + rating_log)
    notes.append("prices and basket_value are Brazilian reais as recorded (no USD conversion)")

    start, end = date_range(o["order_time"])
    manifest = Manifest(
        source="olist",
        description=DESCRIPTION,
        currency="BRL",
        start=start,
        end=end,
        missing_tables=list(MISSING_TABLES),
        missing_columns={k: list(v) for k, v in MISSING_COLUMNS.items()},
        notes=notes,
    )
    with writer:
        write_table(writer, "stores", stores)
        write_table(writer, "skus", skus)
        write_table(writer, "orders", o)
        write_table(writer, "deliveries", deliveries)
        write_table(writer, "items", items)
        write_table(writer, "ratings", ratings)
        writer.commit(manifest)
    return manifest
