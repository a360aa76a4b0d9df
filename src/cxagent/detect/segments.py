"""Conjugate segment models for BOCPD: predictive log densities on sufficient statistics.

Statistics are arrays ``(k, n_series, R)``: one column per run-length hypothesis. Row 0 is
the segment's age in columns (missing columns age it too); the rest are additive sums, or
values cached from the previous column. ``step(stats, a, b)`` returns the log predictive
density of the new column under every hypothesis and the statistics with the column added,
in one pass (each column is seen once, so predicting and absorbing share their work).

- ``BetaBinomialModel``: rate p ~ Beta(c p0, c (1 - p0)); counts are divided by the design
  effect ``1 + (n - 1) rho`` (rho from the history) so extra-binomial noise is not a change.
  The binomial coefficient is the same under every hypothesis, so it is left out (it cancels
  in the run-length posterior), and the posterior's log-gamma terms are cached: a column
  costs three log-gamma evaluations per hypothesis instead of nine.
- ``NormalModel``: y ~ N(level + slope u, sigma^2 / w), Normal-inverse-gamma prior
  (level ~ N(m0, sigma^2 / kappa), slope ~ N(0, sigma^2 / kappa) per ``trend_scale``
  columns, sigma^2 ~ IG(1, scale^2)); the predictive is Student-t (Bishop 2006, sec. 3.3;
  Murphy, "Conjugate Bayesian analysis of the Gaussian distribution", 2007). ``trend=False``
  is the classic piecewise-constant Gaussian model of Adams & MacKay (2007).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import gammaln

from cxagent.detect.base import FloatArray
from cxagent.detect.residual import Baseline

LOG_PI = float(np.log(np.pi))


@dataclass(frozen=True)
class BetaBinomialModel:
    """Beta-binomial predictive; ``a, b`` passed per column are effective (s, n)."""

    prior_rate: FloatArray  # (n_series,)
    strength: float
    n_stats: int = 6  # age, S, N, log-gammas of the posterior's alpha, beta, alpha + beta

    def empty(self) -> FloatArray:
        """Statistics of a new run, ``(n_stats, n_series, 1)``."""
        a0 = self.strength * self.prior_rate
        b0 = self.strength * (1 - self.prior_rate)
        zero = np.zeros_like(a0)
        lg = [gammaln(a0), gammaln(b0), gammaln(a0 + b0)]
        return np.stack([zero, zero, zero, *lg])[:, :, None]

    def step(
        self, stats: FloatArray, a: FloatArray, b: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        age, succ, trials, lg_a0, lg_b0, lg_ab0 = stats
        alpha = self.strength * self.prior_rate[:, None] + succ
        beta = self.strength * (1 - self.prior_rate[:, None]) + trials - succ
        s, n = a[:, None], b[:, None]
        lg_a, lg_b, lg_ab = gammaln(alpha + s), gammaln(beta + n - s), gammaln(alpha + beta + n)
        log_p = (lg_a + lg_b - lg_ab) - (lg_a0 + lg_b0 - lg_ab0)
        return log_p, np.stack([age + 1, succ + s, trials + n, lg_a, lg_b, lg_ab])

    def run_summary(self, stats: FloatArray) -> tuple[FloatArray, ...]:
        """(count, weight, sum, sum of squares) of a run, for the two-sample test."""
        return stats[0], stats[2], stats[1], np.zeros_like(stats[1])


@cache
def _t_norm_table(size: int) -> FloatArray:
    """log Gamma((nu + 1) / 2) - log Gamma(nu / 2) for nu = 2 + count, count = 0..size-1."""
    count = np.arange(size, dtype=float)
    return np.asarray(gammaln((count + 3) / 2) - gammaln((count + 2) / 2))


@dataclass(frozen=True)
class NormalModel:
    """Student-t predictive of a constant (or, with ``trend``, linear) segment."""

    prior_mean: FloatArray  # (n_series,)
    prior_scale: FloatArray  # (n_series,) per-unit noise sd guess
    strength: float
    trend: bool
    trend_scale: float
    n_stats: int = 8  # age, count, W, Swu, Swu2, Swy, Swuy, Swy2

    def empty(self) -> FloatArray:
        """Statistics of a new run, ``(n_stats, n_series, 1)``."""
        return np.zeros((self.n_stats, self.prior_mean.size, 1))

    def step(
        self, stats: FloatArray, a: FloatArray, b: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        y, w = a[:, None], b[:, None]
        age, cnt, sw, swu, swu2, swy, swuy, swy2 = stats
        m0 = self.prior_mean[:, None]
        k0 = self.strength
        u = age / self.trend_scale
        l00 = k0 + sw
        r0 = k0 * m0 + swy
        if self.trend:
            l01, l11, r1 = swu, k0 + swu2, swuy
            det = l00 * l11 - l01 * l01
            m_0 = (l11 * r0 - l01 * r1) / det
            m_1 = (l00 * r1 - l01 * r0) / det
            loc = m_0 + m_1 * u
            quad = (l11 - 2 * u * l01 + u * u * l00) / det
            fit = r0 * m_0 + r1 * m_1
        else:
            loc = r0 / l00
            quad = 1.0 / l00
            fit = r0 * loc
        b0 = self.prior_scale[:, None] ** 2
        alpha = 1.0 + 0.5 * cnt
        beta = np.maximum(b0 + 0.5 * (swy2 + k0 * m0 * m0 - fit), 1e-12 * b0)
        nu = 2 * alpha
        scale2 = beta / alpha * (1.0 / np.maximum(w, 1e-300) + quad)
        table = _t_norm_table(1 << max(10, int(cnt.max(initial=0)).bit_length()))
        log_p = (
            table[cnt.astype(np.intp)]
            - 0.5 * (np.log(nu * scale2) + LOG_PI)
            - (nu + 1) / 2 * np.log1p((y - loc) ** 2 / (nu * scale2))
        )
        wu = w * u
        new = np.stack(
            [age + 1, cnt + (w > 0), sw + w, swu + wu, swu2 + wu * u]
            + [swy + w * y, swuy + wu * y, swy2 + w * y * y]
        )
        return np.where(w > 0, log_p, 0.0), new

    def run_summary(self, stats: FloatArray) -> tuple[FloatArray, ...]:
        """(count, weight, sum, sum of squares) of a run, for the two-sample test."""
        return stats[1], stats[2], stats[5], stats[7]


def rate_prior(successes: FloatArray, trials: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Pooled rate and beta-binomial rho (moment estimate) of each series' history."""
    base = Baseline(True, successes.shape[0], None)
    ones = np.ones(successes.shape[0])
    for j in range(successes.shape[1]):
        base.absorb(successes[:, j], trials[:, j], ones)
    return base.theta(), base.spread()


def robust_location_scale(x: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-series median and per-unit sd guess (1.4826 MAD times sqrt of the median weight)."""
    seen = w > 0
    xs = np.where(seen, x, np.nan)
    mean = np.nan_to_num(np.nanmedian(xs, axis=1)) if seen.any() else np.zeros(x.shape[0])
    mad = 1.4826 * np.nanmedian(np.abs(xs - mean[:, None]), axis=1) if seen.any() else mean
    sd = np.nan_to_num(np.nanstd(xs, axis=1)) if seen.any() else mean
    scale = np.where(mad > 0, mad, np.where(sd > 0, sd, 1.0))
    med_w = np.array([np.median(row[row > 0]) if np.any(row > 0) else 1.0 for row in w])
    return mean, np.nan_to_num(scale, nan=1.0) * np.sqrt(med_w)
