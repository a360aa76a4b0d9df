"""Detection per CX component on daypart windows: calibrate, run a detector, control the FDR.

Every non-daypart slice is one series per component (late deliveries, item issues,
cancellations, refunds, support contacts), tested for an increase of its bad-event rate. The
detector (``cxagent.detect``) sees calibrated effective counts (``calibrate``: own history
for markets and slices across markets, the rest of the market for a slice inside one), so
its binomial likelihood knows the denominator and the between-window variance. Its p-values
are put on the empirical null of their class of shock share (``null``), and each window's
p-values across every slice x component are one family for Benjamini-Hochberg (Benjamini and
Hochberg, JRSS B 1995). An alarm also needs minimum support over its episode (``cxagent.detect.fdr``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from cxagent.detect import Detector, get_detector
from cxagent.detect.base import FloatArray, IntArray
from cxagent.detect.fdr import benjamini_hochberg, min_support
from cxagent.detect.seasonal import bucket_index
from cxagent.incidents.calibrate import (
    N_DAYPARTS,
    RateCalibration,
    effective_obs,
    expected_counts,
    fit_rate_calibration,
    tested_moments,
)
from cxagent.incidents.config import DetectConfig
from cxagent.incidents.null import EmpiricalNull, fit_empirical_null

# component: (numerator field, denominator field, the numerator counts the good outcome)
EVENTS: Final = {
    "on_time": ("on_time", "delivered", True),  # bad event: a late delivery
    "item_accuracy": ("bad_items", "items", False),  # a missing or substituted item line
    "cancellation": ("canceled", "orders", False),
    "refund": ("refunded", "orders", False),
    "support_contact": ("support", "orders", False),
}
COMPONENTS: Final = tuple(EVENTS)
# What the reported rates measure: the bad event of each component (higher is worse).
BAD_EVENT_RATE: Final = {
    "on_time": "late_rate",
    "item_accuracy": "item_issue_rate",
    "cancellation": "cancellation_rate",
    "refund": "refund_rate",
    "support_contact": "support_contact_rate",
}


def bad_counts(stats: dict[str, np.ndarray], component: str) -> tuple[FloatArray, FloatArray]:
    """(bad events, denominator) of a component, e.g. late deliveries over delivered orders."""
    num, den, good = EVENTS[component]
    n = np.asarray(stats[den], dtype=float)
    s = np.asarray(stats[num], dtype=float)
    return (np.clip(n - s, 0.0, None) if good else s), n


def running_sums(x: np.ndarray) -> np.ndarray:
    """Running sums along the last axis (windows) with a leading zero, so the sum over
    windows ``a..b-1`` is ``out[..., b] - out[..., a]``."""
    return np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(x, axis=-1)], axis=-1)


@dataclass
class MetricModel:
    """Everything fitted for one component: calibration, empirical null, live detector."""

    component: str
    calibration: RateCalibration
    null: EmpiricalNull
    shock: FloatArray  # design effect of a typical window (1 = binomial), per series
    detector: Detector

    def expected(self, trials: FloatArray, first_id: int) -> FloatArray:
        """Bad events expected from the own history for ``trials`` at windows ``first_id...``."""
        return expected_counts(self.calibration, trials, first_id)

    def tested(
        self, s: FloatArray, trials: FloatArray, first_id: int
    ) -> tuple[FloatArray, FloatArray]:
        """Expectation and variance as the detector tests them (in a market: against the
        rest of the market, ``calibrate.tested_moments``)."""
        return tested_moments(self.calibration, s, trials, first_id=first_id)

    def variance(self, trials: FloatArray, first_id: int) -> FloatArray:
        """Calibrated variance of the bad events of each window (binomial + shock)."""
        m = self.expected(trials, first_id)
        dp = bucket_index(trials.shape[-1], period=N_DAYPARTS, start=first_id % N_DAYPARTS)
        theta = self.calibration.theta[:, None]
        return m * (1 - theta) + m**2 * self.calibration.tau2[:, dp]


def design_effect(cal: RateCalibration, trials: FloatArray) -> FloatArray:
    """Variance of a typical window over its binomial variance: ``1 + n p tau^2 / (1 - p)``,
    with ``kappa^2`` for a slice judged against its market (1: binomial noise only; large:
    shocks dominate). Series are put on the empirical null of their class of this, since
    shocks are what makes tails heavy."""
    seen = np.maximum((trials > 0).sum(axis=1), 1)
    size = trials.sum(axis=1) / seen
    theta = cal.theta
    rel = np.where(cal.markets >= 0, cal.kappa2, cal.tau2.mean(axis=1))
    return 1.0 + size * theta * rel / (1.0 - theta)


def _detector(config: DetectConfig, markets: IntArray) -> Detector:
    """The configured detector; the EWMA slower on series judged against their own history
    (``DetectConfig.own_history_lam``: no market, ``markets < 0``)."""
    kwargs = config.detector_kwargs()
    if config.detector == "ewma" and config.own_history_lam is not None:
        kwargs["lam"] = np.where(np.asarray(markets) < 0, config.own_history_lam, kwargs["lam"])
    return get_detector(config.detector, direction="increase", **kwargs)


def _cross_fitted_null_p(
    s: FloatArray, n: FloatArray, first_id: int, markets: IntArray, config: DetectConfig
) -> FloatArray:
    """Out-of-sample p-values on the history: calibrate and fit on one half of the days,
    run the detector on the other half, and the other way round."""
    t = n.shape[1]
    half = (t // 2) // N_DAYPARTS * N_DAYPARTS
    folds = [(slice(0, half), slice(half, t)), (slice(half, t), slice(0, half))]
    out = []
    for fit, test in folds:
        fit_first = first_id + (fit.start or 0)
        cal = fit_rate_calibration(
            s[:, fit], n[:, fit], first_id=fit_first, markets=markets, period=config.period
        )
        det = _detector(config, markets)
        det.fit(effective_obs(cal, s[:, fit], n[:, fit], first_id=fit_first))
        test_first = first_id + (test.start or 0)
        out.append(det.update(effective_obs(cal, s[:, test], n[:, test], first_id=test_first)))
    return np.concatenate([step.p_value for step in out], axis=1)


def fit_models(
    stats: dict[str, np.ndarray], first_id: int, markets: IntArray, config: DetectConfig
) -> dict[str, MetricModel]:
    """Fit every component on history ``stats`` (columns from window ``first_id``)."""
    models = {}
    for comp in COMPONENTS:
        s, n = bad_counts(stats, comp)
        cal = fit_rate_calibration(s, n, first_id=first_id, markets=markets, period=config.period)
        shock = design_effect(cal, n)
        null_p = _cross_fitted_null_p(s, n, first_id, markets, config)
        null = fit_empirical_null(null_p, shock, edges=np.asarray(config.shock_edges))
        det = _detector(config, markets)
        det.fit(effective_obs(cal, s, n, first_id=first_id))
        models[comp] = MetricModel(comp, cal, null, shock, det)
    return models


@dataclass
class ColumnResults:
    """Per component (axis 0), series (axis 1) and processed window (axis 2)."""

    first: int  # window id of column 0
    p_raw: FloatArray
    p: FloatArray  # on the empirical null
    q: FloatArray  # BH-adjusted within each window
    alarm: np.ndarray  # bool
    change_start: IntArray  # window id where the episode began (-1: none)

    @property
    def n_windows(self) -> int:
        return int(self.p.shape[2])

    def extend(self, other: ColumnResults) -> ColumnResults:
        if other.first != self.first + self.n_windows:
            raise ValueError("results must be contiguous")
        cat = [
            np.concatenate([a, b], axis=2)
            for a, b in zip(self.arrays(), other.arrays(), strict=True)
        ]
        return ColumnResults(self.first, *cat)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.p_raw, self.p, self.q, self.alarm, self.change_start)


def run_models(
    models: dict[str, MetricModel],
    stats: dict[str, np.ndarray],
    first_id: int,
    all_stats: dict[str, np.ndarray],
    all_first: int,
    config: DetectConfig,
) -> ColumnResults:
    """Process new windows ``stats`` (from ``first_id``) with the live detectors.

    ``all_stats`` (from window ``all_first``, covering the new windows) lets an episode's
    support reach back to a change start before the new windows.
    """
    p_raw, p_cal, starts = [], [], []
    for comp in COMPONENTS:
        model = models[comp]
        s, n = bad_counts(stats, comp)
        obs = effective_obs(model.calibration, s, n, first_id=first_id)
        step = model.detector.update(obs)
        p_raw.append(step.p_value)
        p_cal.append(model.null.p_values(step.p_value, model.shock))
        cs = np.asarray(step.change_start)
        starts.append(np.where(cs >= 0, cs - step.start + first_id, -1))
    pr, pc, cs_all = np.stack(p_raw), np.stack(p_cal), np.stack(starts).astype(np.int64)
    supported = _support(models, all_stats, all_first, first_id, pc.shape[2], cs_all, config)
    q = np.full(pc.shape, np.nan)
    alarm = np.zeros(pc.shape, dtype=bool)
    for j in range(pc.shape[2]):
        tested = np.where(supported[0][:, :, j], pc[:, :, j], np.nan)
        rej, q[:, :, j] = benjamini_hochberg(tested, alpha=config.fdr_alpha)
        alarm[:, :, j] = rej & supported[1][:, :, j]
    return ColumnResults(first_id, pr, pc, q, alarm, cs_all)


def _support(
    models: dict[str, MetricModel],
    all_stats: dict[str, np.ndarray],
    all_first: int,
    first_id: int,
    t_new: int,
    change_start: IntArray,
    config: DetectConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(enough denominators to be tested, enough excess events to alarm) per episode."""
    enough = np.zeros(change_start.shape, dtype=bool)
    excess_ok = np.zeros(change_start.shape, dtype=bool)
    for k, comp in enumerate(COMPONENTS):
        s, n = bad_counts(all_stats, comp)
        expected = models[comp].tested(s, n, all_first)[0]
        cum = [running_sums(a) for a in (s, n, expected)]
        end = first_id - all_first + np.arange(t_new) + 1  # exclusive, positions in all_*
        start = np.where(change_start[k] >= 0, change_start[k] - all_first, end - 1)
        start = np.clip(start, 0, end - 1)
        rows = np.arange(n.shape[0])[:, None]
        ss, nn, ee = (c[rows, end] - c[rows, start] for c in cum)
        enough[k] = nn >= config.min_trials
        excess_ok[k] = min_support(
            ss,
            nn,
            ee / np.maximum(nn, 1e-12),
            min_trials=config.min_trials,
            min_excess=config.min_excess,
        )
    return enough, excess_ok
