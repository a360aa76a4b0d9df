"""Bayesian online change point detection (Adams and MacKay, arXiv 0710.3742, 2007).

The run length (columns since the last change) has a posterior updated once per column:
every run either grows, weighted by ``1 - hazard`` and its segment's predictive density, or
a change point starts a new run, weighted by ``hazard`` and the prior predictive. The same
recursion with max instead of sum gives the MAP segmentation (the Viterbi path of Fearnhead
and Liu, "On-line inference for multiple changepoint problems", JRSS B 2007), kept for
``scan``. Runs longer than ``max_run_length`` are merged into the longest hypothesis, so
memory and time per column are bounded; ``scan`` never truncates.

Per column it reports: ``score`` = posterior probability that a change happened within the
last ``recent`` columns; ``change_start`` = the start of the most likely current run;
``z`` and ``p_value`` = a two-sample test of that run against the earlier columns kept in the
longest run; since the posterior chose the start, the p-value is Bonferroni-corrected over
the ``recent`` candidate starts (approximate, conservative).
"""

from __future__ import annotations

from typing import Self

import numpy as np
from scipy.special import logsumexp

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
from cxagent.detect.residual import Baseline, obs_arrays, tail_p_values
from cxagent.detect.segments import BetaBinomialModel, NormalModel


