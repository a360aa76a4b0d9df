"""Driver checks: a regression raised where an operational driver shifted and CX followed.

CX outcomes are noisy where courier supply swings day to day: a region's late rate moves by
several points from one day to the next, so a four-day prep-time drift that adds as much is
within what the outcome detectors must tolerate among hundreds of slices. The mechanisms'
drivers are far steadier (a region's mean merchant prep time moves by a few seconds a day),
so a drift in one is visible long before its outcome is. A driver check asks two questions of
every market cell (each region, each category, each region x category; the marketplace as a
whole is left to the outcome detectors) at every monitored window:

1. did a driver of a root-cause hypothesis (batched share, merchant prep time, couriers on
   shift - or the courier wait of unbatched orders where the data does not record them -,
   promised time: ``DRIVERS``) shift the harmful way over the last 4, 8 or 16 windows by at
   least ``driver_z`` times the spread of such stretches in the history (in-time placebos:
   the same stretch mean at every earlier position, after the daypart profile is removed;
   for couriers on shift, a region's, the day-of-week x daypart profile of their log);
2. did the late or cancellation rate of the same cell over the same stretch rise by at least
   ``driver_outcome_z`` times its own placebo spread - either the rate itself or the rate
   against the rest of the cell's parent (a region x category against the region's other
   categories, a region or a category against the rest of the marketplace). Courier supply
   swings a whole region's late rate from day to day; against its neighbours, which share
   those swings, a cell's own change stands out (the idea of a difference in differences,
   with the same placebo scale) - or, for every driver but courier supply's own, the rate
   against what the cell's courier wait explains of it (the history's slope of outcome on
   wait anomalies): a region has no neighbour sharing its couriers, but its wait records
   them.

Both together raise a finding on the cell, from where the driver's step is inside the
stretch (``shift_start``), which joins the outcome
detectors' findings in the episodes (so a driver-led alarm and an outcome alarm on the same
cell are one incident). The shift alone raises nothing: a batching change that CX absorbs
is not an incident. The thresholds were chosen on the root-cause training suite and measured
on unseen ones (docs/benchmarks.md); the p-value shown is the outcome's on its placebo scale,
Bonferroni-adjusted (q) over the stretches whose driver shifted in that window times the two
outcomes and the three forms (own rate, against the rest, against courier supply). The
history is the ``history`` windows before the first monitored one, as the outcome models',
so an incremental run scores a window as a batch run does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import pyarrow as pa
from scipy.stats import norm

from cxagent.engine.drivers import DRIVER_SUMS
from cxagent.incidents.detection import bad_counts, running_sums
from cxagent.incidents.episodes import Finding
from cxagent.incidents.hierarchy import Hierarchy


class Watch(NamedTuple):
    """A driver the checks watch: its hypothesis, the sums whose ratio it is, the harmful
    direction, and whether it is a region's courier supply (watched on regions only, on a
    log scale against its week: rosters follow the day of the week as demand does)."""

    cause: str
    num: str
    den: str
    harm: float
    supply: bool = False


# batched share, mean merchant prep time, mean courier wait of unbatched orders (all delivered
# orders count as unbatched when the data has no batched flag), mean couriers on shift (fewer
# is the harm), mean promised time (shorter is the harm)
DRIVERS: Final[dict[str, Watch]] = {
    "batched_share": Watch("batching_policy", "batched", "delivered", 1.0),
    "prep_time": Watch("prep_time_drift", "prep_s", "prep_n", 1.0),
    "courier_wait": Watch("dasher_shortage", "wait_s", "wait_n", 1.0),
    "couriers_on_shift": Watch("dasher_shortage", "couriers", "intervals", -1.0, supply=True),
    "promised_time": Watch("eta_model_bias", "promised_s", "delivered", -1.0),
}
# a driver not watched where the data records the one named: courier supply is watched on
# couriers on shift where the supply table records them. The wait answers to them through a
# queue, so a few percent fewer couriers at a busy hour move it as much as a cut of a tenth
# does (the rca suites' natural shocks); its anomalies still serve the outcome's supply form
SUPERSEDED: Final = {"courier_wait": "couriers_on_shift"}
# drivers that count orders (the batched share's numerator): their shift must also add
# ``min_excess`` (the outcome alarms' minimum of extra bad events) orders over the stretch,
# so a share near zero (a cell that almost never batches) does not alarm on a handful of
# orders its tiny placebo spread makes "7 sigma"
COUNT_DRIVERS: Final = frozenset({"batched_share"})
OUTCOMES: Final = ("on_time", "cancellation")  # where these mechanisms act
LENGTHS: Final = (4, 8, 16)  # stretches, in windows: a day or more (one bad evening is the
# outcome detectors' to catch)
MIN_ORDERS: Final = 20  # a window with fewer has no rate
MIN_PLACEBOS: Final = 20  # history stretches needed to scale a length
PERIOD: Final = 4  # the daypart profile removed
WEEK: Final = 7 * PERIOD  # the day-of-week x daypart profile removed from courier supply


@dataclass(frozen=True)
class DriverWindows:
    """Driver sums per market cell (row) and window (column ``t`` is window id ``first + t``)."""

    slices: list[dict[str, Any]]
    first: int
    sums: dict[str, np.ndarray]

    @property
    def n_windows(self) -> int:
        return int(next(iter(self.sums.values())).shape[1])

    @staticmethod
    def from_table(table: pa.Table, first: int, n_windows: int) -> DriverWindows:
        """Region x category rows of ``cxagent.engine.drivers`` rolled up to regions,
        categories and the marketplace, on windows ``first ... first + n_windows - 1``."""
        cols = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
        t = cols["window"].astype(np.int64) - first
        keep = (t >= 0) & (t < n_windows)
        cells: dict[tuple[Any, Any], int] = {}
        regions, categories = cols["region"], cols["category"]
        for r, c in zip(regions[keep], categories[keep], strict=True):
            cells.setdefault((r, c), len(cells))
        slices: list[dict[str, Any]] = [{}]
        groups: list[list[int]] = [list(cells.values())]
        for key, dim in ((0, "region"), (1, "category")):
            present = sorted({k[key] for k in cells if k[key] is not None}, key=str)
            for v in present:
                slices.append({dim: v})
                groups.append([i for k, i in cells.items() if k[key] == v])
        for (r, c), i in cells.items():
            if r is not None and c is not None:
                slices.append({"region": r, "category": c})
                groups.append([i])
        cell_of = np.array(
            [cells.get((r, c), -1) for r, c in zip(regions, categories, strict=True)]
        )
        sums = {}
        for name in DRIVER_SUMS:
            values = np.asarray(cols[name], dtype=float)
            by_cell = np.zeros((len(cells), n_windows))
            ok = keep & np.isfinite(values)
            np.add.at(by_cell, (cell_of[ok], t[ok]), values[ok])
            if not ok.any():  # the dataset lacks it
                by_cell[:] = np.nan
            sums[name] = np.stack([by_cell[g].sum(axis=0) for g in groups])
        return DriverWindows(slices, first, sums)


def _anomalies(
    num: np.ndarray, den: np.ndarray, hist_end: int, sign: float, *, weekly: bool = False
) -> np.ndarray:
    """Harm-signed rate minus its history mean at the same daypart (NaN: too few orders).

    ``weekly`` (courier supply): the log rate against the same day of week and daypart, a
    history window against the mean of the others there (left out, as a monitored window is
    of the mean it is judged against: with three or four weeks of history an in-sample mean
    would shrink the placebo spread by a sixth and make every monitored score look larger)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(den >= MIN_ORDERS, num / den, np.nan)
        if weekly:
            rate = np.log(np.where(rate > 0, rate, np.nan))
    out = np.full_like(rate, np.nan)
    h = max(hist_end, 0)
    period = WEEK if weekly else PERIOD
    phase = np.arange(rate.shape[-1]) % period
    for p in range(period):
        at = phase == p
        hist = rate[..., :h][..., at[:h]]
        total = np.where(np.isfinite(hist), hist, 0).sum(axis=-1)
        seen = np.isfinite(hist).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            base = np.where(seen > 0, total / seen, np.nan)
            out[..., at] = rate[..., at] - base[..., None]
            if weekly:
                others = (total[..., None] - hist) / (seen[..., None] - 1)
                history_at = np.flatnonzero(at)[: hist.shape[-1]]
                out[..., history_at] = np.where(seen[..., None] > 1, hist - others, np.nan)
    return sign * out


