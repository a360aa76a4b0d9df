"""Settings of the detection pipeline, in one typed object (documented defaults)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from cxagent.detect import detector_names
from cxagent.errors import SpecError

# Default parameters per detector, in daypart windows (4 a day; 112 = four weeks).
DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "ewma": {"lam": 0.4, "half_life": 112.0, "min_history": 8},
    "zscore": {"window": 1, "half_life": 112.0, "min_history": 8},
    "scan": {"max_window": 28, "half_life": 112.0, "min_history": 8},
    "bocpd": {"hazard": 1 / 112, "recent": 8},
}


@dataclass(frozen=True)
class DetectConfig:
    """How detection runs. Times are local wall-clock, like the data.

    - ``detector``: ``ewma`` (default: evidence smoothed over about a day of windows),
      ``scan`` (the most significant stretch of the last 1, 2, 4, 8, 16 or 28 windows, so a
      small shift that has lasted days accumulates; ``cxagent.detect.scan``), ``zscore``
      (each window alone) or ``bocpd``; ``detector_params`` override the defaults in
      ``DETECTOR_DEFAULTS``; ``direction`` is always "increase" of a bad-event rate. Scan
      against EWMA, measured on 180 unseen root-cause scenarios (docs/benchmarks.md): as
      many planted causes found in scope and half as many incidents where nothing was
      planted, but a short spike in a small dataset can be missed (the scan pays a factor
      of six for its stretches), so it is an option.
    - ``own_history_lam``: None (default), or the EWMA's smoothing for the series judged
      against their own history - markets (a region) and slices across markets (a category
      everywhere) - whose windows carry their market's day-to-day shocks (courier supply moves
      a whole region). A slow chart there averages one-day shocks out while it accumulates a
      sustained shift; slices inside a market are judged against the rest of it, where the
      shock cancels, and keep the detector's fast ``lam``. A trade-off, measured on the
      root-cause suite (docs/benchmarks.md): 0.1 found 65 of 69 sustained planted causes
      instead of 62 and raised fewer incidents on controls, but the extra multi-day regional
      shocks it finds are named courier shortages, and the grocery-wide demo incident comes a
      day later. The ewma detector only.
    - ``monitor_days``: the last days of a batch run that are monitored window by window;
      earlier windows (at most ``history_days``, at least ``min_history_days``) calibrate.
      ``monitor_from`` pins the first monitored window instead (incremental runs do).
    - ``period``: calendar pattern removed, in windows: 4 = daypart of day (default), 28 =
      daypart of week. The hour-of-day pattern lives inside each window; a weekday x
      daypart profile per series from a few weeks is mostly noise (measured: on a 30-day
      null scenario with 10-14 days of history, 28 raised false high-severity incidents and
      4 raised none).
    - ``fdr_alpha``: Benjamini-Hochberg level per window across every slice x metric.
    - ``min_trials`` / ``min_excess``: minimum support of an alarm over its episode (change
      start to now): denominators, and bad events above the calibrated expectation.
    - ``shock_edges``: classes of design effect (window variance over binomial variance) for
      the empirical null: market shocks, not size, make the tails heavy.
    - ``residual_alpha``: level of the tests that decide what an alarm is about (market
      contrast, descent to a sub-slice, explaining away; see ``grouping``).
    - ``driver_checks``: also raise an incident where a hypothesis's operational driver
      (batched share, merchant prep time, courier supply, promised time) shifted the harmful
      way by ``driver_z`` times its stretch-to-stretch spread and the late or cancellation
      rate of the same cell rose by ``driver_outcome_z`` times its own (``drivers``). Chosen
      on the root-cause training suite: a steady driver shows a drift days before its
      noisy outcome does. A region's couriers on shift, read against their week, shift at
      ``supply_driver_z`` (the lowest that raised no region without a courier cut on the
      training suite: 0 of 1,005 at 5.5, 1 at 5.0; 73 of 75 cuts at 5.5, 68 at 7).
    - severity, from the effect (CX points the slice lost over the incident window) and the
      impact (points x affected orders, in "marketplace-days": divided by the orders of an
      average day, so 1.0 = the whole marketplace's CX Score down one point for a day):
      ``high`` when points >= ``high_points`` and impact >= ``high_impact``; ``medium`` when
      points >= ``medium_points`` and impact >= ``medium_impact``; ``low`` otherwise.
    """

    detector: str = "ewma"
    detector_params: dict[str, Any] = field(default_factory=dict)
    own_history_lam: float | None = None
    monitor_days: int = 7
    history_days: int = 28
    min_history_days: int = 14
    period: int = 4
    monitor_from: dt.datetime | None = None
    fdr_alpha: float = 0.01
    min_trials: float = 100.0
    min_excess: float = 10.0
    shock_edges: tuple[float, ...] = (1.25, 2.0, 4.0)
    residual_alpha: float = 0.01
    high_points: float = 5.0
    high_impact: float = 0.5
    medium_points: float = 2.0
    medium_impact: float = 0.1
    top_slices: int = 8
    driver_checks: bool = True
    driver_z: float = 7.0
    supply_driver_z: float = 5.5
    driver_outcome_z: float = 3.0

    def __post_init__(self) -> None:
        if self.detector not in detector_names():
            raise SpecError(
                f"detector: {self.detector!r} is not one of {', '.join(detector_names())}"
            )
        if self.own_history_lam is not None and not 0 < self.own_history_lam <= 1:
            raise SpecError(f"own_history_lam: must lie in (0, 1], got {self.own_history_lam}")
        if self.own_history_lam is not None and self.detector != "ewma":
            raise SpecError(
                f"own_history_lam: applies to the ewma detector only, not {self.detector!r}"
            )
        if not 0 < self.fdr_alpha < 1:
            raise SpecError(f"fdr_alpha: must lie in (0, 1), got {self.fdr_alpha}")
        if self.min_history_days < 7:
            raise SpecError("min_history_days: at least 7 days are needed to calibrate")
        if self.period not in (4, 28):
            raise SpecError(
                f"period: 4 (daypart of day) or 28 (daypart of week), not {self.period}"
            )
        if self.monitor_days < 1:
            raise SpecError("monitor_days: must be >= 1")
        for name in ("driver_z", "supply_driver_z", "driver_outcome_z"):
            if not getattr(self, name) > 0:
                raise SpecError(f"{name}: must be > 0, got {getattr(self, name)}")

    def detector_kwargs(self) -> dict[str, Any]:
        return {**DETECTOR_DEFAULTS.get(self.detector, {}), **self.detector_params}
