"""Effects in CX points: expected and observed bad events, losses, pooled CX Scores.

The baseline of a slice over some windows is its statistics with every component's bad
events replaced by the calibrated expectation; current and baseline CX Scores are computed
from the summed statistics (``CXStats.metrics``), never as averages of per-window scores.

``excess_p`` tests whether a slice's bad events are above expectation, with the calibrated
variance (binomial plus shock) and its empirical null scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from cxagent.detect.base import FloatArray
from cxagent.incidents.detection import COMPONENTS, EVENTS, MetricModel, bad_counts
from cxagent.incidents.windows import daypart_of_window
from cxagent.metrics.definitions import STAT_FIELDS, CXStats, cx_components
from cxagent.metrics.series import measured


def slopes() -> dict[str, float]:
    """CX points per unit of each component's rate (its weight x 100 / its range), for the
    components in force (``cx_components()``)."""
    return {c.name: c.weight * 100.0 / abs(c.best - c.worst) for c in cx_components()}


@dataclass
class Effects:
    """Per component: observed bad events, expected bad events, variance and denominators,
    each (n_series, n_windows) over the windows of ``stats``."""

    stats: dict[str, np.ndarray]
    observed: dict[str, FloatArray]
    expected: dict[str, FloatArray]
    variance: dict[str, FloatArray]
    trials: dict[str, FloatArray]
    models: dict[str, MetricModel]
    dayparts: np.ndarray  # daypart index of each window
    tested: dict[str, tuple[FloatArray, FloatArray]]  # the detector's (expectation, variance)
    missing: frozenset[str] = frozenset()  # statistics the data lacks

    @staticmethod
    def compute(
        models: dict[str, MetricModel],
        stats: dict[str, np.ndarray],
        first_id: int,
        missing: frozenset[str] = frozenset(),
    ) -> Effects:
        obs, exp, var, tri, tested = {}, {}, {}, {}, {}
        for comp in COMPONENTS:
            s, n = bad_counts(stats, comp)
            obs[comp], tri[comp] = s, n
            exp[comp] = np.minimum(models[comp].expected(n, first_id), n)
            var[comp] = models[comp].variance(n, first_id)
            tested[comp] = models[comp].tested(s, n, first_id)
        dp = daypart_of_window(first_id + np.arange(stats["orders"].shape[1]))
        return Effects(stats, obs, exp, var, tri, models, dp, tested, missing)

    def loss_matrix(self) -> FloatArray:
        """CX points lost times orders per series and window (summed over components)."""
        orders = self.stats["orders"]
        total = np.zeros_like(orders, dtype=float)
        slope = slopes()
        for c in COMPONENTS:
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(
                    self.trials[c] > 0, (self.observed[c] - self.expected[c]) / self.trials[c], 0.0
                )
            total += slope[c] * rate * orders
        return total / present_weight(self.missing, has_ratings=True)

    def sums(self, rows: list[int], cols: np.ndarray, sign: list[float] | None = None) -> Totals:
        """Summed counts of ``rows`` weighted by ``sign`` (e.g. [1, -1]: A minus B inside
        it). The variance of a combination is the first row's variance model applied to the
        combination's expectation in each window (binomial plus the first row's shock)."""
        w = np.ones(len(rows)) if sign is None else np.asarray(sign, dtype=float)
        idx = np.ix_(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))

        def tot(a: np.ndarray) -> float:
            return float(w @ a[idx].sum(axis=1))

        if len(rows) == 1:
            variance = {c: tot(self.variance[c]) for c in COMPONENTS}
        else:
            variance = {}
            for c in COMPONENTS:
                cal = self.models[c].calibration
                e = np.maximum(w @ self.expected[c][idx], 0.0)
                theta, tau2 = cal.theta[rows[0]], cal.tau2[rows[0], self.dayparts[cols]]
                variance[c] = float(np.sum(e * (1 - theta) + e**2 * tau2))
        return Totals(
            stats={f: tot(self.stats[f]) for f in STAT_FIELDS},
            observed={c: tot(self.observed[c]) for c in COMPONENTS},
            expected={c: tot(self.expected[c]) for c in COMPONENTS},
            trials={c: tot(self.trials[c]) for c in COMPONENTS},
            variance=variance,
            missing=self.missing,
        )


@dataclass
class Totals:
    """Summed statistics of one slice (or a difference of slices) over some windows."""

    stats: dict[str, float]
    observed: dict[str, float]
    expected: dict[str, float]
    trials: dict[str, float]
    variance: dict[str, float]
    missing: frozenset[str] = frozenset()

    @property
    def orders(self) -> float:
        return self.stats["orders"]

    def excess(self, comp: str) -> float:
        return self.observed[comp] - self.expected[comp]

    def loss(self, comp: str | None = None) -> float:
        """CX points lost times orders, from a component's (or all components') excess."""
        comps = COMPONENTS if comp is None else (comp,)
        slope = slopes()
        total = 0.0
        for c in comps:
            rate_excess = self.excess(c) / max(self.trials[c], 1e-12)
            total += slope[c] * rate_excess * self.orders
        return total / present_weight(self.missing, has_ratings=self.stats["ratings"] > 0)

    def cx_scores(self) -> tuple[float, float]:
        """(current, baseline) CX Score of the summed statistics."""
        base = dict(self.stats)
        for comp in COMPONENTS:
            num, _, good = EVENTS[comp]
            exp = self.expected[comp]
            base[num] = self.trials[comp] - exp if good else exp

        def score(stats: dict[str, float]) -> float:
            # a statistic the data lacks is unknown, not zero: its components drop out
            values = {f: (np.nan if f in self.missing else max(v, 0.0)) for f, v in stats.items()}
            return CXStats(**values).metrics()["cx_score"]

        now, was = score(self.stats), score(base)
        return float(now), float(was)


def present_weight(missing: frozenset[str], *, has_ratings: bool) -> float:
    """Total CX Score weight of the components the data measures."""
    return sum(
        c.weight
        for c in cx_components()
        if measured(c.name, missing) and (c.name != "rating" or has_ratings)
    )


def excess_p(t: Totals, comp: str, scale: float = 1.0) -> float:
    """One-sided p-value of bad events above expectation (normal, calibrated variance)."""
    var = t.variance[comp]
    if var <= 0:
        return 1.0
    return float(ndtr(-t.excess(comp) / np.sqrt(var) / scale))
