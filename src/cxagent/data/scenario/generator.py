"""Generate a scenario's dataset day by day, with the true effect of every planted cause.

Memory is bounded by one day per worker: each day is drawn, simulated (once for the factual
world and once more per active intervention for its counterfactual), written as Parquet
partitions and dropped. Days are independent given the seed, so they run in parallel.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cxagent.data.cohorts import DAYPART_OF_HOUR, DAYPARTS
from cxagent.data.io import DatasetWriter, write_part
from cxagent.data.scenario.causes import CAUSE_REGISTRY
from cxagent.data.scenario.changelog import change_events, change_id
from cxagent.data.scenario.draws import draw_day
from cxagent.data.scenario.simulate import SupplyPlan, instock_probability, simulate_day
from cxagent.data.scenario.spec import ScenarioSpec
from cxagent.data.scenario.strength import (
    DAY_S,
    active_on_day,
    day_levers,
    in_window,
    in_window_and_scope,
    instock_drop,
)
from cxagent.data.scenario.tables import day_tables
from cxagent.data.scenario.truth import (
    N_DAYPARTS,
    EffectAccumulator,
    cell_index,
    effect_report,
    order_stats,
)
from cxagent.data.scenario.world import World, build_world
from cxagent.data.schema import Manifest

ProgressFn = Callable[[int, int], None]


@dataclass
class _Context:
    spec: ScenarioSpec
    world: World
    supply: SupplyPlan


_CTX: _Context | None = None


def _context(spec: ScenarioSpec) -> _Context:
    global _CTX
    if _CTX is None or _CTX.spec != spec:
        world = build_world(spec)
        _CTX = _Context(spec, world, SupplyPlan.for_world(world, spec.orders_per_day))
    return _CTX


def _write_day_tables(root: Path, day_index: int, tables: dict[str, pa.Table]) -> dict[str, int]:
    counts = {}
    part = f"{day_index:05d}"
    date_columns = {
        "orders": "order_time",
        "deliveries": "order_time",
        "items": "order_time",
        "inventory_events": "event_time",
        "support_events": "ticket_created",
        "ratings": "rating_time",
        "supply": "interval_start",
    }
    for name, table in tables.items():
        counts[name] = table.num_rows
        days = pc.strftime(table.column(date_columns[name]), format="%Y-%m-%d")
        for day in pc.unique(days).to_pylist():
            write_part(root, name, table.filter(pc.equal(days, day)), date=day, part=part)
    return counts


def run_day(
    spec: ScenarioSpec, root: Path, day_index: int
) -> tuple[int, dict[str, int], list[EffectAccumulator | None]]:
    """Generate, write and measure one day; returns row counts and truth accumulators."""
    ctx = _context(spec)
    world = ctx.world
    d = draw_day(spec, world, day_index)
    active = [iv for iv in spec.interventions if active_on_day(spec, iv, day_index)]
    factual = simulate_day(world, ctx.supply, d, day_levers(spec, world, d, active))

    accs: list[EffectAccumulator | None] = []
    if active:
        f_stats = order_stats(d, factual)
        cells = cell_index(world, d)
        t_abs = d.day_index * DAY_S + d.t_s
    for iv in spec.interventions:
        if iv not in active:
            accs.append(None)
            continue
        others = [x for x in active if x is not iv]
        cf = simulate_day(world, ctx.supply, d, day_levers(spec, world, d, others))
        window = in_window(spec, iv, t_abs)
        scope = in_window_and_scope(
            spec,
            world,
            iv,
            t_abs=t_abs,
            region=d.region,
            daypart=d.daypart,
            category=d.category,
            store=d.store,
        )
        acc = EffectAccumulator(world.n_regions * len(world.categories) * N_DAYPARTS)
        acc.add(cells, window, scope, f_stats, order_stats(d, cf))
        accs.append(acc)

    inv_daypart = DAYPART_OF_HOUR[(d.inv_t_s // 3600).astype(np.int64)]
    inv_drop = instock_drop(
        spec,
        world,
        active,
        t_abs=d.day_index * DAY_S + d.inv_t_s,
        store=d.inv_store,
        daypart=inv_daypart,
    )
    p_events = instock_probability(world, d.inv_sku, d.inv_store, inv_daypart, inv_drop)
    tables = day_tables(world, d, factual, instock_events=p_events)
    counts = _write_day_tables(root, day_index, tables)
    return day_index, counts, accs


def _run_day_star(
    args: tuple[ScenarioSpec, Path, int],
) -> tuple[int, dict[str, int], list[EffectAccumulator | None]]:
    return run_day(*args)


def generate(
    spec: ScenarioSpec,
    out: Path | str,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Write the scenario's dataset and truth.json to ``out``; returns the truth document."""
    workers = workers or min(2, os.cpu_count() or 1)
    ctx = _context(spec)
    world = ctx.world
    totals: dict[str, int] = {}
    accs: list[EffectAccumulator | None] = [None] * len(spec.interventions)
    with DatasetWriter(out, overwrite=overwrite) as writer:
        writer.write("stores", world.stores[["store_id", "region", "category", "name"]])
        writer.write("skus", world.skus)
        writer.write("change_events", change_events(spec, world))
        jobs = [(spec, writer.tmp, day) for day in range(spec.days)]
        if workers > 1 and spec.days > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_run_day_star, jobs)
                _collect(results, totals, accs, spec.days, progress)
        else:
            _collect(map(_run_day_star, jobs), totals, accs, spec.days, progress)
        truth = _truth(spec, world, accs, totals)
        writer.write_json("truth.json", truth)
        writer.commit(
            Manifest(
                source=f"scenario:{spec.name}",
                description=f"Generated by cxagent from scenario '{spec.name}' (seed {spec.seed}).",
                start=str(spec.start),
                end=str(spec.start + dt.timedelta(days=spec.days - 1)),
            )
        )
    return truth


def _collect(
    results: Any,
    totals: dict[str, int],
    accs: list[EffectAccumulator | None],
    n: int,
    progress: ProgressFn | None,
) -> None:
    for done, (_, counts, day_accs) in enumerate(results, start=1):
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        for i, a in enumerate(day_accs):
            if a is None:
                continue
            if accs[i] is None:
                accs[i] = a
            else:
                accs[i].merge(a)  # type: ignore[union-attr]
        if progress:
            progress(done, n)


def _truth(
    spec: ScenarioSpec, world: World, accs: list[EffectAccumulator | None], totals: dict[str, int]
) -> dict[str, Any]:
    causes = []
    for i, (iv, acc) in enumerate(zip(spec.interventions, accs, strict=True)):
        entry: dict[str, Any] = {
            "id": f"iv-{i + 1}",
            "cause": iv.cause,
            "scope": iv.scope.label(),
            "start": iv.start.isoformat(),
            "end": iv.end.isoformat() if iv.end else None,
            "magnitude": iv.magnitude,
            "logged": iv.logged,
            "change_id": change_id(i) if iv.logged else None,
            "parameters": dict(
                zip(
                    ("before", "after"),
                    CAUSE_REGISTRY[iv.cause].parameters(iv.magnitude),
                    strict=True,
                )
            ),
        }
        if acc is not None:
            entry["effect"] = effect_report(world, iv, acc)
        causes.append(entry)
    return {
        "scenario": spec.name,
        "seed": spec.seed,
        "spec": json.loads(spec.model_dump_json()),
        "dayparts": list(DAYPARTS),
        "rows": totals,
        "interventions": causes,
    }
