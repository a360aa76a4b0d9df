"""Penalised selection among candidate change points (optimal partitioning with MBIC).

BOCPD proposes, a penalised likelihood disposes. Given a series and its candidate change
points (here: every run start that BOCPD's online run-length posterior ranked first at some
column), the subset that minimises ``sum over segments of [cost(segment) + log(n_i)] +
k (p + 2) log(T)`` is found exactly by optimal partitioning over the candidates (Jackson et
al., "An algorithm for optimal partitioning of data on an interval", IEEE SPL 2005; the
dynamic programme that PELT prunes, Killick, Fearnhead and Eckley, JASA 2012). The penalty
is the modified BIC of Zhang and Siegmund ("A modified Bayes information criterion with
applications to the analysis of comparative genomic hybridization data", Biometrics 2007)
exactly as the changepoint R package implements it (``log(n_i)`` per segment of ``n_i``
columns, ``(p + 2) log(T)`` per change, ``p`` parameters per segment); it is the default
penalty of the published PELT and BinSeg runs of TCPDBench.

Segment costs are twice the negative log-likelihood with the segment's parameters at their
maximum:

- means (``rate=False``): weighted least squares of a level (p = 1) or of a level and a
  slope (p = 2, ``trend``), divided by the noise variance. The variance is estimated under
  the no-change model (the residual variance of one segment over the whole series), as the
  changepoint package assumes unit variance on standardised data: the estimate is inflated
  by real changes, which makes the selection conservative (a change must explain a share of
  the total variation, not only beat the within-segment noise);
- rates (``rate=True``): the binomial deviance of effective counts (already divided by the
  beta-binomial design effect), p = 1; the variance is known.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from cxagent.detect.base import FloatArray, IntArray


def _prefix(values: list[FloatArray]) -> FloatArray:
    """(k, T + 1) cumulative sums with a leading zero column."""
    stacked = np.stack(values)
    return np.concatenate([np.zeros((len(values), 1)), np.cumsum(stacked, axis=1)], axis=1)


def _gaussian_rss(sums: FloatArray, start: IntArray, stop: IntArray, trend: bool) -> FloatArray:
    """Weighted residual sum of squares of a level (and slope) fit on ``[start, stop)``."""
    n, st, stt, sy, sty, syy = sums[:, stop] - sums[:, start]
    origin = start.astype(float)  # centre time on the segment start: better conditioning
    stt = stt - 2 * origin * st + origin * origin * n
    sty = sty - origin * sy
    st = st - origin * n
    safe_n = np.maximum(n, 1e-300)
    level_rss = syy - sy * sy / safe_n
    if not trend:
        return np.maximum(level_rss, 0.0)
    det = n * stt - st * st
    ok = det > 1e-9 * np.maximum(n * stt, 1e-300)
    det = np.where(ok, det, 1.0)
    slope = (n * sty - st * sy) / det
    level = (sy - slope * st) / safe_n
    rss = np.where(ok, syy - level * sy - slope * sty, level_rss)
    return np.maximum(rss, 0.0)


def _binomial_deviance(sums: FloatArray, start: IntArray, stop: IntArray) -> FloatArray:
    s, n = sums[:, stop] - sums[:, start]
    p = s / np.maximum(n, 1e-300)
    return -2 * (xlogy(s, p) + xlogy(n - s, 1 - p))


class SegmentCost:
    """Cost of any segment ``[start, stop)`` of one series, from prefix sums."""

    def __init__(self, a: FloatArray, b: FloatArray, *, rate: bool, trend: bool) -> None:
        self.rate, self.trend = rate, trend and not rate
        self.n_params = 2 if self.trend else 1
        if rate:
            self.sums = _prefix([a, b])
            self.variance = 1.0
            return
        seen = b > 0
        y = np.where(seen, a, 0.0)
        y = y - (np.sum(y * b) / np.sum(b) if seen.any() else 0.0)
        t = np.arange(a.size, dtype=float)
        self.sums = _prefix([b, b * t, b * t * t, b * y, b * t * y, b * y * y])
        self.variance = 1.0
        null = float(self.cost(np.array([0]), np.array([a.size]))[0])
        self.variance = null / max(int(seen.sum()) - self.n_params, 1)

    def cost(self, start: IntArray, stop: IntArray) -> FloatArray:
        if self.rate:
            return _binomial_deviance(self.sums, start, stop)
        return _gaussian_rss(self.sums, start, stop, self.trend) / self.variance


def mbic_select(cost: SegmentCost, candidates: IntArray, n_obs: int) -> IntArray:
    """The subset of ``candidates`` (columns where a segment would start) of least MBIC."""
    inside = np.unique(candidates[(candidates > 0) & (candidates < n_obs)])
    if inside.size == 0 or not cost.variance > 1e-12:
        return np.zeros(0, dtype=np.int64)
    pos = np.concatenate([[0], inside, [n_obs]]).astype(np.int64)
    m = pos.size
    i, j = np.triu_indices(m, k=1)
    table = np.full((m, m), np.inf)
    table[i, j] = cost.cost(pos[i], pos[j]) + np.log(pos[j] - pos[i])
    per_change = (cost.n_params + 2) * np.log(n_obs)
    best = np.zeros(m)
    prev = np.zeros(m, dtype=np.int64)
    extra = np.where(np.arange(m) > 0, per_change, 0.0)
    for end in range(1, m):
        total = best[:end] + table[:end, end] + extra[:end]
        prev[end] = int(np.argmin(total))
        best[end] = total[prev[end]]
    chosen, end = [], m - 1
    while prev[end] > 0:
        end = int(prev[end])
        chosen.append(pos[end])
    return np.array(sorted(chosen), dtype=np.int64)


def select_change_points(
    a: FloatArray, b: FloatArray, candidates: IntArray, *, rate: bool, trend: bool
) -> list[IntArray]:
    """Per series, the MBIC-optimal subset of its candidate change points.

    ``a, b``: ``(n_series, T)`` effective (successes, trials) for rates, (values, weights)
    for means; ``candidates``: any ``(n_series, C)`` integer array (entries <= 0 ignored,
    e.g. BOCPD's per-column ``change_start``).
    """
    out = []
    for row_a, row_b, row_c in zip(a, b, candidates, strict=True):
        cost = SegmentCost(row_a, row_b, rate=rate, trend=trend)
        out.append(mbic_select(cost, row_c, row_a.size))
    return out
