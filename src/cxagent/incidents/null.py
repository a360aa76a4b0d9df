"""The empirical null: p-values rescaled to the tails the history actually shows.

Shocks are heavy-tailed, so p-values are finally put on an empirical null (Efron, "Large-scale
simultaneous hypothesis testing: the choice of a null hypothesis", JASA 2004): per metric and
class of shock share (design effect), the scale ``sigma0 >= 1`` of the probit-transformed
null p-values, estimated from cross-fitted runs on the history and matched in the upper
tail, where alarms are decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from cxagent.detect.base import FloatArray, IntArray


@dataclass(frozen=True)
class EmpiricalNull:
    """Scale ``sigma0`` of the null probit scores per class of a per-series value (the design
    effect)."""

    edges: FloatArray  # class boundaries, increasing; class k is [edges[k-1], edges[k])
    scale: FloatArray  # (len(edges) + 1,), each >= 1

    def classes(self, value: FloatArray) -> IntArray:
        return np.searchsorted(self.edges, np.asarray(value), side="right").astype(np.int64)

    def p_values(self, p: FloatArray, value: FloatArray) -> FloatArray:
        """Recalibrated one-sided p-values (``p`` shaped (n_series, T), ``value`` (n_series,))."""
        z = probit_scores(p)
        return np.where(np.isfinite(p), ndtr(-z / self.scale[self.classes(value)][:, None]), p)


def probit_scores(p: FloatArray) -> FloatArray:
    """``z* = Phi^-1(1 - p)``: standard normal under a calibrated one-sided null."""
    return -ndtri(np.clip(np.asarray(p, dtype=float), 1e-300, 1.0))


INCIDENT_Z = 6.0
MAX_SCALE = 3.0


def fit_empirical_null(
    null_p: FloatArray,
    value: FloatArray,
    *,
    edges: FloatArray,
    quantiles: tuple[float, ...] = (0.99, 0.995, 0.999),
    min_count: int = 1000,
) -> EmpiricalNull:
    """Per class of ``value``, ``sigma0 = max(1, max_q z*_q / Phi^-1(q))`` over the upper
    ``quantiles`` (those with at least 5 scores above) of the probit scores of null p-values:
    a tail-matched variant of Efron's empirical null. A class with fewer than ``min_count``
    finite scores is pooled with the classes below it until it has enough, and no class is
    scaled less than the one below it (heavier shocks never make tails lighter).

    Scores beyond ``INCIDENT_Z`` (p below about 1e-9) are left out of the fit: they are
    real incidents inside the history, not noise, and one of them would otherwise stretch
    the tail quantiles and mute the metric everywhere; the scale is capped at ``MAX_SCALE``.
    """
    z = probit_scores(null_p)
    z = np.where(z > INCIDENT_Z, np.nan, z)
    edges = np.asarray(edges, dtype=float)
    cls = EmpiricalNull(edges, np.ones(len(edges) + 1)).classes(value)
    finite = np.isfinite(z)
    scale = np.ones(len(edges) + 1)
    for k in range(len(edges) + 1):
        lo = k
        while (
            lo > 0
            and np.count_nonzero(finite & (cls >= lo)[:, None] & (cls <= k)[:, None]) < min_count
        ):
            lo -= 1
        zz = z[(cls >= lo) & (cls <= k)]
        zz = zz[np.isfinite(zz)]
        ratios = [np.quantile(zz, q) / ndtri(q) for q in quantiles if zz.size * (1 - q) >= 5]
        scale[k] = min(max(1.0, *ratios, scale[k - 1] if k else 1.0), MAX_SCALE)
    return EmpiricalNull(edges, scale)
