"""Conjugate segment models for BOCPD: predictive log densities on sufficient statistics.

Statistics are arrays ``(n_series, R, k)``: one row per run-length hypothesis. Column 0 is
the segment's age in columns (missing columns age it too); the rest are additive sums.

- ``BetaBinomialModel``: rate p ~ Beta(c p0, c (1 - p0)); counts are divided by the design
  effect ``1 + (n - 1) rho`` (rho from the history) so extra-binomial noise is not a change.
- ``NormalModel``: y ~ N(level + slope u, sigma^2 / w), Normal-inverse-gamma prior
  (level ~ N(m0, sigma^2 / kappa), slope ~ N(0, sigma^2 / kappa) per ``trend_scale``
  columns, sigma^2 ~ IG(1, scale^2)); the predictive is Student-t (Bishop 2006, sec. 3.3;
  Murphy, "Conjugate Bayesian analysis of the Gaussian distribution", 2007). ``trend=False``
  is the classic piecewise-constant Gaussian model of Adams & MacKay (2007).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, gammaln

from cxagent.detect.base import FloatArray

LOG_PI = float(np.log(np.pi))


@dataclass(frozen=True)
class BetaBinomialModel:
    """Beta-binomial predictive; ``a, b`` passed per column are effective (s, n)."""

    prior_rate: FloatArray  # (n_series,)
    strength: float
    n_stats: int = 3  # age, S, N

    def log_predictive(self, stats: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
        alpha = self.strength * self.prior_rate[:, None] + stats[..., 1]
        beta = self.strength * (1 - self.prior_rate[:, None]) + stats[..., 2] - stats[..., 1]
        s, n = a[:, None], b[:, None]
        log_choose = gammaln(n + 1) - gammaln(s + 1) - gammaln(n - s + 1)
        out = log_choose + betaln(s + alpha, n - s + beta) - betaln(alpha, beta)
        return np.where(n > 0, out, 0.0)

    def add(self, stats: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
        new = np.stack([np.ones_like(a), a, b], axis=-1)
        return stats + new[:, None, :]

    def run_summary(self, stats: FloatArray) -> tuple[FloatArray, ...]:
        """(count, weight, sum, sum of squares) of a run, for the two-sample test."""
        return stats[..., 0], stats[..., 2], stats[..., 1], np.zeros_like(stats[..., 1])


@dataclass(frozen=True)
class NormalModel:
    """Student-t predictive of a constant (or, with ``trend``, linear) segment."""

    prior_mean: FloatArray  # (n_series,)
    prior_scale: FloatArray  # (n_series,) per-unit noise sd guess
    strength: float
    trend: bool
    trend_scale: float
    n_stats: int = 8  # age, count, W, Swu, Swu2, Swy, Swuy, Swy2

    def log_predictive(self, stats: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
        y, w = a[:, None], b[:, None]
        age, cnt, sw, swu, swu2, swy, swuy, swy2 = np.moveaxis(stats, -1, 0)
        m0 = self.prior_mean[:, None]
        k0 = self.strength
        b0 = self.prior_scale[:, None] ** 2
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
        alpha = 1.0 + 0.5 * cnt
        beta = np.maximum(b0 + 0.5 * (swy2 + k0 * m0 * m0 - fit), 1e-12 * b0)
        nu = 2 * alpha
        scale2 = beta / alpha * (1.0 / np.maximum(w, 1e-300) + quad)
        out = (
            gammaln((nu + 1) / 2)
            - gammaln(nu / 2)
            - 0.5 * (np.log(nu * scale2) + LOG_PI)
            - (nu + 1) / 2 * np.log1p((y - loc) ** 2 / (nu * scale2))
        )
        return np.where(w > 0, out, 0.0)

    def add(self, stats: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
        y, w = a[:, None], b[:, None]
        u = stats[..., 0] / self.trend_scale
        seen = (w > 0).astype(float) * np.ones_like(u)
        new = np.stack(
            [
                np.ones_like(u),
                seen,
                w + 0 * u,
                w * u,
                w * u * u,
                w * y + 0 * u,
                w * u * y,
                w * y * y + 0 * u,
            ],
            axis=-1,
        )
        return stats + new

    def run_summary(self, stats: FloatArray) -> tuple[FloatArray, ...]:
        """(count, weight, sum, sum of squares) of a run, for the two-sample test."""
        return stats[..., 1], stats[..., 2], stats[..., 5], stats[..., 7]
