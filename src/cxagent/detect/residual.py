"""Baselines that know a rate's denominator, and the online loop of the z-score and EWMA.

Each column contributes ``(num, den, var)`` under the baseline: for rates ``(s, n,
n p (1 - p) (1 + (n - 1) rho))``, the beta-binomial variance with intra-column correlation
``rho`` estimated by moments from the history (E[(s - n p)^2] = n p (1 - p) (1 + (n - 1) rho));
for means ``(w x, w, w sigma^2)``. A detector aggregates contributions with weights ``a``
(a window sum, an EWMA) into ``z = (A_num - theta A_den) / sqrt(A_var)``. Rate p-values use
the binomial tail on effective counts (counts scaled so the binomial variance equals
``A_var``), so a handful of events in a small cohort is judged as the small sample it is.
Baseline sums are exponentially forgotten (``half_life`` columns). ``fit`` absorbs all of the
history; in ``update``, once ready, columns in alarm are not absorbed, so a regression does
not become its own baseline (it keeps alarming until it ends).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Self

import numpy as np
from numpy.typing import NDArray
from scipy.special import betainc, ndtr

from cxagent.detect.base import (
    DetectionResult,
    DetectionStep,
    Detector,
    Direction,
    FloatArray,
    Observations,
    RateObs,
    alarm_change_points,
    check_direction,
)


class Baseline:
    """Forgotten sufficient statistics per series: ``sums`` rows are additive quantities."""

    def __init__(self, rate: bool, n_series: int, half_life: float | None) -> None:
        self.rate = rate
        self.keep = 1.0 if half_life is None else 0.5 ** (1.0 / half_life)
        # rate: columns, S, N, sum s^2, sum s n, sum n^2 | mean: columns, W, sum w x, sum w x^2
        self.sums = np.zeros((6 if rate else 4, n_series))

    @property
    def columns(self) -> FloatArray:
        return self.sums[0]

    def theta(self) -> FloatArray:
        """Baseline rate (with half a pseudo-success in one pseudo-trial) or weighted mean."""
        s = self.sums
        if self.rate:
            return (s[1] + 0.5) / (s[2] + 1.0)
        return s[2] / np.maximum(s[1], 1e-300)

    def spread(self) -> FloatArray:
        """rho for rates (beta-binomial), the unit variance sigma^2 for means."""
        s = self.sums
        if self.rate:
            p = self.theta()
            ss = (s[3] - 2 * p * s[4] + p * p * s[5]) / (p * (1 - p))
            pairs = s[5] - s[2]
            rho = np.where(pairs > 0, (ss - s[2]) / np.maximum(pairs, 1e-300), 0.0)
            return np.clip(rho, 0.0, 1.0)
        w = np.maximum(s[1], 1e-300)
        var = (s[3] - s[2] ** 2 / w) / np.maximum(s[0] - 1, 1.0)
        return np.maximum(var, 1e-12 * (1.0 + (s[2] / w) ** 2))

    def contribution(
        self, a: FloatArray, b: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(num, den, var) of one column: ``a, b`` are (s, n) for rates, (x, w) for means."""
        theta, spread = self.theta(), self.spread()
        if self.rate:
            return a, b, b * theta * (1 - theta) * (1 + np.maximum(b - 1, 0) * spread)
        return a * b, b, b * spread

    def absorb(self, a: FloatArray, b: FloatArray, mask: FloatArray) -> None:
        seen = (b > 0) * mask
        if self.rate:
            add = np.stack([seen, a, b, a * a, a * b, b * b]) * mask
        else:
            add = np.stack([seen, b, b * a, b * a * a]) * mask
        self.sums = self.sums * self.keep + add


def tail_p_values(
    rate: bool,
    num: FloatArray,
    den: FloatArray,
    var: FloatArray,
    theta: FloatArray,
    direction: Direction,
) -> tuple[FloatArray, FloatArray]:
    """Signed z and the p-value for ``direction`` of an aggregated contribution."""
    ok = (den > 0) & (var > 0)
    var = np.where(ok, var, 1.0)
    z = np.where(ok, (num - theta * den) / np.sqrt(var), 0.0)
    if rate:
        up, down = _binomial_tails(num, den, var, theta, z, direction)
    else:
        up, down = ndtr(-z), ndtr(z)
    p = {"increase": up, "decrease": down, "both": np.minimum(1.0, 2 * np.minimum(up, down))}
    return z, np.where(ok, p[direction], 1.0)


