"""Olist item lines, stores, SKUs and ratings: the mapping rules of ``olist`` by table.

Frames here carry Olist's text ids (``order_ref``, ``seller_id``, ``product_id``); int64 keys
are BLAKE2b hashes of them (``common.stable_ids``), so every table derives the same key.
"""

from __future__ import annotations

import pandas as pd

from cxagent.data.cohorts import CATEGORIES
from cxagent.data.importers.common import (
    DropLog,
    check_unique_ids,
    parse_times,
    stable_ids,
)

# Olist English category names (untranslated ones keep their Portuguese name) to the three
# canonical categories: food and drink -> grocery; everyday personal care -> convenience;
# everything else, unknown and uncategorised products included -> retail.
GROCERY_CATEGORIES = frozenset({"food", "food_drink", "drinks"})
CONVENIENCE_CATEGORIES = frozenset({"health_beauty", "perfumery", "diapers_and_hygiene"})
# Breaks or spoils easily: perishables, flowers, glass and crockery, perfume bottles.
FRAGILE_CATEGORIES = frozenset(
    {"food", "food_drink", "drinks", "flowers", "housewares", "la_cuisine", "perfumery"}
)
_RANK = {c: i for i, c in enumerate(CATEGORIES)}


def canonical_category(name: object) -> str:
    """grocery / convenience / retail for an Olist (English) product category."""
    if name in GROCERY_CATEGORIES:
        return "grocery"
    if name in CONVENIENCE_CATEGORIES:
        return "convenience"
    return "retail"


