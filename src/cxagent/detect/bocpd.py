"""Bayesian online change point detection (Adams and MacKay, arXiv 0710.3742, 2007).

The run length (columns since the last change) has a posterior updated once per column:
every run either grows, weighted by ``1 - hazard`` and its segment's predictive density, or
a change point starts a new run, weighted by ``hazard`` and the prior predictive.

Truncation (``max_runs``): once a series holds more than ``max_runs`` run-length hypotheses,
only the ``max_runs / 2`` most probable are kept and renormalised, so time and memory per
column are bounded (Adams and MacKay prune runs of negligible mass; Fearnhead and Liu,
"On-line inference for multiple changepoint problems", JRSS B 2007, keep a fixed number of
particles). ``pruned_mass_`` holds each series' largest dropped mass, to check the cost.

Offline change points (``scan``) by ``select``: "mbic" (default): every run start that the
online posterior ranked first at some column is a candidate, and the MBIC-optimal subset is
kept (``penalised.py``: BOCPD proposes, a penalised likelihood over the same segment family
decides); "map": the MAP segmentation (max instead of sum: the Viterbi path of Fearnhead and
Liu 2007) over the kept hypotheses.

Per column: ``score`` = posterior probability of a change within the last ``recent``
columns; ``change_start`` = start of the most likely current run; ``z`` and ``p_value`` = a
two-sample test of that run against the earlier columns, Bonferroni-corrected over the
``recent`` candidate starts since the posterior chose the start (approximate, conservative).
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np

from cxagent.detect.base import (
    DetectionResult,
    DetectionStep,
    Detector,
    Direction,
    FloatArray,
    IntArray,
    Observations,
    RateObs,
    check_direction,
)
from cxagent.detect.penalised import select_change_points
from cxagent.detect.residual import obs_arrays, tail_p_values
from cxagent.detect.segments import (
    BetaBinomialModel,
    NormalModel,
    rate_prior,
    robust_location_scale,
)

Select = Literal["mbic", "map"]


class BOCPD(Detector):
    """BOCPD with a constant hazard and a conjugate segment model chosen by observation kind:
    beta-binomial for ``RateObs`` (``trend`` does not apply), Student-t for ``MeanObs``.

    ``hazard``: prior probability of a change per column (1/100 as in TCPDBench's default);
    ``trend``: Gaussian segments with a level and a slope rather than a level only;
    ``max_runs``: run-length hypotheses kept per series (None = all: exact, quadratic time);
    ``select``: how ``scan`` turns the pass into change points ("mbic" or "map", above);
    ``prior_strength``: pseudo-observations behind a new segment's prior; ``prior_mean`` /
    ``prior_scale``: prior rate (rates) or level and noise sd (means), None = robust estimates
    from the history given to ``fit``; ``trend_scale``: columns over which the slope prior
    moves the level by one noise sd (None = 1 / hazard); ``overdispersion``: the
    beta-binomial rho of rates (None = estimated from the history).
    """

    name = "bocpd"

    def __init__(
        self,
        *,
        hazard: float = 0.01,
        trend: bool = False,
        direction: Direction = "both",
        recent: int = 24,
        max_runs: int | None = 100,
        select: Select = "mbic",
        prior_strength: float = 1.0,
        prior_mean: float | None = None,
        prior_scale: float | None = None,
        trend_scale: float | None = None,
        overdispersion: float | None = None,
    ) -> None:
        if not 0 < hazard < 1:
            raise ValueError(f"hazard must be in (0, 1), got {hazard}")
        if max_runs is not None and max_runs < 2:
            raise ValueError(f"max_runs must be at least 2 or None, got {max_runs}")
        if select not in ("mbic", "map"):
            raise ValueError(f"unknown select {select!r}; choose 'mbic' or 'map'")
        self.hazard = hazard
        self.trend = trend
        self.direction = check_direction(direction)
        self.recent = recent
        self.max_runs = max_runs
        self.select = select
        self.prior_strength = prior_strength
        self.prior_mean = prior_mean
        self.prior_scale = prior_scale
        self.trend_scale = trend_scale
        self.overdispersion = overdispersion

    def fit(self, obs: Observations) -> Self:
        self._start(obs, trace=False)
        self.update(obs)
        return self

    def scan(self, obs: Observations) -> DetectionResult:
        self._start(obs, trace=self.select == "map")
        step = self.update(obs)
        if self.select == "map":
            return DetectionResult(step, self._map_change_points())
        a, b = self._effective(obs)
        points = select_change_points(a, b, step.change_start, rate=self.rate_, trend=self.trend)
        return DetectionResult(step, points)

    def _start(self, obs: Observations, trace: bool) -> None:
        n_series = obs.shape[0]
        a, b = obs_arrays(obs)
        self.rate_ = isinstance(obs, RateObs)
        self.model_: BetaBinomialModel | NormalModel
        if self.rate_:
            rate, rho = rate_prior(a, b)
            rate = rate if self.prior_mean is None else np.full(n_series, self.prior_mean)
            self.rho_ = (
                rho if self.overdispersion is None else np.full(n_series, self.overdispersion)
            )
            self.model_ = BetaBinomialModel(np.clip(rate, 1e-6, 1 - 1e-6), self.prior_strength)
        else:
            mean, scale = robust_location_scale(a, b)
            if self.prior_mean is not None:
                mean = np.full(n_series, self.prior_mean)
            if self.prior_scale is not None:
                scale = np.full(n_series, self.prior_scale)
            self.model_ = NormalModel(
                mean, scale, self.prior_strength, self.trend, self.trend_scale or 1 / self.hazard
            )
        self.t_ = 0
        self.empty_ = self.model_.empty()
        self.total_ = self.empty_  # the run since the first column: the two-sample baseline
        self.stats_ = self.empty_[:, :, :0]
        self.log_post_ = np.zeros((n_series, 0))
        self.log_map_ = np.zeros((n_series, 0))  # only with select="map"
        self.pruned_mass_ = np.zeros(n_series)
        self._back: list[FloatArray] | None = [] if trace else None

    def _effective(self, obs: Observations) -> tuple[FloatArray, FloatArray]:
        """Columns as the model sees them: rates divided by the beta-binomial design effect."""
        a, b = obs_arrays(obs)
        if self.rate_:
            design = 1.0 + np.maximum(b - 1, 0) * self.rho_[:, None]
            return a / design, b / design
        return a, b

    def update(self, obs: Observations) -> DetectionStep:
        if isinstance(obs, RateObs) != self.rate_:
            raise ValueError("update() got a different observation kind than fit()")
        a, b = self._effective(obs)
        n_series, t_new = obs.shape
        out = np.zeros((3, n_series, t_new))
        starts = np.full((n_series, t_new), -1, dtype=np.int64)
        for j in range(t_new):
            out[:, :, j], starts[:, j] = self._column(a[:, j], b[:, j])
        return DetectionStep(self.t_ - t_new, out[0], out[1], out[2], starts)

    def _column(self, a: FloatArray, b: FloatArray) -> tuple[FloatArray, IntArray]:
        model = self.model_
        new_lp, new_stats = model.step(self.empty_, a, b)
        grow_lp, grow_stats = model.step(self.stats_, a, b)
        log_h, log_g = np.log(self.hazard), np.log1p(-self.hazard)
        post = np.concatenate([log_h + new_lp, self.log_post_ + log_g + grow_lp], axis=1)
        self.log_post_ = _log_normalise(post if self.t_ else new_lp)
        if self.select == "map":
            self._map_column(new_lp, grow_lp, log_h, log_g)
        self.stats_ = np.concatenate([new_stats, grow_stats], axis=2)
        if self.max_runs is not None and self.log_post_.shape[1] > self.max_runs:
            self._prune(self.max_runs // 2)
        self.total_ = model.step(self.total_, a, b)[1]
        now, self.t_ = self.t_, self.t_ + 1
        return self._report(now)

    def _map_column(
        self, new_lp: FloatArray, grow_lp: FloatArray, log_h: float, log_g: float
    ) -> None:
        """The max-product recursion and, when tracing, the age behind each new run."""
        rows = np.arange(new_lp.shape[0])
        if self.t_ == 0:
            self.log_map_, back = new_lp - new_lp.max(axis=1, keepdims=True), np.zeros(rows.size)
        else:
            top = np.argmax(self.log_map_, axis=1)
            back = self.stats_[0, rows, top]  # age of the best segmentation's last run
            fresh = self.log_map_[rows, top][:, None] + log_h + new_lp
            best = np.concatenate([fresh, self.log_map_ + log_g + grow_lp], axis=1)
            self.log_map_ = best - best.max(axis=1, keepdims=True)
        if self._back is not None:
            self._back.append(back)

    def _prune(self, size: int) -> None:
        """Keep the ``size`` most probable runs (filtering, or MAP too when it is tracked)."""
        key = self.log_post_ if self.select != "map" else np.maximum(self.log_post_, self.log_map_)
        keep = np.argpartition(-key, size - 1, axis=1)[:, :size]
        post = np.take_along_axis(self.log_post_, keep, axis=1)
        self.log_post_ = _log_normalise(post)
        log_kept = post[:, 0] - self.log_post_[:, 0]  # log of the posterior mass kept
        self.pruned_mass_ = np.maximum(self.pruned_mass_, -np.expm1(log_kept))
        self.stats_ = np.take_along_axis(self.stats_, keep[None], axis=2)
        if self.select == "map":
            self.log_map_ = np.take_along_axis(self.log_map_, keep, axis=1)

    def _report(self, now: int) -> tuple[FloatArray, IntArray]:
        rows = np.arange(self.log_post_.shape[0])
        age = self.stats_[0]
        recent = (age <= self.recent) & (age <= now)  # the run since the start is no change
        score = np.where(recent, np.exp(self.log_post_), 0.0).sum(axis=1)
        run = np.argmax(self.log_post_, axis=1)
        run_age = age[rows, run]
        changed = run_age <= now
        c1, w1, s1, q1 = self.model_.run_summary(self.stats_[:, rows, run])
        c_all, w_all, s_all, q_all = self.model_.run_summary(self.total_[:, :, 0])
        c0, w0, s0, q0 = c_all - c1, w_all - w1, s_all - s1, q_all - q1
        ok = changed & (w0 > 0) & (w1 > 0)
        w0, w1 = np.where(ok, w0, 1.0), np.where(ok, w1, 1.0)
        theta0 = s0 / w0
        if self.rate_:
            pooled = np.clip((s0 + s1) / (w0 + w1), 1e-9, 1 - 1e-9)
            var = w1 * pooled * (1 - pooled) * (1 + w1 / w0)
            theta0 = np.clip(theta0, 1e-9, 1 - 1e-9)
        else:  # pooled within-part unit variance
            within = np.maximum(q0 - s0 * theta0, 0.0) + np.maximum(q1 - s1 * s1 / w1, 0.0)
            unit = within / np.maximum(c0 + c1 - 2, 1.0)
            var = np.maximum(unit, 1e-12) * w1 * (1 + w1 / w0)
        z, p = tail_p_values(self.rate_, s1, w1, np.where(ok, var, 0.0), theta0, self.direction)
        p = np.minimum(1.0, p * min(self.recent, now + 1))  # the start was selected: Bonferroni
        start = np.where(changed, now + 1 - run_age, -1)
        return np.stack([score, z, p]), start.astype(np.int64)

    def _map_change_points(self) -> list[IntArray]:
        assert self._back is not None
        n_series = self.log_map_.shape[0]
        if self.t_ == 0:
            return [np.zeros(0, dtype=np.int64) for _ in range(n_series)]
        back = np.stack(self._back, axis=1).astype(np.int64)  # (n_series, T): ages
        ages = self.stats_[0, np.arange(n_series), np.argmax(self.log_map_, axis=1)]
        points = []
        for i, age in enumerate(ages.astype(np.int64)):
            cps, end = [], self.t_
            while end - age > 0:
                cps.append(end - age)
                end, age = end - age, back[i, end - age]
            points.append(np.array(sorted(cps), dtype=np.int64))
        return points


def _log_normalise(log_p: FloatArray) -> FloatArray:
    """Rows shifted so that they sum to 1 in probability (log-sum-exp along axis 1)."""
    top = log_p.max(axis=1, keepdims=True)
    return log_p - (top + np.log(np.exp(log_p - top).sum(axis=1, keepdims=True)))
