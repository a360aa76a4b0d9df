"""Calendar-pattern removal (hour-of-week for hourly series) as pure functions.

A profile is estimated per series and bucket (hour of week: ``period=168``; month of year:
``period=12``) against a centred moving level over one period, so a trend or an old level
shift does not leak into the buckets. Buckets are robust to incidents in the history
(median of the cycles for means, a trimmed pooled ratio for rates) and shrunk toward "no
effect" when a bucket has little data: means by empirical Bayes (a bucket's median is
weighted by tau^2 / (tau^2 + shrink * its sampling variance), tau^2 the variance of the
pattern across buckets), and rates as ``(observed + shrink) / (expected + shrink)`` events.
Rates are multiplicative: a factor scales the denominator (an exposure, like a Poisson
offset), so the successes stay counts and the likelihood keeps its denominator. Means are
additive: the offset is subtracted. Column ``j`` of a series falls in bucket
``(start + j) % period``.
"""

from __future__ import annotations

import numpy as np

from cxagent.detect.base import FloatArray, IntArray, MeanObs, RateObs


def bucket_index(n_times: int, *, period: int = 168, start: int = 0) -> IntArray:
    """Bucket (hour of week, say) of each column."""
    return ((start + np.arange(n_times)) % period).astype(np.int64)


def _rolling_sum(x: FloatArray, period: int) -> FloatArray:
    """Centred moving sum over ``period`` columns (the window slides inward at the edges)."""
    t = x.shape[1]
    c = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1)], axis=1)
    lo = np.clip(np.arange(t) - period // 2, 0, max(t - period, 0))
    hi = np.minimum(lo + period, t)
    return c[:, hi] - c[:, lo]


def _cycles(x: FloatArray, period: int, start: int, fill: float) -> FloatArray:
    """(n_series, n_cycles, period) view of columns by cycle and bucket, padded with ``fill``."""
    n, t = x.shape
    n_cycles = -(-(start + t) // period)
    out = np.full((n, n_cycles * period), fill)
    out[:, start : start + t] = x
    return out.reshape(n, n_cycles, period)


def rate_profile(
    successes: FloatArray,
    trials: FloatArray,
    *,
    period: int = 168,
    start: int = 0,
    trim: float = 0.2,
    shrink: float = 10.0,
) -> FloatArray:
    """Multiplicative factors ``(n_series, period)`` with trial-weighted mean 1 per series."""
    s, n = np.atleast_2d(successes).astype(float), np.atleast_2d(trials).astype(float)
    level = (_rolling_sum(s, period) + 0.5) / (_rolling_sum(n, period) + 1.0)
    expected = _cycles(n * level, period, start, 0.0)
    observed = _cycles(s, period, start, 0.0)
    seen = expected > 0
    k = seen.sum(axis=1)
    cut = np.floor(trim * k).astype(int)
    ratio = np.where(seen, observed / np.where(seen, expected, 1.0), np.nan)
    rank = np.argsort(np.argsort(np.where(seen, ratio, np.inf), axis=1), axis=1)
    keep = seen & (rank >= cut[:, None, :]) & (rank < (k - cut)[:, None, :])
    factor = ((observed * keep).sum(axis=1) + shrink) / ((expected * keep).sum(axis=1) + shrink)
    weight = expected.sum(axis=1) + 1e-300
    return factor / (
        (factor * weight).sum(axis=1, keepdims=True) / weight.sum(axis=1, keepdims=True)
    )


def mean_profile(
    values: FloatArray,
    weights: FloatArray | None = None,
    *,
    period: int = 168,
    start: int = 0,
    shrink: float = 1.0,
) -> FloatArray:
    """Additive offsets ``(n_series, period)``: shrunk median per bucket, centred on 0."""
    obs = MeanObs(values, weights)
    x, w = obs.values, obs.weights
    assert w is not None
    level = _rolling_sum(x * w, period) / np.maximum(_rolling_sum(w, period), 1e-300)
    resid = _cycles(np.where(w > 0, x - level, np.nan), period, start, np.nan)
    k = np.isfinite(resid).sum(axis=1)
    med = np.zeros(k.shape)
    has = k > 0
    med[has] = np.nanmedian(np.moveaxis(resid, 1, 2)[has], axis=1)
    within = (resid - med[:, None, :]).reshape(resid.shape[0], -1)  # noise around buckets
    mad = np.nanmedian(np.abs(within), axis=1)
    # empirical Bayes: a bucket median has variance ~ (pi/2) sigma^2 / k; the pattern tau^2
    sampling = shrink * np.pi / 2 * (1.4826 * np.nan_to_num(mad))[:, None] ** 2 / np.maximum(k, 1)
    tau2 = np.maximum(np.var(med, axis=1) - sampling.mean(axis=1), 0.0)[:, None]
    offset = np.where(has, med * tau2 / np.maximum(tau2 + sampling, 1e-300), 0.0)
    return offset - offset.mean(axis=1, keepdims=True)


def remove_rate_profile(obs: RateObs, factors: FloatArray, *, start: int = 0) -> RateObs:
    """Deseasonalised rates: trials scaled by the bucket factor (kept >= successes)."""
    idx = bucket_index(obs.shape[1], period=factors.shape[1], start=start)
    trials = np.maximum(obs.trials * factors[:, idx], obs.successes)
    return RateObs(obs.successes, trials)


def remove_mean_profile(obs: MeanObs, offsets: FloatArray, *, start: int = 0) -> MeanObs:
    """Deseasonalised means: the bucket offset subtracted (missing columns stay missing)."""
    idx = bucket_index(obs.shape[1], period=offsets.shape[1], start=start)
    values = np.where(obs.weights > 0, obs.values - offsets[:, idx], np.nan)  # type: ignore[operator]
    return MeanObs(values, obs.weights)