def _binomial_tails(
    num: FloatArray,
    den: FloatArray,
    var: FloatArray,
    theta: FloatArray,
    z: FloatArray,
    direction: Direction,
) -> tuple[FloatArray, FloatArray]:
    """Upper and lower binomial tails of effective counts, each computed only where it can
    decide the p-value (the incomplete beta is the cost of the whole loop): for "both",
    the tail on z's side, and the other one only where that tail exceeds 0.4 (the two tails
    sum to more than 1, so below 0.4 the other one cannot be the smaller)."""
    theta = np.broadcast_to(theta, z.shape)
    c = np.where(var > 0, den * theta * (1 - theta) / np.where(var > 0, var, 1.0), 1.0)
    k, n = np.clip(c * num, 0, None), c * den
    up, down = np.ones(z.shape), np.ones(z.shape)

    def fill(upper: bool, where: NDArray[np.bool_]) -> None:
        if upper:
            idx = where & (k > 0)
            up[idx] = betainc(k[idx], n[idx] - k[idx] + 1, theta[idx])
        else:
            idx = where & (n - k > 0)
            down[idx] = betainc(n[idx] - k[idx], k[idx] + 1, 1 - theta[idx])

    if direction != "both":
        fill(direction == "increase", np.ones(z.shape, dtype=bool))
        return up, down
    fill(True, z >= 0)
    fill(False, z < 0)
    near = np.where(z >= 0, up, down) > 0.4
    fill(True, near & (z < 0))
    fill(False, near & (z >= 0))
    return up, down


class ResidualDetector(Detector):
    """Online loop shared by the z-score and EWMA detectors (not registered itself)."""

    def __init__(
        self,
        *,
        direction: Direction,
        alpha: float,
        min_history: int,
        half_life: float | None,
    ) -> None:
        self.direction = check_direction(direction)
        self.alpha = alpha
        self.min_history = min_history
        self.half_life = half_life

    @abstractmethod
    def _start_aggregate(self, n_series: int) -> None:
        """Reset the aggregate state (called by ``fit``)."""

    @abstractmethod
    def _aggregate(
        self, num: FloatArray, den: FloatArray, var: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Fold one column's contribution in and return the aggregate (num, den, var)."""

    def _searched(self, p: FloatArray) -> FloatArray:
        """The p-value of the aggregate, corrected for any search the aggregate made (the
        scan picks the best of several stretches)."""
        return p

    def _change_start(self, now: int, z: FloatArray) -> np.ndarray:
        """First column of the current excursion at column ``now``: the column after the
        statistic last had the other sign (the scan knows its stretch instead)."""
        return np.where(z > 0, self.last_nonpos_, self.last_nonneg_) + 1

    def fit(self, obs: Observations) -> Self:
        n_series, t = obs.shape
        self.rate_ = isinstance(obs, RateObs)
        self.baseline_ = Baseline(self.rate_, n_series, self.half_life)
        self._start_aggregate(n_series)
        self.t_ = 0
        self.last_nonpos_ = np.full(n_series, -1, dtype=np.int64)
        self.last_nonneg_ = np.full(n_series, -1, dtype=np.int64)
        a, b = obs_arrays(obs)
        ones = np.ones(n_series)
        for j in range(t):
            self._aggregate(*self.baseline_.contribution(a[:, j], b[:, j]))
            self.baseline_.absorb(a[:, j], b[:, j], ones)
        self.t_ = t
        return self

    def update(self, obs: Observations) -> DetectionStep:
        if isinstance(obs, RateObs) != self.rate_:
            raise ValueError("update() got a different observation kind than fit()")
        n_series, t_new = obs.shape
        a, b = obs_arrays(obs)
        out = np.zeros((4, n_series, t_new))
        starts = np.full((n_series, t_new), -1, dtype=np.int64)
        for j in range(t_new):
            theta = self.baseline_.theta()
            agg = self._aggregate(*self.baseline_.contribution(a[:, j], b[:, j]))
            z, p = tail_p_values(self.rate_, *agg, theta, self.direction)
            p = self._searched(p)
            ready = self.baseline_.columns >= self.min_history
            z, p = np.where(ready, z, 0.0), np.where(ready, p, 1.0)
            now = self.t_ + j
            self.last_nonpos_ = np.where(z <= 0, now, self.last_nonpos_)
            self.last_nonneg_ = np.where(z >= 0, now, self.last_nonneg_)
            starts[:, j] = np.where(z != 0, self._change_start(now, z), -1)
            alarm = p <= self.alpha
            out[:, :, j] = np.abs(z), z, p, alarm
            self.baseline_.absorb(a[:, j], b[:, j], (~(alarm & ready)).astype(float))
        step = DetectionStep(self.t_, out[0], out[1], out[2], starts)
        self.t_ += t_new
        return step

    def scan(self, obs: Observations) -> DetectionResult:
        self.fit(obs.columns(0, 0))
        step = self.update(obs)
        return DetectionResult(
            step, alarm_change_points(step.p_value <= self.alpha, step.change_start)
        )


def obs_arrays(obs: Observations) -> tuple[FloatArray, FloatArray]:
    """(successes, trials) of rates or (values, weights) of means."""
    if isinstance(obs, RateObs):
        return obs.successes, obs.trials
    assert obs.weights is not None
    return obs.values, obs.weights