class BOCPD(Detector):
    """BOCPD with a constant hazard and a conjugate segment model chosen by observation kind:
    beta-binomial for ``RateObs`` (``trend`` does not apply), Student-t for ``MeanObs``.

    ``hazard``: prior probability of a change per column (1/100 as in TCPDBench's default);
    ``trend``: Gaussian segments with a level and a slope rather than a level only;
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
        max_run_length: int = 500,
        prior_strength: float = 1.0,
        prior_mean: float | None = None,
        prior_scale: float | None = None,
        trend_scale: float | None = None,
        overdispersion: float | None = None,
    ) -> None:
        if not 0 < hazard < 1:
            raise ValueError(f"hazard must be in (0, 1), got {hazard}")
        self.hazard = hazard
        self.trend = trend
        self.direction = check_direction(direction)
        self.recent = recent
        self.max_run_length = max_run_length
        self.prior_strength = prior_strength
        self.prior_mean = prior_mean
        self.prior_scale = prior_scale
        self.trend_scale = trend_scale
        self.overdispersion = overdispersion

    def fit(self, obs: Observations) -> Self:
        self._start(obs, self.max_run_length, trace=False)
        self.update(obs)
        return self

    def scan(self, obs: Observations) -> DetectionResult:
        self._start(obs, max(self.max_run_length, obs.shape[1] + 1), trace=True)
        step = self.update(obs)
        return DetectionResult(step, self._map_change_points())

    def _start(self, obs: Observations, max_run: int, trace: bool) -> None:
        n_series = obs.shape[0]
        a, b = obs_arrays(obs)
        self.rate_ = isinstance(obs, RateObs)
        self.max_run_ = max_run
        self.model_: BetaBinomialModel | NormalModel
        if self.rate_:
            base = Baseline(True, n_series, None)
            for j in range(obs.shape[1]):
                base.absorb(a[:, j], b[:, j], np.ones(n_series))
            prior = base.theta() if self.prior_mean is None else np.full(n_series, self.prior_mean)
            rho = self.overdispersion
            self.rho_ = base.spread() if rho is None else np.full(n_series, rho)
            self.model_ = BetaBinomialModel(np.clip(prior, 1e-6, 1 - 1e-6), self.prior_strength)
        else:
            mean, scale = _robust_location_scale(a, b)
            self.model_ = NormalModel(
                prior_mean=mean if self.prior_mean is None else np.full(n_series, self.prior_mean),
                prior_scale=scale
                if self.prior_scale is None
                else np.full(n_series, self.prior_scale),
                strength=self.prior_strength,
                trend=self.trend,
                trend_scale=self.trend_scale or 1.0 / self.hazard,
            )
        self.t_ = 0
        self.log_post_ = np.zeros((n_series, 0))
        self.log_map_ = np.zeros((n_series, 0))
        self.stats_ = np.zeros((n_series, 0, self.model_.n_stats))
        self._back: list[IntArray] | None = [] if trace else None

    def update(self, obs: Observations) -> DetectionStep:
        if isinstance(obs, RateObs) != self.rate_:
            raise ValueError("update() got a different observation kind than fit()")
        a, b = obs_arrays(obs)
        if self.rate_:  # effective counts: divide by the beta-binomial design effect
            design = 1.0 + np.maximum(b - 1, 0) * self.rho_[:, None]
            a, b = a / design, b / design
        n_series, t_new = obs.shape
        out = np.zeros((3, n_series, t_new))
        starts = np.full((n_series, t_new), -1, dtype=np.int64)
        for j in range(t_new):
            out[:, :, j], starts[:, j] = self._column(a[:, j], b[:, j])
        return DetectionStep(self.t_ - t_new, out[0], out[1], out[2], starts)

    def _column(self, a: FloatArray, b: FloatArray) -> tuple[FloatArray, IntArray]:
        model, n_series = self.model_, a.shape[0]
        empty = np.zeros((n_series, 1, model.n_stats))
        new_lp = model.log_predictive(empty, a, b)[:, 0]
        grow_lp = model.log_predictive(self.stats_, a, b)
        log_h, log_g = np.log(self.hazard), np.log1p(-self.hazard)
        if self.t_ == 0:
            post = new_lp[:, None]
            best = new_lp[:, None]
            back = np.full(n_series, -1, dtype=np.int64)
        else:
            post = np.concatenate([(log_h + new_lp)[:, None], self.log_post_ + log_g + grow_lp], 1)
            back = np.argmax(self.log_map_, axis=1)
            top = self.log_map_.max(axis=1)
            best = np.concatenate(
                [(top + log_h + new_lp)[:, None], self.log_map_ + log_g + grow_lp], 1
            )
        stats = np.concatenate([model.add(empty, a, b), model.add(self.stats_, a, b)], axis=1)
        if stats.shape[1] > self.max_run_:  # merge the two longest runs, keep the older one
            post = np.concatenate([post[:, :-2], np.logaddexp(post[:, -2:-1], post[:, -1:])], 1)
            best = np.concatenate([best[:, :-2], np.maximum(best[:, -2:-1], best[:, -1:])], 1)
            stats = np.concatenate([stats[:, :-2], stats[:, -1:]], axis=1)
        self.log_post_ = post - logsumexp(post, axis=1, keepdims=True)
        self.log_map_ = best - best.max(axis=1, keepdims=True)
        self.stats_ = stats
        if self._back is not None:
            self._back.append(back)
        now, self.t_ = self.t_, self.t_ + 1
        return self._report(now)

    def _report(self, now: int) -> tuple[FloatArray, IntArray]:
        n_series, n_runs = self.log_post_.shape
        prob = np.exp(self.log_post_)
        score = prob[:, : min(self.recent, n_runs - 1)].sum(axis=1)
        run = np.argmax(self.log_post_, axis=1)
        changed = run < n_runs - 1
        rows = np.arange(n_series)
        c1, w1, s1, q1 = self.model_.run_summary(self.stats_[rows, run])
        c_all, w_all, s_all, q_all = self.model_.run_summary(self.stats_[:, -1])
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
        start = np.where(changed, now - run, -1)
        return np.stack([score, z, p]), start.astype(np.int64)

    def _map_change_points(self) -> list[IntArray]:
        assert self._back is not None
        back = np.stack(self._back, axis=1)  # (n_series, T)
        points = []
        for i, run in enumerate(np.argmax(self.log_map_, axis=1)):
            cps, end = [], self.t_ - 1
            while True:
                begin = end - int(run)
                if begin <= 0:
                    break
                cps.append(begin)
                end, run = begin - 1, back[i, begin]
            points.append(np.array(sorted(cps), dtype=np.int64))
        return points


def _robust_location_scale(x: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-series median and per-unit sd guess (1.4826 MAD times sqrt of the median weight)."""
    seen = w > 0
    xs = np.where(seen, x, np.nan)
    mean = np.nan_to_num(np.nanmedian(xs, axis=1)) if seen.any() else np.zeros(x.shape[0])
    mad = 1.4826 * np.nanmedian(np.abs(xs - mean[:, None]), axis=1) if seen.any() else mean
    sd = np.nan_to_num(np.nanstd(xs, axis=1)) if seen.any() else mean
    scale = np.where(mad > 0, mad, np.where(sd > 0, sd, 1.0))
    med_w = np.array([np.median(row[row > 0]) if np.any(row > 0) else 1.0 for row in w])
    return mean, np.nan_to_num(scale, nan=1.0) * np.sqrt(med_w)
