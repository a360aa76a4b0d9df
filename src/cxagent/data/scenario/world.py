"""The static world of a scenario: regions, stores, SKUs and demand shapes.

Everything here is drawn once from the scenario seed and shared by every day, so days can be
generated independently (and in parallel) and a scenario regenerates bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxagent.data.scenario.spec import ScenarioSpec

# Reference region parameters: demand share, courier-supply tightness (demand-weighted mean
# utilisation of dashers on shift), driving speed (mph) and mean store-to-door distance (mi).
REGION_PARAMS: dict[str, tuple[float, float, float, float]] = {
    "SF": (0.26, 0.75, 13.0, 2.2),
    "NYC": (0.28, 0.68, 10.0, 1.6),
    "LA": (0.20, 0.68, 18.0, 3.4),
    "CHI": (0.14, 0.66, 16.0, 2.8),
    "SEA": (0.12, 0.64, 15.0, 2.6),
}
CATEGORY_SHARE = {"grocery": 0.45, "convenience": 0.35, "retail": 0.20}
BASE_PREP_S = {"grocery": 840.0, "convenience": 420.0, "retail": 600.0}
EXTRA_ITEMS_MEAN = {"grocery": 5.0, "convenience": 1.6, "retail": 0.8}
SKU_COUNT = {"grocery": 600, "convenience": 300, "retail": 400}
SKU_PRICE_MEDIAN = {"grocery": 4.0, "convenience": 3.5, "retail": 16.0}
FRAGILE_SHARE = {"grocery": 0.18, "convenience": 0.08, "retail": 0.10}
ORDERS_PER_STORE_DAY = 110.0
WEEKLY = np.array([0.94, 0.92, 0.96, 1.00, 1.10, 1.12, 1.04])  # Monday .. Sunday

# Hourly demand shape: quiet nights, breakfast, lunch and a dinner peak at 18:00-20:00.
_HOURLY = np.array(
    [
        0.6,
        0.35,
        0.2,
        0.15,
        0.15,
        0.3,
        0.8,
        1.6,
        2.3,
        2.2,
        2.4,
        3.6,
        4.6,
        4.2,
        3.0,
        2.7,
        3.4,
        4.8,
        6.4,
        6.6,
        5.4,
        3.4,
        2.0,
        1.1,
    ]
)
_GROCERY_TILT = np.array([1.0] * 16 + [1.15, 1.25, 1.3, 1.3, 1.15] + [1.0] * 3)
ACTIVE_MIN_PER_ORDER = 38.0  # courier minutes per order, used to size supply
SCHEDULE_EXPONENT = 0.88  # scheduled dashers follow demand**0.88: peaks run hotter


@dataclass
class World:
    regions: list[str]
    categories: list[str]
    region_share: np.ndarray
    tightness: np.ndarray
    speed_mph: np.ndarray
    distance_mi: np.ndarray
    stores: pd.DataFrame  # store_id, region, category, name, + internals
    store_region: np.ndarray  # region index per store
    store_category: np.ndarray  # category index per store
    store_weight: np.ndarray  # share of all orders
    store_prep_s: np.ndarray
    store_instock: np.ndarray  # store-level in-stock quality multiplier
    skus: pd.DataFrame
    sku_offsets: np.ndarray  # first sku index of each category
    sku_cum_pop: list[np.ndarray]  # cumulative popularity per category
    sku_price: np.ndarray
    sku_fragile: np.ndarray
    sku_instock: np.ndarray
    bin_profile: np.ndarray  # (n_categories, 96) share of a day's orders per 15 min
    user_pool: np.ndarray  # users per region

    @property
    def n_regions(self) -> int:
        return len(self.regions)


def _region_params(spec: ScenarioSpec, rng: np.random.Generator) -> np.ndarray:
    rows = []
    for r in spec.regions:
        if r in REGION_PARAMS:
            rows.append(REGION_PARAMS[r])
        else:  # an unknown market gets plausible parameters from the seed
            rows.append(
                (
                    rng.uniform(0.08, 0.25),
                    rng.uniform(0.62, 0.78),
                    rng.uniform(10, 18),
                    rng.uniform(1.5, 3.5),
                )
            )
    return np.array(rows)


def build_world(spec: ScenarioSpec) -> World:
    rng = np.random.default_rng([spec.seed, 0xC0FFEE])
    params = _region_params(spec, rng)
    share = params[:, 0] / params[:, 0].sum()
    cats = list(spec.categories)
    cat_share = np.array([CATEGORY_SHARE[c] for c in cats])
    cat_share /= cat_share.sum()

    rows = []
    next_id = 1000
    for ri, region in enumerate(spec.regions):
        for ci, cat in enumerate(cats):
            n = max(
                3, round(spec.orders_per_day * share[ri] * cat_share[ci] / ORDERS_PER_STORE_DAY)
            )
            vol = rng.lognormal(0.0, 0.6, n)
            vol = vol / vol.sum() * share[ri] * cat_share[ci]
            prep = BASE_PREP_S[cat] * rng.lognormal(0.0, 0.25, n)
            quality = np.clip(rng.normal(1.0, 0.012, n), 0.95, 1.02)
            for k in range(n):
                rows.append(
                    (
                        next_id,
                        region,
                        cat,
                        f"{region} {cat} #{k + 1}",
                        ri,
                        ci,
                        vol[k],
                        prep[k],
                        quality[k],
                    )
                )
                next_id += 1
    stores = pd.DataFrame(
        rows,
        columns=[
            "store_id",
            "region",
            "category",
            "name",
            "ri",
            "ci",
            "weight",
            "prep_s",
            "instock",
        ],
    )

    sku_rows = []
    offsets, cum_pop, prices, fragile, instock = [], [], [], [], []
    sid = 1
    for cat in cats:
        n = SKU_COUNT[cat]
        offsets.append(sid - 1)
        pop = 1.0 / np.arange(1, n + 1) ** 1.05
        rng.shuffle(pop)
        cum_pop.append(np.cumsum(pop / pop.sum()))
        price = np.round(SKU_PRICE_MEDIAN[cat] * rng.lognormal(0.0, 0.55, n), 2) + 0.49
        frag = rng.random(n) < FRAGILE_SHARE[cat]
        base = np.clip(rng.beta(60.0, 1.0, n), 0.85, 0.999)
        prices.append(price)
        fragile.append(frag)
        instock.append(base)
        for k in range(n):
            sku_rows.append((sid, cat, f"{cat} sku {k + 1}", float(price[k]), bool(frag[k])))
            sid += 1
    skus = pd.DataFrame(
        sku_rows, columns=["sku_id", "category", "name", "unit_price", "fragile_flag"]
    )

    hourly = np.repeat(_HOURLY / 4.0, 4)
    profiles = []
    for cat in cats:
        shape = hourly * (np.repeat(_GROCERY_TILT, 4) if cat == "grocery" else 1.0)
        profiles.append(shape / shape.sum())

    return World(
        regions=list(spec.regions),
        categories=cats,
        region_share=share,
        tightness=params[:, 1],
        speed_mph=params[:, 2],
        distance_mi=params[:, 3],
        stores=stores,
        store_region=stores["ri"].to_numpy(np.int64),
        store_category=stores["ci"].to_numpy(np.int64),
        store_weight=stores["weight"].to_numpy() / stores["weight"].sum(),
        store_prep_s=stores["prep_s"].to_numpy(),
        store_instock=stores["instock"].to_numpy(),
        skus=skus,
        sku_offsets=np.array(offsets, dtype=np.int64),
        sku_cum_pop=cum_pop,
        sku_price=np.concatenate(prices),
        sku_fragile=np.concatenate(fragile),
        sku_instock=np.concatenate(instock),
        bin_profile=np.array(profiles),
        user_pool=np.maximum(1000, (spec.orders_per_day * share * 4).astype(np.int64)),
    )


def expected_bin_demand(world: World, orders_per_day: float) -> np.ndarray:
    """Expected orders per (region, 15-minute bin) on an average day."""
    cat_mass = np.zeros((world.n_regions, len(world.categories)))
    np.add.at(cat_mass, (world.store_region, world.store_category), world.store_weight)
    return orders_per_day * cat_mass @ world.bin_profile


def scheduled_dashers(world: World, orders_per_day: float) -> np.ndarray:
    """Dashers scheduled per (region, bin): demand**0.88, scaled to each region's tightness."""
    needed = expected_bin_demand(world, orders_per_day) * ACTIVE_MIN_PER_ORDER / 15.0
    shaped = needed**SCHEDULE_EXPONENT
    util = needed / shaped
    mean_util = (util * needed).sum(axis=1) / needed.sum(axis=1)
    return shaped * (mean_util / world.tightness)[:, None]
