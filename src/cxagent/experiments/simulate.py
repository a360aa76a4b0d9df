"""Simulate running an experiment plan inside the scenario engine.

The scenario engine knows the exact counterfactual of a fix (``fixes.fix_effect``). This module
runs the fix the way an experiment would: a share of the scope is assigned to treatment, the
rest stays on the current setting, and the days are simulated with the fix applied only to the
treated orders (and, for a switchback, the treated courier-supply bins) through
``fixes.fix_levers(..., assigned_orders=..., assigned_bins=...)``. The output is the
*experiment data* a monitor reads (``cxagent.experiments.monitor``): one row per
(phase, phase day, cluster, arm) with the ``CXStats`` fields summed over the cluster's
analysed orders (``truth.order_stats``).

Design
------

* **Scope**: the fix's scope (region, category, daypart, store). Only orders in scope are
  analysed; the fix itself never acts outside it (``fix_levers`` intersects its own scope with
  the assignment).
* **Phases**: consecutive blocks of whole days from ``start``, each with its treated share
  (the plan's 10% -> 50% -> 100%-less-holdback ramp). A phase day runs from ``start`` + k days
  to + k + 1 days, so a midnight ``start`` gives calendar days.
* **Switchback** (``unit="region_x_window"``): every region x time window is a cluster. The
  scope's hours of a day (its dayparts, as ``cxagent.data.cohorts`` assigns hours; the whole
  day without a daypart) are split into maximal runs of consecutive hours, and each run is cut
  into windows of ``window_hours`` (the last one shorter). For a single daypart other than
  late night this is exactly the plan's ``switchback_layout``; late night (21:00-04:59) is cut
  at midnight because simulated days are independent. A window is treated when
  ``u(seed, region, date, window) < treated share`` (independent Bernoulli assignment); its
  orders *and its courier-supply bins* are treated. Orders in the first ``burn_in_minutes`` of
  a window are simulated under the window's arm but excluded from the analysed sums (they are
  counted in ``orders_burn_in``), as the plan prescribes against carryover.
* **Store** (``unit="store"``): the stores in scope are ranked by ``u(seed, store_id)`` and the
  first ``round(share * stores)`` (at least one, and at least one left in control) are treated:
  a complete randomisation, so the realised split is the planned one up to rounding (the
  ``treated_share`` column records it). Supply bins are shared by every store of a region, so
  a fix that acts on courier supply (``supply_boost``, or a ``rollback`` of a
  ``dasher_shortage``) cannot be randomised by store and is refused.
* **Determinism and nesting**: ``u`` is a hash (BLAKE2b) of the seed and the unit id, uniform on
  [0, 1). A unit is treated when ``u`` is below the phase's share (switchback) or ranks below
  the phase's count (store), so for a fixed seed the assignment is reproducible and the units
  treated at 10% are a subset of those treated at 50%.
* **A/A**: with ``aa=True`` the assignment and the data are produced exactly the same way but
  the treatment arm gets no fix, so every true effect is zero (to check the monitor's error
  rates).

Draws are seeded per day by the scenario (``draws.draw_day``), so an experiment's days are the
scenario's days: extending ``spec.days`` to make room for the experiment leaves the earlier
days unchanged. A 14-day experiment at 20,000 orders a day simulates in about a second.

``write_experiment`` stores the data as Parquet (the metadata in the schema's key-value
metadata) atomically; ``read_experiment`` validates it, naming the file and the column at fault.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cxagent.data.cohorts import DAYPART_OF_HOUR, DAYPARTS
from cxagent.data.scenario.draws import DayDraws, draw_day
from cxagent.data.scenario.fixes import Fix, describe, fix_levers
from cxagent.data.scenario.generator import _context
from cxagent.data.scenario.simulate import simulate_day
from cxagent.data.scenario.spec import ScenarioSpec, Scope
from cxagent.data.scenario.strength import DAY_S, in_window_and_scope
from cxagent.data.scenario.truth import order_stats
from cxagent.data.scenario.world import World
from cxagent.errors import DataValidationError
from cxagent.metrics.definitions import STAT_FIELDS

__all__ = [
    "ARMS",
    "COLUMNS",
    "CONTROL",
    "METADATA_KEY",
    "TREATMENT",
    "UNITS",
    "ExperimentData",
    "ExperimentMeta",
    "Phase",
    "RandomisationUnit",
    "assignment_uniform",
    "read_experiment",
    "simulate_experiment",
    "switchback_windows",
    "validate_frame",
    "write_experiment",
]

RandomisationUnit = Literal["store", "region_x_window"]
UNITS: Final[tuple[RandomisationUnit, ...]] = get_args(RandomisationUnit)
TREATMENT: Final = "treatment"
CONTROL: Final = "control"
ARMS: Final = (TREATMENT, CONTROL)
METADATA_KEY: Final = b"cxagent.experiment"
BIN_S: Final = 900.0  # the engine's courier-supply bins are 15 minutes
BINS_PER_DAY: Final = 96

ID_COLUMNS: Final = ("phase", "phase_day", "date", "unit", "region", "window_start", "arm")
COUNT_COLUMNS: Final = ("treated_share", "orders_assigned", "orders_burn_in")
COLUMNS: Final[tuple[str, ...]] = ID_COLUMNS + COUNT_COLUMNS + tuple(STAT_FIELDS)
"""Columns of the experiment data, in order. ``unit`` is the randomisation unit (the store id,
or region|date|window for a switchback); ``window_start`` is "HH:MM" for a switchback and
empty for stores; ``treated_share`` is the share the phase's assignment was drawn with;
``orders_assigned`` counts every order in scope of the cluster, ``orders_burn_in`` those left
out as burn-in; the ``CXStats`` fields (``orders`` included) sum the analysed orders."""


@dataclass(frozen=True)
class Phase:
    """One block of the ramp: ``treated_share`` of the scope treated for ``days`` days."""

    treated_share: float
    days: int


@dataclass(frozen=True)
class ExperimentMeta:
    """How the experiment data were produced. ``design_shares`` is the realised share of each
    phase's assignment (the planned share for a switchback; treated stores over stores in scope
    for store randomisation); ``units_in_scope`` the stores in scope (store) or the region x
    windows a day (switchback)."""

    scenario: str
    scenario_seed: int
    fix: dict[str, Any]
    aa: bool
    unit: RandomisationUnit
    window_hours: float
    burn_in_minutes: float
    start: str
    end: str
    seed: int
    phases: tuple[Phase, ...]
    design_shares: tuple[float, ...]
    units_in_scope: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["phases"] = [asdict(p) for p in self.phases]
        out["design_shares"] = list(self.design_shares)
        return out

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> ExperimentMeta:
        values = dict(raw)
        values["phases"] = tuple(Phase(**p) for p in values["phases"])
        values["design_shares"] = tuple(float(x) for x in values["design_shares"])
        return ExperimentMeta(**values)


@dataclass(frozen=True)
class ExperimentData:
    """The experiment data (``frame``, columns ``COLUMNS``) and how they were produced."""

    frame: pd.DataFrame
    meta: ExperimentMeta


# --- assignment --------------------------------------------------------------------------------


def assignment_uniform(seed: int, unit_id: str) -> float:
    """The unit's assignment draw: BLAKE2b of ``"{seed}|{unit_id}"`` as a uniform on [0, 1).

    Fixed for a seed and a unit, so a unit keeps its draw across phases; a unit is treated when
    its draw is below the phase's share, which nests the arms of increasing shares."""
    digest = hashlib.blake2b(f"{seed}|{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def switchback_windows(scope: Scope, window_hours: float) -> tuple[tuple[float, float], ...]:
    """(start, end) seconds after midnight of each switchback window of a day.

    The scope's hours (its dayparts, or all 24) in maximal runs of consecutive hours, each run
    cut into windows of ``window_hours`` with the last one shorter."""
    hours = np.arange(24)
    if scope.daypart is not None:
        codes = [DAYPARTS.index(p) for p in scope.daypart]
        hours = hours[np.isin(DAYPART_OF_HOUR, codes)]
    width = window_hours * 3600.0
    windows: list[tuple[float, float]] = []
    run_start = int(hours[0])
    for i, h in enumerate(hours):
        last = i + 1 == len(hours) or hours[i + 1] != h + 1
        if not last:
            continue
        lo, hi = run_start * 3600.0, (int(h) + 1) * 3600.0
        t = lo
        while t < hi - 1e-6:
            windows.append((t, min(t + width, hi)))
            t += width
        if i + 1 < len(hours):
            run_start = int(hours[i + 1])
    return tuple(windows)


def _hhmm(seconds: float) -> str:
    minutes = round(seconds / 60.0)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --- validation --------------------------------------------------------------------------------


def _check_share(path: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ValueError(f"{path}: must be a number in (0, 1), got {value!r}")
    return float(value)


def _check_phases(phases: Sequence[Phase | tuple[float, int]]) -> tuple[Phase, ...]:
    if len(phases) == 0:
        raise ValueError("phases: at least one phase is required, got []")
    out = []
    for i, p in enumerate(phases):
        share, days = (p.treated_share, p.days) if isinstance(p, Phase) else p
        share = _check_share(f"phases[{i}].treated_share", share)
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValueError(f"phases[{i}].days: must be an int >= 1, got {days!r}")
        out.append(Phase(share, days))
    return tuple(out)


def _touches_supply(spec: ScenarioSpec, fix: Fix) -> bool:
    if fix.kind == "supply_boost":
        return True
    if fix.kind == "rollback" and fix.intervention is not None:
        return (
            fix.intervention < len(spec.interventions)
            and spec.interventions[fix.intervention].cause == "dasher_shortage"
        )
    return False


def _check_inputs(
    spec: ScenarioSpec,
    fix: Fix,
    start: dt.datetime,
    end: dt.datetime,
    unit: str,
    window_hours: float,
    burn_in_minutes: float,
) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit: must be one of {', '.join(UNITS)}, got {unit!r}")
    if not spec.start_time <= start < spec.end_time:
        raise ValueError(
            f"start: {start} is outside the scenario ({spec.start_time} to {spec.end_time})"
        )
    if end > spec.end_time:
        needed = math.ceil((end - spec.start_time) / dt.timedelta(days=1))
        raise ValueError(
            f"spec.days: the experiment ends at {end}, after the scenario's end "
            f"{spec.end_time}; extend spec.days to at least {needed} (got {spec.days})"
        )
    if fix.start > start:
        raise ValueError(
            f"fix.start: the fix must be in force from the experiment's start {start}, "
            f"got {fix.start}"
        )
    if fix.end is not None and fix.end < end:
        raise ValueError(
            f"fix.end: the fix must stay in force until the experiment's end {end}, got {fix.end}"
        )
    for key, values in (("region", fix.scope.region), ("category", fix.scope.category)):
        known = spec.regions if key == "region" else spec.categories
        for v in values or []:
            if v not in known:
                raise ValueError(f"fix.scope.{key}: {v!r} is not in the scenario's {known}")
    hours_ok = (
        isinstance(window_hours, int | float)
        and not isinstance(window_hours, bool)
        and 0.0 < window_hours <= 24.0
        and abs(window_hours * 4.0 - round(window_hours * 4.0)) < 1e-9
    )
    if not hours_ok:
        raise ValueError(
            "window_hours: must be a multiple of 0.25 in (0, 24] (the engine's supply bins are "
            f"15 minutes), got {window_hours!r}"
        )
    if unit == "region_x_window":
        shortest = min(b - a for a, b in switchback_windows(fix.scope, float(window_hours)))
        if not 0.0 <= burn_in_minutes < shortest / 60.0:
            raise ValueError(
                f"burn_in_minutes: must be in [0, {shortest / 60.0:g}) (the shortest window), "
                f"got {burn_in_minutes!r}"
            )
    elif _touches_supply(spec, fix):
        raise ValueError(
            f"unit: store randomisation cannot test a {fix.kind} fix: it changes the courier "
            "supply every store of the region shares, so treated and control stores would get "
            "the same couriers; use unit='region_x_window' (a switchback)"
        )


# --- the assignment of one experiment ----------------------------------------------------------


@dataclass(frozen=True)
class _Design:
    spec: ScenarioSpec
    world: World
    fix: Fix
    unit: RandomisationUnit
    seed: int
    start_s: float  # seconds since the scenario start
    phase_bounds: npt.NDArray[np.float64]  # phase p covers [bounds[p], bounds[p + 1])
    shares: tuple[float, ...]
    windows: tuple[tuple[float, float], ...]
    burn_in_s: float
    scope_stores: npt.NDArray[np.int64]  # store indices in scope
    treated_stores: tuple[npt.NDArray[np.bool_], ...]  # per phase, per store index

    def phase_of(self, t_abs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Phase index of each time; -1 outside the experiment."""
        idx = np.searchsorted(self.phase_bounds, t_abs, side="right") - 1
        idx[(t_abs < self.phase_bounds[0]) | (t_abs >= self.phase_bounds[-1])] = -1
        return idx.astype(np.int64)

    def window_of(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Switchback window of each time of day; -1 outside the scope's hours."""
        starts = np.array([a for a, _ in self.windows])
        ends = np.array([b for _, b in self.windows])
        idx = np.searchsorted(starts, t_s, side="right") - 1
        ok = (idx >= 0) & (t_s < ends[np.maximum(idx, 0)])
        return np.where(ok, idx, -1).astype(np.int64)

    def window_uniforms(self, date: dt.date) -> npt.NDArray[np.float64]:
        """(n_regions, n_windows) assignment draws of the day's region x windows."""
        return np.array(
            [
                [
                    assignment_uniform(self.seed, f"{region}|{date.isoformat()}|{_hhmm(a)}")
                    for a, _ in self.windows
                ]
                for region in self.world.regions
            ]
        )


def _store_assignment(
    seed: int, world: World, scope_stores: npt.NDArray[np.int64], shares: tuple[float, ...]
) -> tuple[tuple[npt.NDArray[np.bool_], ...], tuple[float, ...]]:
    ids = world.stores["store_id"].to_numpy()[scope_stores]
    draws = np.array([assignment_uniform(seed, f"store|{int(s)}") for s in ids])
    rank = np.argsort(np.argsort(draws, kind="stable"), kind="stable")
    n = len(scope_stores)
    masks, realised = [], []
    for share in shares:
        k = min(max(round(share * n), 1), n - 1)
        treated = np.zeros(len(world.stores), dtype=bool)
        treated[scope_stores[rank < k]] = True
        masks.append(treated)
        realised.append(k / n)
    return tuple(masks), tuple(realised)


def _scope_stores(world: World, scope: Scope) -> npt.NDArray[np.int64]:
    keep = np.ones(len(world.stores), dtype=bool)
    if scope.region is not None:
        keep &= np.isin(world.stores["region"].to_numpy(), scope.region)
    if scope.category is not None:
        keep &= np.isin(world.stores["category"].to_numpy(), scope.category)
    if scope.store is not None:
        keep &= np.isin(world.stores["store_id"].to_numpy(), scope.store)
    return np.flatnonzero(keep).astype(np.int64)


# --- one day -----------------------------------------------------------------------------------


def _day_rows(design: _Design, d: DayDraws, aa: bool) -> pd.DataFrame | None:
    spec, world = design.spec, design.world
    t_abs = d.day_index * DAY_S + d.t_s
    phase = design.phase_of(t_abs)
    in_scope = in_window_and_scope(
        spec,
        world,
        design.fix,
        t_abs=t_abs,
        region=d.region,
        daypart=d.daypart,
        category=d.category,
        store=d.store,
    ) & (phase >= 0)
    n_regions = world.n_regions
    phase_safe = np.maximum(phase, 0)
    bins_mask = np.zeros((n_regions, BINS_PER_DAY), dtype=bool)
    if design.unit == "region_x_window":
        window = design.window_of(d.t_s)
        in_scope &= window >= 0
        u = design.window_uniforms(d.date)
        shares = np.array(design.shares)
        treated = (window >= 0) & (phase >= 0)
        treated &= u[d.region, np.maximum(window, 0)] < shares[phase_safe]
        window_start = np.array([a for a, _ in design.windows])[np.maximum(window, 0)]
        burn_in = d.t_s - window_start < design.burn_in_s
        cluster = d.region * len(design.windows) + np.maximum(window, 0)
        # supply bins: a bin is treated when its region x window is
        bin_start = np.arange(BINS_PER_DAY, dtype=np.float64) * BIN_S
        bin_window = design.window_of(bin_start)
        bin_phase = design.phase_of(np.asarray(d.day_index * DAY_S + bin_start, dtype=np.float64))
        ok = (bin_window >= 0) & (bin_phase >= 0)
        bin_u = u[:, np.maximum(bin_window, 0)]
        bins_mask = ok[None, :] & (bin_u < shares[np.maximum(bin_phase, 0)][None, :])
    else:
        stores_treated = np.stack(design.treated_stores)  # (phases, stores)
        treated = (phase >= 0) & stores_treated[phase_safe, d.store]
        burn_in = np.zeros(d.n_orders, dtype=bool)
        cluster = d.store.astype(np.int64)
    if not in_scope.any():
        return None

    fixes = [] if aa else [design.fix]
    levers = fix_levers(spec, world, d, fixes, assigned_orders=treated, assigned_bins=bins_mask)
    outcome = simulate_day(world, _context(spec).supply, d, levers)
    stats = order_stats(d, outcome)

    phase_start = design.phase_bounds[phase_safe]
    phase_day = np.floor((t_abs - phase_start) / DAY_S).astype(np.int64)
    idx = np.flatnonzero(in_scope)
    # one group per (phase, phase day, cluster); the arm is constant within it
    key = np.stack([phase[idx], phase_day[idx], cluster[idx]], axis=1)
    groups, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    g = len(groups)
    analysed = ~burn_in[idx]
    sums = {
        name: np.bincount(inverse, weights=stats[i, idx] * analysed, minlength=g)
        for i, name in enumerate(STAT_FIELDS)
    }
    first = np.zeros(g, dtype=np.int64)
    first[inverse[::-1]] = idx[::-1]  # an order of each group, for its arm and region
    assigned = np.bincount(inverse, minlength=g)
    burned = np.bincount(inverse, weights=burn_in[idx].astype(float), minlength=g)
    if design.unit == "region_x_window":
        w = groups[:, 2] % len(design.windows)
        starts = [_hhmm(design.windows[int(k)][0]) for k in w]
        regions = [world.regions[int(r)] for r in groups[:, 2] // len(design.windows)]
        units = [f"{r}|{d.date.isoformat()}|{s}" for r, s in zip(regions, starts, strict=True)]
    else:
        store_ids = world.stores["store_id"].to_numpy()[groups[:, 2]]
        regions = [world.regions[int(r)] for r in world.store_region[groups[:, 2]]]
        starts = [""] * g
        units = [str(int(s)) for s in store_ids]
    frame = pd.DataFrame(
        {
            "phase": groups[:, 0].astype(np.int64),
            "phase_day": groups[:, 1].astype(np.int64),
            "date": d.date.isoformat(),
            "unit": units,
            "region": regions,
            "window_start": starts,
            "arm": np.where(treated[first], TREATMENT, CONTROL),
            "treated_share": 0.0,  # filled by the caller from the phase
            "orders_assigned": assigned.astype(np.int64),
            "orders_burn_in": burned.astype(np.int64),
            **sums,
        }
    )
    return frame


# --- the experiment ----------------------------------------------------------------------------


def simulate_experiment(
    spec: ScenarioSpec,
    fix: Fix,
    start: dt.datetime,
    *,
    phases: Sequence[Phase | tuple[float, int]],
    unit: RandomisationUnit = "region_x_window",
    window_hours: float = 2.0,
    burn_in_minutes: float = 30.0,
    seed: int = 0,
    aa: bool = False,
) -> ExperimentData:
    """Run ``fix`` as an experiment in the scenario from ``start`` through ``phases``.

    ``spec`` is the scenario whose problem persists; it must contain the whole experiment
    (extend ``spec.days`` with ``spec.model_copy(update={"days": ...})``: earlier days do not
    change). ``fix`` defines the scope and the treatment and must be in force over the whole
    experiment. ``phases`` are ``Phase`` or ``(treated_share, days)`` pairs, run one after the
    other from ``start``. ``unit``, ``window_hours`` and ``burn_in_minutes`` give the
    randomisation (see the module docstring); ``seed`` the assignment; ``aa=True`` keeps the
    treatment arm on the current setting (an A/A test). Raises ValueError naming the parameter
    at fault.
    """
    checked = _check_phases(phases)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: must be an int, got {seed!r}")
    total_days = sum(p.days for p in checked)
    end = start + dt.timedelta(days=total_days)
    _check_inputs(spec, fix, start, end, unit, window_hours, burn_in_minutes)

    ctx = _context(spec)
    world = ctx.world
    start_s = (start - spec.start_time).total_seconds()
    bounds = start_s + DAY_S * np.concatenate([[0.0], np.cumsum([p.days for p in checked])])
    shares = tuple(p.treated_share for p in checked)
    scope_stores = _scope_stores(world, fix.scope)
    windows: tuple[tuple[float, float], ...] = ()
    treated_stores: tuple[npt.NDArray[np.bool_], ...] = ()
    if unit == "store":
        if len(scope_stores) < 2:
            raise ValueError(
                f"fix.scope: store randomisation needs at least 2 stores in scope, got "
                f"{len(scope_stores)}"
            )
        treated_stores, design_shares = _store_assignment(seed, world, scope_stores, shares)
        units_in_scope = len(scope_stores)
    else:
        windows = switchback_windows(fix.scope, float(window_hours))
        design_shares = shares
        regions = fix.scope.region or spec.regions
        units_in_scope = len(regions) * len(windows)
    design = _Design(
        spec=spec,
        world=world,
        fix=fix,
        unit=unit,
        seed=seed,
        start_s=start_s,
        phase_bounds=bounds,
        shares=shares,
        windows=windows,
        burn_in_s=60.0 * float(burn_in_minutes),
        scope_stores=scope_stores,
        treated_stores=treated_stores,
    )
    first_day = int(start_s // DAY_S)
    last_day = math.ceil(bounds[-1] / DAY_S)
    parts = []
    for day in range(first_day, last_day):
        rows = _day_rows(design, draw_day(spec, world, day), aa)
        if rows is not None:
            parts.append(rows)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(COLUMNS))
    frame["treated_share"] = np.asarray(design_shares, dtype=float)[
        frame["phase"].to_numpy(np.int64)
    ]
    frame = frame.sort_values(["phase", "phase_day", "unit"], kind="stable", ignore_index=True)
    meta = ExperimentMeta(
        scenario=spec.name,
        scenario_seed=spec.seed,
        fix=describe(fix),
        aa=aa,
        unit=unit,
        window_hours=float(window_hours),
        burn_in_minutes=float(burn_in_minutes) if unit == "region_x_window" else 0.0,
        start=start.isoformat(),
        end=end.isoformat(),
        seed=seed,
        phases=checked,
        design_shares=tuple(float(s) for s in design_shares),
        units_in_scope=units_in_scope,
    )
    return ExperimentData(frame[list(COLUMNS)], meta)


# --- validation and storage --------------------------------------------------------------------

_INT_COLUMNS: Final = ("phase", "phase_day", "orders_assigned", "orders_burn_in")
_TEXT_COLUMNS: Final = ("date", "unit", "region", "window_start", "arm")


def validate_frame(frame: pd.DataFrame, *, source: str | Path | None = None) -> pd.DataFrame:
    """Check experiment data and return it with canonical dtypes, columns in ``COLUMNS`` order.

    Raises ``DataValidationError`` naming ``source`` (the file, when there is one), the column
    and an example row: a missing column, a non-numeric or negative count, a missing value, an
    arm other than treatment/control, a treated share outside (0, 1), more than one arm or
    share for one unit in one phase, more analysed orders than assigned.
    """
    for col in COLUMNS:
        if col not in frame.columns:
            raise DataValidationError("is missing", file=source, column=col)
    out = frame[list(COLUMNS)].copy()

    def example(mask: npt.NDArray[np.bool_] | pd.Series) -> dict[str, Any]:
        row = out[np.asarray(mask)].iloc[0]
        return {k: row[k] for k in ("phase", "phase_day", "unit", "arm")}

    for col in COLUMNS:
        if out[col].isna().any():
            raise DataValidationError(
                "has missing values", file=source, column=col, example=example(out[col].isna())
            )
    for col in _TEXT_COLUMNS:
        out[col] = out[col].astype(str)
    numeric = [c for c in COLUMNS if c not in _TEXT_COLUMNS]
    for col in numeric:
        if out.empty:
            out[col] = out[col].astype(np.int64 if col in _INT_COLUMNS else np.float64)
        if not pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col]):
            raise DataValidationError(
                f"must be numeric, got dtype {out[col].dtype}", file=source, column=col
            )
        values = out[col].to_numpy(np.float64)
        if not np.isfinite(values).all():
            raise DataValidationError(
                "must be finite", file=source, column=col, example=example(~np.isfinite(values))
            )
        if (values < 0).any():
            raise DataValidationError(
                "must be >= 0", file=source, column=col, example=example(values < 0)
            )
        if col in _INT_COLUMNS:
            if (values != np.floor(values)).any():
                raise DataValidationError(
                    "must hold whole numbers",
                    file=source,
                    column=col,
                    example=example(values != np.floor(values)),
                )
            out[col] = values.astype(np.int64)
        else:
            out[col] = values
    bad_arm = ~out["arm"].isin(ARMS)
    if bad_arm.any():
        raise DataValidationError(
            f"must be '{TREATMENT}' or '{CONTROL}'",
            file=source,
            column="arm",
            example=example(bad_arm),
        )
    share = out["treated_share"].to_numpy()
    bad_share = (share <= 0.0) | (share >= 1.0)
    if bad_share.any():
        raise DataValidationError(
            "must be in (0, 1)", file=source, column="treated_share", example=example(bad_share)
        )
    over = out["orders"].to_numpy() > out["orders_assigned"].to_numpy() + 1e-9
    if over.any():
        raise DataValidationError(
            "analysed orders exceed orders_assigned",
            file=source,
            column="orders",
            example=example(over),
        )
    for col in ("arm", "treated_share"):
        per_unit = out.groupby(["phase", "unit"])[col].nunique()
        if (per_unit > 1).any():
            phase, unit = per_unit[per_unit > 1].index[0]
            raise DataValidationError(
                f"unit {unit!r} has more than one value in phase {phase}",
                file=source,
                column=col,
            )
    return out


def write_experiment(data: ExperimentData, path: str | os.PathLike[str]) -> Path:
    """Write the experiment data to a Parquet file atomically (a temporary file in the same
    directory, then ``os.replace``); the metadata goes in the schema's key-value metadata
    under ``METADATA_KEY``. A failure leaves the target as it was and no temporary file."""
    target = Path(path)
    frame = validate_frame(data.frame)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps(data.meta.to_dict()).encode()
    table = table.replace_schema_metadata(metadata)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_experiment(path: str | os.PathLike[str]) -> ExperimentData:
    """Read experiment data written by ``write_experiment`` and validate it
    (``validate_frame``); errors name the file and the column at fault."""
    source = Path(path)
    if not source.exists():
        raise DataValidationError("file not found", file=source)
    try:
        table = pq.read_table(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"not a readable Parquet file ({exc})", file=source) from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataValidationError(
            f"no experiment metadata (schema key {METADATA_KEY.decode()}); write it with "
            "write_experiment",
            file=source,
        )
    try:
        meta = ExperimentMeta.from_dict(json.loads(raw))
    except (TypeError, KeyError, ValueError) as exc:
        raise DataValidationError(f"invalid experiment metadata ({exc})", file=source) from None
    frame = validate_frame(table.to_pandas(), source=source)
    return ExperimentData(frame, meta)
