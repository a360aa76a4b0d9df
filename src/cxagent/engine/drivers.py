"""Operational drivers per daypart window and market cell: what detection watches beside CX.

The root-cause hypotheses name mechanisms whose drivers are recorded per order: the batched
share, merchant prep time, the courier's wait for an unbatched order (courier supply) and
the promised delivery time (the ETA model); courier supply is also recorded per region and
15-minute interval (the supply table's couriers on shift). Summed per window x region x
category on the engine, they are a few thousand rows however large the data;
``cxagent.incidents.drivers`` rolls them up and tests them. A column or table the dataset
lacks (its manifest says so) sums to null, and its driver is not watched.
"""

from __future__ import annotations

import datetime as dt

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from cxagent.engine.connection import Engine
from cxagent.engine.facts import since_for_days, window_of
from cxagent.engine.portable import seconds_between

KEYS = ("window", "region", "category")
# sums per cell: delivered orders, and over them batched orders, promised seconds, prep seconds
# and how many have one; over the unbatched ones courier wait seconds and how many have one
# (a null prep or wait is left out of its mean, not read as zero); the cell's region's couriers
# on shift summed over the window's supply intervals, and how many intervals
DRIVER_SUMS = (
    "delivered",
    "batched",
    "promised_s",
    "prep_s",
    "prep_n",
    "unbatched",
    "wait_s",
    "wait_n",
    "couriers",
    "intervals",
)


def build_driver_windows(engine: Engine, *, days: int | None = None) -> pa.Table | None:
    """Driver sums per window x region x category of the data's last ``days`` days (every
    day when None); None without deliveries."""
    if not engine.has("deliveries"):
        return None
    o = engine.table("orders")
    d = engine.table("deliveries")
    since = since_for_days(engine, days)
    if since is not None:
        o = o.filter(o.order_time >= ibis.literal(since))
        d = d.filter(d.order_time >= ibis.literal(since))
    f = o.inner_join(d.drop("order_time"), "order_id")
    has = engine.manifest.has
    zero, one = ibis.literal(0).cast("float64"), ibis.literal(1).cast("float64")
    null = ibis.null("float64")
    delivered = ~f.canceled_flag
    batched = f.batched_flag.fill_null(False)
    prep, wait = (f[c].cast("float64") for c in ("merchant_prep_time_s", "dasher_wait_s"))
    has_prep = has("deliveries", "merchant_prep_time_s")
    has_wait = has("deliveries", "dasher_wait_s")

    def when(cond: ibis.ir.BooleanValue, x: ibis.ir.Value) -> ibis.ir.Value:
        return ibis.ifelse(cond, x, zero)

    per_order = f.select(
        "region",
        "category",
        window=window_of(engine.backend, f.order_time.truncate("h")),
        delivered=when(delivered, one),
        batched=when(delivered & batched, one) if has("deliveries", "batched_flag") else null,
        prep_s=when(delivered & prep.notnull(), prep) if has_prep else null,
        prep_n=when(delivered & prep.notnull(), one) if has_prep else null,
        unbatched=when(delivered & ~batched, one),
        wait_s=when(delivered & ~batched & wait.notnull(), wait) if has_wait else null,
        wait_n=when(delivered & ~batched & wait.notnull(), one) if has_wait else null,
        promised_s=when(
            delivered, seconds_between(engine.backend, f.promised_eta, f.order_time)
        ).cast("float64")
        if has("orders", "promised_eta")
        else null,
    )
    sums = [k for k in DRIVER_SUMS if k not in ("couriers", "intervals")]
    grouped = per_order.group_by(list(KEYS)).aggregate(**{k: per_order[k].sum() for k in sums})
    grouped = _with_couriers(engine, grouped, since)
    table = engine.to_arrow(grouped)
    return table if table.num_rows else None


def _with_couriers(engine: Engine, cells: ir.Table, since: dt.datetime | None) -> ir.Table:
    """Each cell with its region's couriers on shift summed over the window's 15-minute supply
    intervals, and their count (every category of a region carries the region's: the
    courier pool is regional, and a roll-up's ratio is then a mean over its regions)."""
    if not (engine.has("supply") and engine.manifest.has("supply", "dashers_on_shift")):
        null = ibis.null("float64")
        return cells.mutate(couriers=null, intervals=null)
    s = engine.table("supply")
    if since is not None:
        s = s.filter(s.interval_start >= ibis.literal(since))
    supply = s.group_by(
        supply_region=s.region,
        supply_window=window_of(engine.backend, s.interval_start.truncate("h")),
    ).aggregate(
        couriers=s.dashers_on_shift.cast("float64").sum(),
        intervals=s.dashers_on_shift.count().cast("float64"),
    )
    j = cells.left_join(
        supply, (cells.region == supply.supply_region) & (cells.window == supply.supply_window)
    )
    return j.select(*cells.columns, "couriers", "intervals")
