"""Hourly series of every slice, as 2-D arrays (n_slices x n_hours), from the cube.

A slice is a grouping set's values plus, optionally, one daypart; a daypart slice keeps the
whole hour axis, with empty hours outside its daypart (detectors read zero trials as missing).
Rates and the CX Score are computed vectorised from the summed statistics, with standard
errors: binomial for rates, from sums of squares for means, and by the delta method for the
CX Score (each component is linear in its rate between its worst and best values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cxagent.data.cohorts import DAYPARTS
from cxagent.engine.cube import SET_DIMS, SUM_FIELDS, Cube
from cxagent.metrics.definitions import Component, cx_components

# component -> (numerator field, denominator field, the component is 1 - numerator/denominator)
# as in cxagent.metrics.definitions: item accuracy is one minus the bad-item share; the
# others are the plain rate (on-time share, cancellation rate, ...).
RATE_COMPONENTS: dict[str, tuple[str, str, bool]] = {
    "on_time": ("on_time", "delivered", False),
    "item_accuracy": ("bad_items", "items", True),
    "cancellation": ("canceled", "orders", False),
    "refund": ("refunded", "orders", False),
    "support_contact": ("support", "orders", False),
}


def measured(component: str, missing: frozenset[str]) -> bool:
    """Whether a CX component can be scored when the statistics ``missing`` are absent."""
    fields = ("ratings", "stars") if component == "rating" else RATE_COMPONENTS[component][:2]
    return not missing.intersection(fields)


@dataclass
class SliceSeries:
    """Summed statistics per slice (rows) and hour (columns)."""

    slices: list[dict[str, Any]]
    hours: np.ndarray  # datetime64[us]
    stats: dict[str, np.ndarray]  # a field the data lacks is zeros here, and listed in missing
    missing: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.slices)

    def index(self, slice_: dict[str, Any]) -> int:
        return self.slices.index(slice_)

    def measures(self, component: str) -> bool:
        """Whether the data has what the component needs (Olist has no refunds, say)."""
        return measured(component, self.missing)

    def rate(self, component: str) -> tuple[np.ndarray, np.ndarray]:
        """(the component's value as the CX Score scores it, denominator); NaN where empty."""
        num, den, complement = RATE_COMPONENTS[component]
        n = self.stats[den]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.stats[num] / n
        return (1.0 - r if complement else r), n

    def cx_score(
        self, components: tuple[Component, ...] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(CX Score, its variance) per slice and hour, of ``components`` (default: those in
        force, ``cx_components()``); NaN where nothing was delivered."""
        total = np.zeros_like(self.stats["orders"])
        weight = np.zeros_like(total)
        var = np.zeros_like(total)
        for comp in cx_components() if components is None else components:
            if not self.measures(comp.name):
                continue
            if comp.name == "rating":
                n = self.stats["ratings"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    value = self.stats["stars"] / n
                    v = (self.stats["stars_sq"] / n - value**2) / n
            else:
                value, n = self.rate(comp.name)
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = value * (1 - value) / n
            ok = np.isfinite(value) & (n > 0)
            slope = 100.0 / (comp.best - comp.worst)
            score = np.clip((np.where(ok, value, 0.0) - comp.worst) * slope, 0.0, 100.0)
            total += np.where(ok, comp.weight * score, 0.0)
            weight += np.where(ok, comp.weight, 0.0)
            # a floor on the variance of a rate: one event in n is never "certain"
            v = np.maximum(np.where(ok, v, 0.0), np.where(ok, 0.25 / np.maximum(n, 1) ** 2, 0.0))
            var += (comp.weight * slope) ** 2 * v
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / weight, var / weight**2


def level_rows(table: pa.Table) -> dict[str, np.ndarray]:
    """Positions of each level's rows in a cube table, in row order (one pass, not a filtered
    copy of the table per level). Levels come in the order of ``grouping_sets`` (fewest
    dimensions first), whatever order the engine returned the rows in."""
    levels = table.column("level").combine_chunks().dictionary_encode()
    codes = levels.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(levels.dictionary) + 1))
    rows = {
        str(name): order[bounds[i] : bounds[i + 1]]
        for i, name in enumerate(levels.dictionary.to_pylist())
    }
    return {name: rows[name] for name in sorted(rows, key=_level_order)}


def _level_order(name: str) -> tuple[int, list[int]]:
    dims = [] if name == "all" else name.split("+")
    return len(dims), [SET_DIMS.index(d) if d in SET_DIMS else len(SET_DIMS) for d in dims]


def _str_ranks(column: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    """(rank of each row's value among the column's distinct values ordered by ``str``, the
    distinct values in that order): integer codes that sort as the values' strings do."""
    encoded = column.combine_chunks().dictionary_encode(null_encoding="encode")
    values = encoded.dictionary.to_pylist()
    by_str = sorted(range(len(values)), key=lambda i: str(values[i]))
    rank = np.empty(len(values), dtype=np.int64)
    rank[by_str] = np.arange(len(values))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return rank[codes], [values[i] for i in by_str]


def slice_keys(
    table: pa.Table, dims: list[str], rows: np.ndarray
) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    """The distinct value combinations of ``dims`` among ``rows`` sorted by their strings
    (dimension by dimension), and each row's index among them."""
    if not dims:
        return [()], np.zeros(len(rows), dtype=np.int64)
    key = np.zeros(len(rows), dtype=np.int64)
    decoders = []
    for d in dims:
        rank, values = _str_ranks(table.column(d).take(rows))
        key = key * len(values) + rank
        decoders.append(values)
    uniq, index = np.unique(key, return_inverse=True)
    combos: list[tuple[Any, ...]] = []
    for k in uniq.tolist():
        parts = []
        for values in reversed(decoders):
            k, r = divmod(k, len(values))
            parts.append(values[r])
        combos.append(tuple(reversed(parts)))
    return combos, index.astype(np.int64)


def build_series(cube: Cube, *, min_orders: float = 0.0, with_dayparts: bool = True) -> SliceSeries:
    """Every slice of the cube with at least ``min_orders`` orders in total."""
    hours = cube.hours
    hour_keys = hours.astype("datetime64[us]")
    table = cube.table
    # columns of the whole cube, read once; each level takes its rows
    hour = table.column("hour").to_numpy().astype("datetime64[us]")
    column = np.searchsorted(hour_keys, hour)
    names = table.column("daypart").to_numpy()
    daypart = np.full(len(names), -1)
    for code, name in enumerate(DAYPARTS):
        daypart[names == name] = code
    field_values = {  # one writable copy each, its NaN (nulls) zeroed in place
        f: np.nan_to_num(np.array(table.column(f).to_numpy(), dtype=float), copy=False)
        for f in SUM_FIELDS
    }
    slices: list[dict[str, Any]] = []
    blocks: dict[str, list[np.ndarray]] = {f: [] for f in SUM_FIELDS}
    for level, rows in level_rows(table).items():
        dims = [] if level == "all" else level.split("+")
        uniq, r = slice_keys(table, dims, rows)
        c = column[rows]
        dp = daypart[rows]
        cell = r * len(hours) + c  # one bincount per field fills a slice x hour matrix
        values = {f: v[rows] for f, v in field_values.items()}
        size = len(uniq) * len(hours)
        variants = [None, *range(len(DAYPARTS))] if with_dayparts else [None]
        for variant in variants:
            keep = slice(None) if variant is None else dp == variant
            mats = {
                f: np.bincount(cell[keep], weights=values[f][keep], minlength=size).reshape(
                    len(uniq), len(hours)
                )
                for f in SUM_FIELDS
            }
            enough = mats["orders"].sum(axis=1) >= max(min_orders, 1e-9)
            for i in np.flatnonzero(enough):
                s = {d: uniq[i][j] for j, d in enumerate(dims)}
                if variant is not None:
                    s["daypart"] = DAYPARTS[variant]
                slices.append(s)
            for f in SUM_FIELDS:
                blocks[f].append(mats[f][enough])
    stats = {f: np.vstack(blocks[f]) for f in SUM_FIELDS}
    return SliceSeries(slices=slices, hours=hours, stats=stats, missing=cube.missing_fields)


def slice_label(slice_: dict[str, Any]) -> str:
    order = [*SET_DIMS, "daypart"]
    return " + ".join(f"{k}={slice_[k]}" for k in order if k in slice_) or "all orders"
