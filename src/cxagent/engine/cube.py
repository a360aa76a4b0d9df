"""The slice cube: sufficient statistics per hour for every cohort cut up to three dimensions.

Cohort dimensions are store, region, category, daypart and basket size. Two functional
dependencies make most of the 26 combinations of up to three of them copies of each other:
a store lies in one region and one category, and an hour lies in one daypart. So the cube
computes the ten distinct grouping sets below, keeps ``daypart`` on every hourly row, and
answers any combination (e.g. grocery + SF + dinner = the region x category set, dinner hours)
exactly. Leaves (hour x store x basket size) are aggregated from the orders once; sets with
the store roll up from the leaves, the others from the leaves summed over stores.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cxagent.engine.connection import Engine
from cxagent.engine.facts import (
    LEAF_DIMS,
    SQUARE_FIELDS,
    daypart_of,
    order_facts,
    since_for_days,
    window_of,
)
from cxagent.metrics.definitions import STAT_FIELDS

SUM_FIELDS = (*STAT_FIELDS, *SQUARE_FIELDS)
SET_DIMS = ("store_id", "region", "category", "basket_size")  # daypart rides on the hour
IMPLIED_BY_STORE = frozenset({"region", "category"})
MAX_DIMS = 3


def grouping_sets(
    max_dims: int = MAX_DIMS, implied_by_store: frozenset[str] = IMPLIED_BY_STORE
) -> list[tuple[str, ...]]:
    """Distinct grouping sets: combinations of SET_DIMS without dims implied by store."""
    sets = []
    for k in range(max_dims + 1):
        for combo in itertools.combinations(SET_DIMS, k):
            if "store_id" in combo and implied_by_store & set(combo):
                continue
            sets.append(combo)
    return sets


def implied_by_store(leaves: ir.Table) -> frozenset[str]:
    """Which of region and category each store has exactly one of, in this data (a real
    source may file an order under the customer's region rather than the store's)."""
    per_store = leaves.group_by("store_id").aggregate(
        region=leaves.region.nunique(), category=leaves.category.nunique()
    )
    worst = per_store.aggregate(
        region=per_store.region.max(), category=per_store.category.max()
    ).to_pyarrow()
    return frozenset(k for k in ("region", "category") if (worst.column(k)[0].as_py() or 0) <= 1)


def level_name(dims: tuple[str, ...]) -> str:
    return "+".join(dims) if dims else "all"


def leaves_expr(facts: ir.Table) -> ir.Table:
    """Hour x store x basket size (x region x category), with the hour's daypart."""
    # every order is either delivered or canceled: one sum fewer over all the orders
    summed = [f for f in SUM_FIELDS if f != "canceled"]
    leaves = facts.group_by(["hour", *LEAF_DIMS]).aggregate(**{f: facts[f].sum() for f in summed})
    return leaves.mutate(canceled=leaves.orders - leaves.delivered, daypart=daypart_of(leaves.hour))


def cube_expr(
    leaves: ir.Table,
    sets: list[tuple[str, ...]],
    implied: frozenset[str] = frozenset(),
    coarse: ir.Table | None = None,
    time: str = "hour",
) -> ir.Table:
    """Union of the roll-ups of ``leaves`` to each grouping set (rolled-up dims are null).

    A set that with the dims ``implied`` by the store is every leaf dim (store x basket
    size) is the leaves themselves: no roll-up. Sets without the store roll up from
    ``coarse`` when given (``coarse_expr``: a few thousand rows an hour fewer than leaves).
    ``time`` is the leaves' time column: ``hour``, or ``window`` (daypart windows).
    """
    parts = []
    for dims in sets:
        source = coarse if coarse is not None and "store_id" not in dims else leaves
        if set(dims) | implied == set(LEAF_DIMS):
            agg = leaves.select(time, "daypart", *dims, *SUM_FIELDS)
        else:
            agg = source.group_by([time, "daypart", *dims]).aggregate(
                **{f: source[f].sum() for f in SUM_FIELDS}
            )
        fill = {d: ibis.null(leaves[d].type()) for d in SET_DIMS if d not in dims}
        agg = agg.mutate(level=ibis.literal(level_name(dims)), **fill)
        parts.append(agg.select("level", time, "daypart", *SET_DIMS, *SUM_FIELDS))
    return ibis.union(*parts)


def coarse_expr(leaves: ir.Table, time: str = "hour") -> ir.Table:
    """Leaves rolled up over stores: time x region x category x basket size, the finest set
    without the store, from which every other such set rolls up."""
    keys = [time, "daypart", *(d for d in LEAF_DIMS if d != "store_id")]
    return leaves.group_by(keys).aggregate(**{f: leaves[f].sum() for f in SUM_FIELDS})


def missing_fields(table: pa.Table) -> frozenset[str]:
    """Statistics a cube table has no data for (all null), e.g. refunds without items."""
    return frozenset(
        f for f in SUM_FIELDS if table.num_rows and table.column(f).null_count == table.num_rows
    )