def stretch_scores(a: np.ndarray, hist_end: int, ends: np.ndarray) -> dict[int, np.ndarray]:
    """Per length L: the mean of ``a`` (rows x windows) over the L windows ending at each of
    ``ends``, over the spread of such means at every position inside the first ``hist_end``
    windows. NaN where a stretch has fewer than half its windows or the history too few
    stretches."""
    ok = np.isfinite(a)
    cs, cn = running_sums(np.where(ok, a, 0.0)), running_sums(ok.astype(float))
    out = {}
    for L in LENGTHS:

        def means(stop: np.ndarray, L: int = L) -> np.ndarray:
            start = np.maximum(stop - L, 0)
            n = cn[..., stop] - cn[..., start]
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(n >= L / 2, (cs[..., stop] - cs[..., start]) / n, np.nan)

        placebo = means(np.arange(L, hist_end + 1))
        seen = np.isfinite(placebo)
        k = seen.sum(axis=-1)
        p = np.where(seen, placebo, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = p.sum(axis=-1) / k
            var = (np.where(seen, (p - mean[..., None]) ** 2, 0.0)).sum(axis=-1) / (k - 1)
        sd = np.where(k >= MIN_PLACEBOS, np.sqrt(var), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[L] = means(ends + 1) / np.where(sd > 0, sd, np.nan)[..., None]
    return out


def shift_start(a: np.ndarray, end: int, length: int) -> int:
    """Where the driver's shift began inside the stretch of ``length`` windows ending at
    ``end``: the s maximising the standardised sum of anomalies over s..end (the likelihood
    estimate of a step's start against the history's level)."""
    first = max(end - length + 1, 0)
    tail = np.nan_to_num(a[first : end + 1])[::-1]
    seen = np.cumsum(np.isfinite(a[first : end + 1])[::-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(seen > 0, np.cumsum(tail) / np.sqrt(seen), -np.inf)
    return end - int(np.argmax(score))


def supply_explained(outcome: np.ndarray, wait: np.ndarray, hist_end: int) -> np.ndarray:
    """The part of each cell's outcome anomalies its courier-wait anomalies explain: the wait
    times the history's least-squares slope through the origin, per cell (rows), NaN where
    the wait is. Courier supply moves a cell's late rate from day to day far more than most
    causes do; against what it explains, a cause's own step stands out."""
    ok = np.isfinite(outcome) & np.isfinite(wait)
    ok[..., max(hist_end, 0) :] = False
    w, o = np.where(ok, wait, 0.0), np.where(ok, outcome, 0.0)
    den = (w * w).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(den > 0, (w * o).sum(axis=-1) / den, 0.0)
    return slope[..., None] * wait


def _parent(slice_: dict[str, Any]) -> dict[str, Any]:
    """The slice whose rest a market cell is compared with: a region x category's region, a
    region's or a category's marketplace."""
    return {"region": slice_["region"]} if "region" in slice_ and "category" in slice_ else {}


def driver_findings(
    dw: DriverWindows,
    stats: dict[str, np.ndarray],
    hier: Hierarchy,
    first_pos: int,
    *,
    driver_z: float,
    outcome_z: float,
    supply_z: float | None = None,
    min_trials: float = 0.0,
    min_excess: float = 0.0,
    history: int | None = None,
) -> list[Finding]:
    """Findings of the monitored windows (positions ``first_pos`` on; ``stats`` are the
    window series' sums, rows as ``hier``); the ``history`` windows before them (all when
    None) are the history. Couriers on shift shift at ``supply_z`` (``driver_z`` when None)."""
    # positions below are of the windows from ``cut`` on; findings are shifted back at the end
    cut = 0 if history is None else max(first_pos - history, 0)
    stats = {k: v[:, cut:] for k, v in stats.items()}
    sums = {k: v[:, cut:] for k, v in dw.sums.items()}
    first_pos -= cut
    n = next(iter(stats.values())).shape[1]
    if first_pos >= n:
        return []
    ends = np.arange(first_pos, n)
    # the marketplace is left to the outcome detectors: a shift everywhere shows in every
    # region and category, and an alarm on all orders would fold unrelated ones into it
    rows = [(k, hier.find(s)) for k, s in enumerate(dw.slices) if s]
    rows = [(k, r) for k, r in rows if r is not None]
    if not rows:
        return []
    cells, series = (np.array(x) for x in zip(*rows, strict=True))
    driver_z_by: dict[str, dict[int, np.ndarray]] = {}
    anomalies: dict[str, np.ndarray] = {}
    driver_excess: dict[str, np.ndarray] = {}
    regions = np.array([set(dw.slices[k]) == {"region"} for k in cells])
    for name, w in DRIVERS.items():
        if np.isnan(sums[w.num]).all():
            continue
        a = _anomalies(sums[w.num][cells], sums[w.den][cells], first_pos, w.harm, weekly=w.supply)
        if w.supply:
            a[~regions] = np.nan
        anomalies[name] = a
    threshold = {
        name: supply_z if w.supply and supply_z is not None else driver_z
        for name, w in DRIVERS.items()
    }
    for name, a in anomalies.items():
        if SUPERSEDED.get(name) in anomalies:
            continue
        driver_z_by[name] = stretch_scores(a, first_pos, ends)
        if name in COUNT_DRIVERS:
            extra = np.where(np.isfinite(a), a * sums[DRIVERS[name].den][cells], 0.0)
            driver_excess[name] = running_sums(extra)
    # each cell is also compared with the rest of its parent (a region x category with its
    # region's other categories, which share its courier swings)
    parent = [hier.find(_parent(dw.slices[k])) for k in cells]
    has_parent = np.array([p is not None for p in parent])
    parent_rows = np.array(
        [p if p is not None else s for p, s in zip(parent, series, strict=True)], dtype=np.int64
    )
    outcome_by: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    # running sums, for support: of trials per outcome, of bad events above the history's
    # rate per outcome and form
    trials_sums: dict[str, np.ndarray] = {}
    excess_sums: dict[tuple[str, str], np.ndarray] = {}
    supply = anomalies.get("courier_wait")  # when recorded
    for comp in OUTCOMES:
        bad, trials = bad_counts(stats, comp)
        cell_trials = trials[series]
        trials_sums[comp] = running_sums(cell_trials)
        a = _anomalies(bad[series], cell_trials, first_pos, 1.0)
        rest = _anomalies(
            bad[parent_rows] - bad[series], trials[parent_rows] - cell_trials, first_pos, 1.0
        )
        rest[~has_parent] = np.nan
        forms = {"own": a, "rest": a - rest}
        if supply is not None:
            forms["supply"] = a - supply_explained(a, supply, first_pos)
        for form, anomaly in forms.items():
            outcome_by[comp, form] = stretch_scores(anomaly, first_pos, ends)
            excess = np.where(np.isfinite(anomaly), anomaly * cell_trials, 0.0)
            excess_sums[comp, form] = running_sums(excess)
    found: list[Finding] = []

    def over(running: np.ndarray, i: int, end: int, length: int) -> float:
        """Cell ``i``'s sum over the stretch of ``length`` windows ending at ``end``."""
        return float(running[i, end + 1] - running[i, max(end + 1 - length, 0)])

    def supported(key: tuple[str, str], i: int, end: int, length: int) -> bool:
        """Minimum support over the stretch, as an outcome alarm needs (``min_support``)."""
        enough = over(trials_sums[key[0]], i, end, length) >= min_trials
        return enough and over(excess_sums[key], i, end, length) >= min_excess

    for j, end in enumerate(int(e) for e in ends):
        candidates = [
            (name, L, i)
            for name, by_len in driver_z_by.items()
            for L, z in by_len.items()
            for i in map(int, np.flatnonzero(z[:, j] >= threshold[name]))
            if name not in driver_excess or over(driver_excess[name], i, end, L) >= min_excess
        ]
        tests = len(candidates) * len(outcome_by)
        best: dict[int, tuple[float, Finding]] = {}
        for name, L, i in candidates:
            cause = DRIVERS[name].cause
            zs = {
                key: float(by_len[L][i, j])
                for key, by_len in outcome_by.items()
                # courier supply is the shortage's own mechanism: not adjusted away
                if not (key[1] == "supply" and cause == "dasher_shortage")
            }
            start = shift_start(anomalies[name][i], end, L)
            passed = {k for k, z in zs.items() if z >= outcome_z and supported(k, i, end, L)}
            if not passed:
                continue
            moved = {comp for comp, _ in passed}
            best_key = max(passed, key=lambda k: zs[k])
            primary = best_key[0]
            p = float(norm.sf(zs[best_key]))
            dz = float(driver_z_by[name][L][i, j])
            row = int(series[i])
            f = Finding(
                row,
                end + cut,
                start + cut,
                primary,
                components=set(moved),
                p_value=p,
                q_value=min(1.0, p * tests),
                members={row},
                driver=cause,
            )
            if row not in best or dz > best[row][0]:
                best[row] = (dz, f)
        found.extend(f for _, f in best.values())
    return found