def build_lines(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Clean item lines (one unit each): numeric line number and price, duplicates dropped."""
    log = DropLog("item lines")
    lines = raw.copy()
    lines["line"] = pd.to_numeric(lines["order_item_id"], errors="coerce")
    lines["price"] = pd.to_numeric(lines["price"], errors="coerce")
    lines = log.drop(
        lines,
        lines["line"].isna() | lines["product_id"].isna() | lines["seller_id"].isna(),
        "order_item_id, product_id or seller_id missing or not a number",
    )
    lines = log.drop(lines, lines["price"].isna() | (lines["price"] < 0), "price missing or < 0")
    lines = log.drop(
        lines, lines.duplicated(["order_ref", "line"]), "order_item_id repeated within an order"
    )
    lines["line"] = lines["line"].astype("int64")
    return lines.sort_values(["order_ref", "line"], ignore_index=True), log.notes


def build_stores_skus(
    lines: pd.DataFrame,
    orders: pd.DataFrame,
    products: pd.DataFrame,
    sellers: pd.DataFrame,
    translation: pd.DataFrame,
    notes: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Stores (sellers that are an order's store), SKUs (products ordered) and the category
    of each seller (the majority category of its item lines; ties: grocery, convenience,
    retail). ``lines`` gains ``source_category`` and ``category``."""
    english = dict(
        zip(
            translation["product_category_name"].str.strip(),
            translation["product_category_name_english"].str.strip(),
            strict=True,
        )
    )
    portuguese = products.drop_duplicates("product_id").set_index("product_id")
    pt = lines["product_id"].map(portuguese["product_category_name"].str.strip())
    unknown = int((~lines["product_id"].isin(portuguese.index)).sum())
    if unknown:
        notes.append(f"{unknown:,} item lines name a product not in the products file: retail")
    source = pt.map(lambda c: english.get(c, c) if isinstance(c, str) else None)
    lines["source_category"] = source
    lines["category"] = source.map(canonical_category, na_action=None)

    counts = lines.groupby(["seller_id", "category"]).size().rename("n").reset_index()
    counts["rank"] = counts["category"].map(_RANK)
    counts = counts.sort_values(["seller_id", "n", "rank"], ascending=[True, False, True])
    categories = counts.drop_duplicates("seller_id").set_index("seller_id")["category"]

    state = sellers.drop_duplicates("seller_id").set_index("seller_id")["seller_state"]
    stores = pd.DataFrame({"seller_id": sorted(orders["seller_id"].unique())})
    stores["region"] = stores["seller_id"].map(state.str.strip())
    no_state = int(stores["region"].isna().sum())
    if no_state:
        notes.append(f"{no_state:,} sellers are not in the sellers file: store region 'unknown'")
    stores["region"] = stores["region"].fillna("unknown")
    stores["store_id"] = stable_ids(stores["seller_id"])
    check_unique_ids(stores["seller_id"], stores["store_id"], "Olist seller_id")
    stores["category"] = stores["seller_id"].map(categories)
    stores["name"] = stores["seller_id"]

    skus = lines.groupby("product_id", as_index=False).agg(
        unit_price=("price", "median"),
        category=("category", "first"),
        source_category=("source_category", "first"),
    )
    skus["sku_id"] = stable_ids(skus["product_id"])
    check_unique_ids(skus["product_id"], skus["sku_id"], "Olist product_id")
    skus["name"] = skus["product_id"]
    skus["fragile_flag"] = skus["source_category"].isin(FRAGILE_CATEGORIES)
    return stores, skus, categories


def finish_items(lines: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """Canonical item lines: one unit per Olist line at its price; no fulfilment outcomes."""
    items = lines.merge(orders[["order_ref", "order_time"]], on="order_ref", how="inner")
    items["order_id"] = stable_ids(items["order_ref"])
    items["item_id"] = stable_ids(items["order_ref"] + ":" + items["line"].astype(str))
    items["sku_id"] = stable_ids(items["product_id"])
    items["ordered_qty"] = 1
    items["unit_price"] = items["price"]
    for column in ("substituted_flag", "missing_flag", "refund_amount"):
        items[column] = None
    return items


def build_ratings(raw: pd.DataFrame, orders: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Ratings of imported orders. A review dated the purchase day but before the purchase
    time (review dates are at midnight) is moved to the purchase time; a review dated before
    the purchase day is dropped."""
    log = DropLog("reviews")
    r = raw.loc[raw["order_ref"].isin(orders["order_ref"])].copy()
    r = log.drop(r, r.duplicated(), "exact duplicate review rows")
    r["stars"] = pd.to_numeric(r["review_score"], errors="coerce")
    r = log.drop(r, ~r["stars"].isin([1, 2, 3, 4, 5]), "review_score missing or outside 1-5")
    r["rating_time"] = parse_times(r["review_creation_date"])
    r = log.drop(r, r["rating_time"].isna(), "review_creation_date missing or unparsable")
    r = r.merge(orders[["order_ref", "order_time"]], on="order_ref", how="inner")
    early = r["rating_time"] < r["order_time"]
    same_day = early & (r["rating_time"] >= r["order_time"].dt.normalize())
    if same_day.any():
        r.loc[same_day, "rating_time"] = r.loc[same_day, "order_time"]
        log.notes.append(
            f"{int(same_day.sum()):,} reviews dated the purchase day but before the purchase "
            "time (review dates are at midnight): rating_time set to order_time"
        )
    r = log.drop(r, r["rating_time"] < r["order_time"], "review dated before the purchase day")
    keys = ["order_ref", "rating_time", "stars"]
    if "review_id" in r.columns:
        keys.append("review_id")
    r = r.sort_values(keys, ignore_index=True)
    rank = r.groupby("order_ref").cumcount().astype(str)
    r["rating_id"] = stable_ids(r["order_ref"] + "#" + rank)
    r["order_id"] = stable_ids(r["order_ref"])
    r["stars"] = r["stars"].astype("int64")
    text = r.get("review_comment_message")
    if text is None:
        r["free_text"] = None
    else:
        stripped = text.str.strip()
        r["free_text"] = stripped.where(stripped != "")
    blank = int(r["free_text"].isna().sum())
    log.notes.append(
        f"free_text is null for {blank:,} of {len(r):,} ratings (no comment, or no comment "
        "column in the source file)"
    )
    return r, log.notes