@dataclass
class Cube:
    """Materialised hourly cube (an Arrow table) with slice look-ups."""

    table: pa.Table
    implied_by_store: frozenset[str] = IMPLIED_BY_STORE

    @property
    def missing_fields(self) -> frozenset[str]:
        """Statistics the dataset has no data for (all null), e.g. refunds without items."""
        return missing_fields(self.table)

    @property
    def hours(self) -> np.ndarray:
        return np.unique(self.table.column("hour").to_numpy())

    def daily(self) -> pa.Table:
        """The same cube by day: one row per level, slice, day and daypart (the hourly rows
        rolled up; sum over dayparts for the whole day)."""
        t = self.table.append_column(
            "day", pc.floor_temporal(self.table.column("hour"), unit="day")
        )
        keys = ["level", "day", "daypart", *SET_DIMS]
        return (
            t.group_by(keys, use_threads=False)
            .aggregate([(f, "sum") for f in SUM_FIELDS])
            .rename_columns([*keys, *SUM_FIELDS])
        )

    def last_days(self, days: int) -> Cube:
        """The cube restricted to hours in the last ``days`` days of data."""
        hours = self.table.column("hour")
        if not len(hours):
            return self
        last = pc.max(hours).as_py()
        keep = pc.greater(hours, pa.scalar(last - dt.timedelta(days=days), hours.type))
        if pc.all(keep).as_py():  # the data is no longer than that: no copy
            return self
        return Cube(self.table.filter(keep), self.implied_by_store)

    def slice_rows(self, where: Mapping[str, str | int]) -> pa.Table:
        """Hourly rows of one slice, e.g. ``{"region": "SF", "category": "grocery",
        "daypart": "dinner"}``; dims absent from ``where`` are rolled up."""
        dims = tuple(d for d in SET_DIMS if d in where)
        if "store_id" in dims:
            dims = tuple(d for d in dims if d not in self.implied_by_store)
        mask = pc.equal(self.table.column("level"), level_name(dims))
        for key, value in where.items():
            if key in dims or key == "daypart":
                mask = pc.and_(mask, pc.equal(self.table.column(key), value))
        rows = self.table.filter(mask)
        if "store_id" in where:  # a store's region/category must agree with the request
            for key in self.implied_by_store & where.keys():
                if rows.num_rows and not pc.all(pc.equal(rows.column(key), where[key])).as_py():
                    return rows.slice(0, 0)
        return rows.sort_by("hour")


def build_cube(engine: Engine, *, max_dims: int = MAX_DIMS) -> Cube:
    """Aggregate the dataset to the hourly cube (runs on the engine, returns Arrow)."""
    facts = order_facts(engine)
    leaves = engine.materialise("cx_leaves", leaves_expr(facts))
    implied = implied_by_store(leaves)
    coarse = engine.materialise("cx_coarse", coarse_expr(leaves))
    sets = grouping_sets(max_dims, implied)
    table = engine.to_arrow(cube_expr(leaves, sets, implied, coarse))
    return Cube(table, implied)


@dataclass
class WindowCube:
    """The cube summed over daypart windows instead of hours (column ``window``: the absolute
    window id of ``cxagent.incidents.windows``), and the first and last hour it has data for
    (which windows are complete depends on them). What detection reads: about a sixth of the
    hourly cube's rows, and summed on the engine."""

    table: pa.Table
    first_hour: np.datetime64
    last_hour: np.datetime64
    implied_by_store: frozenset[str] = IMPLIED_BY_STORE

    @property
    def missing_fields(self) -> frozenset[str]:
        return missing_fields(self.table)


def build_window_cube(
    engine: Engine, *, days: int | None = None, max_dims: int = MAX_DIMS
) -> WindowCube | None:
    """The window cube of the dataset's last ``days`` days (every day when None: the hours
    after the last hour with orders minus ``days`` days, as ``Cube.last_days`` cuts), summed
    on the engine; only the windows come back. None when there are no orders."""
    since = since_for_days(engine, days)
    leaves = leaves_expr(order_facts(engine, since))
    leaves = engine.materialise(
        "cx_wleaves",
        leaves.group_by(
            [window_of(engine.backend, leaves.hour).name("window"), "daypart", *LEAF_DIMS]
        ).aggregate(
            **{f: leaves[f].sum() for f in SUM_FIELDS},
            first_hour=leaves.hour.min(),
            last_hour=leaves.hour.max(),
        ),
    )
    span = leaves.aggregate(first=leaves.first_hour.min(), last=leaves.last_hour.max())
    first, last_h = (c[0].as_py() for c in span.to_pyarrow().columns)
    if first is None:
        return None
    leaves = leaves.drop("first_hour", "last_hour")
    implied = implied_by_store(leaves)
    coarse = engine.materialise("cx_wcoarse", coarse_expr(leaves, "window"))
    sets = grouping_sets(max_dims, implied)
    table = engine.to_arrow(cube_expr(leaves, sets, implied, coarse, "window"))
    return WindowCube(table, np.datetime64(first, "h"), np.datetime64(last_h, "h"), implied)
