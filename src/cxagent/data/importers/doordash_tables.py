"""DoorDash stores and courier supply: the mapping rules of ``doordash`` by table."""

from __future__ import annotations

import pandas as pd

# store_primary_category (a cuisine in 2015) to the three canonical categories. Shops that
# sell packaged goods -> grocery; convenience stores and every restaurant or prepared-food
# category (ready to eat, ordered for now) -> convenience. No 2015 category is retail.
GROCERY_CATEGORIES = frozenset({"grocery", "alcohol", "cheese"})
RETAIL_CATEGORIES: frozenset[str] = frozenset()
DEFAULT_CATEGORY = "convenience"
SUPPLY_COLUMNS = {
    "total_onshift_dashers": "dashers_on_shift",
    "total_busy_dashers": "busy_dashers",
    "total_outstanding_orders": "outstanding_orders",
}


def canonical_category(cuisine: object) -> str:
    """grocery / convenience / retail for a DoorDash store_primary_category."""
    if not isinstance(cuisine, str):
        return DEFAULT_CATEGORY
    name = cuisine.strip().lower()
    if name in GROCERY_CATEGORIES:
        return "grocery"
    if name in RETAIL_CATEGORIES:
        return "retail"
    return DEFAULT_CATEGORY


def _modal(df: pd.DataFrame, column: str) -> tuple[pd.Series, int]:
    """Most frequent non-null ``column`` per store (ties: smallest value) and the number of
    stores with more than one value."""
    grouped = df.dropna(subset=[column]).groupby(["store_id", column]).size()
    counts = grouped.rename("n").reset_index()
    several = int((counts.groupby("store_id").size() > 1).sum())
    counts = counts.sort_values(["store_id", "n", column], ascending=[True, False, True])
    return counts.drop_duplicates("store_id").set_index("store_id")[column], several


def build_stores(d: pd.DataFrame, notes: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    """One row per store: its most frequent market and cuisine. Returns the stores and the
    canonical category per store_id (orders take their store's category)."""
    region, multi_market = _modal(d, "region")
    cuisine, multi_cuisine = _modal(d, "store_primary_category")
    stores = pd.DataFrame({"store_id": sorted(d["store_id"].unique())})
    stores["region"] = stores["store_id"].map(region)
    stores["cuisine"] = stores["store_id"].map(cuisine)
    stores["category"] = stores["cuisine"].map(canonical_category, na_action=None)
    stores["name"] = [
        f"store {sid} ({c if isinstance(c, str) else 'cuisine unknown'})"
        for sid, c in zip(stores["store_id"], stores["cuisine"], strict=True)
    ]
    no_cuisine = int(d["store_primary_category"].isna().sum())
    unknown = int(stores["cuisine"].isna().sum())
    notes.append(
        f"{multi_market:,} stores appear in several markets: stores.region = the most frequent "
        "(orders keep their own market)"
    )
    notes.append(
        f"{multi_cuisine:,} stores have several store_primary_category values: the most "
        f"frequent is used; {no_cuisine:,} orders lack the category and take their store's; "
        f"{unknown:,} stores have none at all: {DEFAULT_CATEGORY}"
    )
    categories = stores.set_index("store_id")["category"]
    return stores, categories


def build_supply(d: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Mean supply counts of the orders placed per region and 15-minute interval, rounded.

    Orders without the counts, or with a negative count, are left out of the means. Rows
    with more busy than on-shift dashers are kept: a known source fault, not a shortage."""
    counts = d[["region", "order_time", *SUPPLY_COLUMNS]].rename(columns=SUPPLY_COLUMNS)
    values = counts[list(SUPPLY_COLUMNS.values())]
    absent = values.isna().any(axis=1)
    negative = (values < 0).any(axis=1) & ~absent
    notes.append(
        f"supply: {int(absent.sum()):,} orders lack the supply counts and {int(negative.sum()):,} "
        "have a negative count: left out of the supply means"
    )
    valid = counts.loc[~(absent | negative).to_numpy()].copy()
    faults = int((valid["busy_dashers"] > valid["dashers_on_shift"]).sum())
    valid["interval_start"] = valid["order_time"].dt.floor("15min")
    supply = valid.groupby(["region", "interval_start"], as_index=False)[
        list(SUPPLY_COLUMNS.values())
    ].mean()
    for column in SUPPLY_COLUMNS.values():
        supply[column] = supply[column].round().astype("int64")
    agg_faults = int((supply["busy_dashers"] > supply["dashers_on_shift"]).sum())
    notes.append(
        f"data-quality finding (not a dasher shortage): {faults:,} of {len(valid):,} orders "
        f"report more busy than on-shift dashers, and so do {agg_faults:,} of {len(supply):,} "
        "supply intervals; kept as recorded"
    )
    return supply
