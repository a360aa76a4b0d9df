"""The true effect of each planted cause, against its exact counterfactual.

For every day an intervention is active, the day is simulated again from the same draws with
that intervention switched off (the others stay on). Sufficient statistics of both worlds are
accumulated per (region, category, daypart) cell and for the intervention's own scope, over
orders placed inside its window, so ``truth.json`` can state each CX metric's factual value,
counterfactual value and difference per affected slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxagent.data.cohorts import DAYPARTS
from cxagent.data.scenario.draws import DayDraws
from cxagent.data.scenario.simulate import DayOutcome
from cxagent.data.scenario.spec import Intervention
from cxagent.data.scenario.world import World
from cxagent.metrics.definitions import ON_TIME_GRACE_S, STAT_FIELDS, CXStats

N_DAYPARTS = len(DAYPARTS)


def order_stats(d: DayDraws, o: DayOutcome) -> np.ndarray:
    """Per-order contributions to each ``CXStats`` field, shape (n_fields, n_orders)."""
    delivered = o.delivered
    lateness = np.where(delivered, o.delivered_s - o.promised_s, 0.0)
    items = np.where(delivered, o.lines, 0)
    cols = {
        "orders": np.ones(d.n_orders),
        "delivered": delivered,
        "on_time": delivered & (lateness <= ON_TIME_GRACE_S),
        "eta_abs_error_s": np.abs(lateness),
        "canceled": o.canceled,
        "refunded": o.refunded,
        "items": items,
        "bad_items": o.bad_items,
        "support": o.support,
        "ratings": o.rated,
        "stars": np.where(o.rated, o.stars, 0),
        "trips": np.where(delivered, 1.0 / o.trip_size, 0.0),
        "dasher_active_s": np.where(delivered, o.dasher_active_s, 0.0),
        "delivery_cost": np.where(delivered, o.cost, 0.0),
    }
    return np.vstack([np.asarray(cols[f], dtype=float) for f in STAT_FIELDS])


@dataclass
class EffectAccumulator:
    """Factual and counterfactual statistics of one intervention, per cell and for its scope."""

    n_cells: int
    factual: np.ndarray = field(init=False)
    counterfactual: np.ndarray = field(init=False)
    scope_factual: np.ndarray = field(init=False)
    scope_counterfactual: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        k = len(STAT_FIELDS)
        self.factual = np.zeros((k, self.n_cells))
        self.counterfactual = np.zeros((k, self.n_cells))
        self.scope_factual = np.zeros(k)
        self.scope_counterfactual = np.zeros(k)

    def add(
        self, cell: np.ndarray, window: np.ndarray, scope: np.ndarray, f: np.ndarray, cf: np.ndarray
    ) -> None:
        for acc, stats in ((self.factual, f), (self.counterfactual, cf)):
            for i in range(stats.shape[0]):
                acc[i] += np.bincount(
                    cell[window], weights=stats[i][window], minlength=self.n_cells
                )
        self.scope_factual += f[:, scope].sum(axis=1)
        self.scope_counterfactual += cf[:, scope].sum(axis=1)

    def merge(self, other: EffectAccumulator) -> None:
        self.factual += other.factual
        self.counterfactual += other.counterfactual
        self.scope_factual += other.scope_factual
        self.scope_counterfactual += other.scope_counterfactual


def cell_index(world: World, d: DayDraws) -> np.ndarray:
    return (d.region * len(world.categories) + d.category) * N_DAYPARTS + d.daypart


def _metrics_pair(f: np.ndarray, cf: np.ndarray) -> dict[str, Any]:
    mf = CXStats(**dict(zip(STAT_FIELDS, map(float, f), strict=True))).metrics()
    mc = CXStats(**dict(zip(STAT_FIELDS, map(float, cf), strict=True))).metrics()
    return {
        "orders": int(f[0]),
        "factual": _round(mf),
        "counterfactual": _round(mc),
        "delta": _round({k: mf[k] - mc[k] for k in mf}),
    }


def _round(m: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if np.isnan(v) else round(float(v), 5)) for k, v in m.items()}


def _weighted_cx_delta(entry: dict[str, Any]) -> float:
    return float(entry["delta"]["cx_score"] or 0.0) * float(entry["orders"])


def effect_report(world: World, iv: Intervention, acc: EffectAccumulator) -> dict[str, Any]:
    """The truth.json entry of one intervention's effect."""
    cells = []
    n_cat = len(world.categories)
    for c in range(acc.n_cells):
        if acc.factual[0, c] == 0:
            continue
        changed = np.any(np.abs(acc.factual[:, c] - acc.counterfactual[:, c]) > 1e-9)
        if not changed:
            continue
        ri, rest = divmod(c, n_cat * N_DAYPARTS)
        ci, di = divmod(rest, N_DAYPARTS)
        entry = {
            "slice": {
                "region": world.regions[ri],
                "category": world.categories[ci],
                "daypart": DAYPARTS[di],
            }
        }
        entry.update(_metrics_pair(acc.factual[:, c], acc.counterfactual[:, c]))
        cells.append(entry)
    cells.sort(key=_weighted_cx_delta)
    scope = {"slice": iv.scope.label()}
    scope.update(_metrics_pair(acc.scope_factual, acc.scope_counterfactual))
    return {"scope": scope, "cells": cells}
