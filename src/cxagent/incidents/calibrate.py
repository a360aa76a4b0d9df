"""Calibration of window rates: pattern, baseline, between-window variance, market context.

Binomial noise alone understates how much a busy slice's rate moves from one window to the
next: a whole market has good and bad days (courier supply, weather), and every order in the
window shares them. Per series and daypart the variance of a window's bad events ``s`` on
``n`` trials is modelled as ``n p (1 - p) + (n p)^2 tau^2``: binomial noise plus a relative
shock ``tau^2`` common to the window (the additive random-effect model of DerSimonian and
Laird, "Meta-analysis in clinical trials", 1986; on control charts, Laney, "Improved control
charts for attributes", Quality Engineering 2002). ``tau^2`` is estimated by trimmed
moments (robust to an old incident in the history) and, for a slice inside a market, shrunk
toward the market's own estimate in proportion to how much of its variance the shock
explains: a store sees too few events to estimate it alone.

A slice inside a market (a region) is judged against the rest of its market in the same
window: its expectation is multiplied by the rest's observed-over-expected factor ``g``, so
the shared shock cancels (a difference in differences), and what remains is its own
relative variance ``kappa^2`` (same estimator, on the history) plus the error of ``g`` (the
delta method for a ratio). Markets themselves and slices across markets keep ``tau^2``.
Counts divided by the design effect (variance over binomial variance) are the effective
counts handed to the detectors, so their binomial likelihoods carry the right variance and
still know the denominator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from cxagent.detect import RateObs
from cxagent.detect.base import FloatArray, IntArray
from cxagent.detect.seasonal import bucket_index, rate_profile

N_DAYPARTS = 4
LINK_POWERS = (0.0, 0.5, 1.0)  # candidate links of a slice to its market: ratio ... shift
MIN_FACTOR = 0.05  # a market factor never takes a slice's expectation below 5% of baseline


@dataclass(frozen=True)
class RateCalibration:
    """Per series: multiplicative window-of-period ``factors``, baseline rate ``theta`` after
    the pattern is removed, relative between-window variance ``tau2`` per daypart, and for
    a slice in a market its relative variance against the rest of the market."""

    factors: FloatArray  # (n_series, period)
    theta: FloatArray  # (n_series,)
    tau2: FloatArray  # (n_series, 4)
    markets: IntArray  # (n_series,) row of the series' market, -1 for none
    kappa2: FloatArray  # (n_series,) relative variance against the rest of the market
    link_power: FloatArray  # (n_series,) how the market's shock carries over (``link_gamma``)

    @property
    def period(self) -> int:
        return int(self.factors.shape[1])


def _trimmed_mean(
    e2: FloatArray, v: FloatArray, m2: FloatArray, keep: IntArray, tau2: FloatArray
) -> FloatArray:
    """Per row, the mean of the ``keep`` smallest ``e2 / (v + m2 tau2)`` (``v == 0``: missing)."""
    seen = v > 0
    q = np.where(seen, e2 / np.where(seen, v + m2 * tau2[:, None], 1.0), np.inf)
    q = np.sort(q, axis=1)
    kept = np.arange(q.shape[1])[None, :] < keep[:, None]
    return np.where(kept, q, 0.0).sum(axis=1) / np.maximum(keep, 1)


def trimmed_tau2(e: FloatArray, v: FloatArray, m: FloatArray, trim: float) -> FloatArray:
    """Per row, tau^2 >= 0 such that the trimmed mean of ``e^2 / (v + m^2 tau^2)`` equals that
    of a chi-square(1) trimmed alike (bisection on log tau^2). ``v == 0`` marks missing.

    A row whose binomial noise alone already accounts for its spread (or with fewer than
    three windows kept) gets 0 without a bisection: most rows, the stores and small slices.
    Every step works row by row, so leaving those rows out changes no other row's result."""
    seen = v > 0
    keep = np.floor((1 - trim) * seen.sum(axis=1)).astype(np.int64)
    cut = chi2.ppf(1 - trim, 1)
    target = chi2.cdf(cut, 3) / (1 - trim)  # E[X; X <= cut] / P(X <= cut), X ~ chi2(1)
    e2, m2 = e**2, m**2
    n = e.shape[0]
    none = (_trimmed_mean(e2, v, m2, keep, np.zeros(n)) <= target) | (keep < 3)
    out = np.zeros(n)
    rows = np.flatnonzero(~none)
    if not rows.size:
        return out
    e2, v, m2, keep = e2[rows], v[rows], m2[rows], keep[rows]
    lo, hi = np.full(rows.size, -10.0), np.full(rows.size, 2.0)  # log10 tau^2
    for _ in range(24):  # 12 decades to within 1e-6 of a decade
        mid = (lo + hi) / 2
        above = _trimmed_mean(e2, v, m2, keep, 10.0**mid) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    out[rows] = 10.0 ** ((lo + hi) / 2)
    return out


def fit_rate_calibration(
    successes: FloatArray,
    trials: FloatArray,
    *,
    first_id: int,
    markets: IntArray,
    period: int = N_DAYPARTS,
    trim: float = 0.1,
    prior_windows: float = 10.0,
) -> RateCalibration:
    """Calibrate on history columns ``first_id, first_id + 1, ...`` (absolute window ids).

    ``markets[i]`` is the row of the series whose shocks series ``i`` shares (its market),
    or -1; ``prior_windows`` is the weight of the market's ``tau^2`` in windows of data.
    """
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    factors = rate_profile(s, n, period=period, start=first_id % period)
    nd = n * factors[:, bucket_index(n.shape[1], period=period, start=first_id % period)]
    theta = (s.sum(axis=1) + 0.5) / (nd.sum(axis=1) + 1.0)
    e = s - nd * theta[:, None]
    v = nd * (theta * (1 - theta))[:, None]
    m = nd * theta[:, None]
    dp = bucket_index(n.shape[1], period=N_DAYPARTS, start=first_id % N_DAYPARTS)
    tau2 = np.zeros((s.shape[0], N_DAYPARTS))
    for d in range(N_DAYPARTS):
        cols = dp == d
        tau2[:, d] = trimmed_tau2(e[:, cols], v[:, cols], m[:, cols], trim)
    mk = np.asarray(markets, dtype=np.int64)
    inside = mk >= 0
    prior = tau2[np.where(inside, mk, 0)]
    prior_info = _information_from(v, m, dp, prior)
    w_own = np.where(inside[:, None], prior_info, 1.0)
    w_prior = np.where(inside[:, None], prior_windows, 0.0)
    tau2 = (w_own * tau2 + w_prior * prior) / np.maximum(w_own + w_prior, 1e-12)
    mt2 = market_tau2(tau2, mk, dp)
    # the link that leaves the smallest deviance on the history (``_link_choice``)
    powers = np.asarray(LINK_POWERS)
    kappas, devs = [], []
    for power in powers:
        g, rel = market_factor(mk, s, m, mt2, trials=n, power=float(power))
        resid = np.where(inside[:, None], s - m * g, 0.0)
        binom = np.where(inside[:, None], m * g * (1 + rel), 0.0)
        kappa2 = trimmed_tau2(resid, binom, m * g, trim)
        kappas.append(kappa2)
        devs.append(_trimmed_deviance(resid, binom + (m * g) ** 2 * kappa2[:, None], trim))
    dev = np.stack(devs)
    best = _link_choice(dev, inside, seen=(n > 0).sum(axis=1))
    kappa2 = np.stack(kappas)[best, np.arange(len(best))]
    power = np.where(inside, powers[best], 0.0)
    return RateCalibration(factors, theta, tau2, mk, np.where(inside, kappa2, 0.0), power)


def _link_choice(dev: FloatArray, inside: np.ndarray, seen: IntArray) -> IntArray:
    """Index of the link per series, from the deviances ``dev`` (links x series): the
    component's (least total deviance over the series in markets), unless the series' own
    best link beats it by more than ``log(windows)``, BIC's price of a parameter (Schwarz
    1978): a small slice's history cannot tell the links apart and keeps the common one,
    a large slice whose shocks carry over differently gets its own."""
    common = int(np.argmin(np.where(inside[None, :], dev, 0.0).sum(axis=1)))
    own = np.argmin(dev, axis=0)
    cols = np.arange(dev.shape[1])
    gain = dev[common] - dev[own, cols]
    return np.where(gain > np.log(np.maximum(seen, 2)), own, common)


def _trimmed_deviance(e: FloatArray, var: FloatArray, trim: float) -> FloatArray:
    """Per row, the Gaussian deviance ``log var + e^2 / var`` summed over its windows but the
    ``trim`` share with the largest ``e^2 / var`` (an old incident must not choose the link)."""
    seen = var > 0
    q = np.where(seen, e**2 / np.where(seen, var, 1.0), np.inf)
    dev = np.where(seen, np.log(np.where(seen, var, 1.0)) + q, 0.0)
    order = np.argsort(q, axis=1)
    keep = np.floor((1 - trim) * seen.sum(axis=1)).astype(np.int64)
    kept = np.zeros_like(seen)
    np.put_along_axis(kept, order, np.arange(e.shape[1])[None, :] < keep[:, None], axis=1)
    return np.asarray(np.where(kept, dev, 0.0).sum(axis=1))


def expected_counts(cal: RateCalibration, trials: FloatArray, first_id: int) -> FloatArray:
    """Bad events expected from each series' own history (pattern x baseline x trials)."""
    idx = bucket_index(trials.shape[-1], period=cal.period, start=first_id % cal.period)
    return np.asarray(trials) * cal.factors[:, idx] * cal.theta[:, None]


def market_factor(
    markets: IntArray,
    successes: FloatArray,
    expected: FloatArray,
    market_tau2: FloatArray,
    *,
    trials: FloatArray,
    power: float | FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Per series and window: the factor ``1 + beta gamma (g - 1)`` by which the rest of the
    market moves the expectation (1 outside markets), and the relative variance that factor
    adds, ``(beta gamma)^2 E / E_rest``. ``g`` is the rest's observed over expected bad
    events and ``beta = tau_m^2 / (tau_m^2 + 1 / E_rest)`` the share of its deviation that is
    the market's shock rather than count noise (a control variate, Lavenberg and Welch,
    1981): about 1 for lateness in a busy market, about 0 for item issues, which no shock
    moves. ``gamma = link_gamma(...)`` carries the shock over as a ratio or a shift."""
    inside = (markets >= 0)[:, None]
    mk = np.where(markets >= 0, markets, 0)
    e_rest = np.maximum(expected[mk] - expected, 0.0) + 0.5
    g = (np.maximum(successes[mk] - successes, 0.0) + 0.5) / e_rest
    beta = market_tau2 / (market_tau2 + 1.0 / e_rest)
    gamma = link_gamma(power, expected, trials, e_rest, np.maximum(trials[mk] - trials, 0.0))
    factor = np.where(inside, np.maximum(1.0 + beta * gamma * (g - 1.0), MIN_FACTOR), 1.0)
    return factor, np.where(inside, (beta * gamma) ** 2 * expected / e_rest, 0.0)


def link_gamma(
    power: float | FloatArray,
    expected: FloatArray,
    trials: FloatArray,
    rest_expected: FloatArray,
    rest_trials: FloatArray,
) -> FloatArray:
    """How a relative move of the rest of the market carries over to a slice: the ratio of
    their expected rates to the power ``power``. 0: rates move in proportion (a bad day
    doubles every slice's late rate); 1: they move by the same amount (it adds five points
    to each), so a slice with half the market's rate moves twice as much relative to its
    own. Which one holds depends on the metric and the data, so ``fit_rate_calibration``
    picks the power that fits the history best (``LINK_POWERS``)."""
    ok = (trials > 0) & (rest_trials > 0) & (expected > 0)
    rate = np.where(ok, expected, 1.0) / np.where(ok, trials, 1.0)
    rest = np.where(ok, rest_expected, 1.0) / np.where(ok, rest_trials, 1.0)
    p = np.asarray(power, dtype=float)
    p = p[:, None] if p.ndim == 1 and rate.ndim == 2 else p
    return np.where(ok, np.clip(rest / rate, 1e-2, 1e2) ** p, 1.0)


def market_tau2(cal_tau2: FloatArray, markets: IntArray, dp: IntArray) -> FloatArray:
    """The market's tau^2 at each window's daypart, per series (0 outside markets)."""
    out = cal_tau2[np.where(markets >= 0, markets, 0)][:, dp]
    return np.where((markets >= 0)[:, None], out, 0.0)


def _information(v: FloatArray, m: FloatArray, tau2: FloatArray) -> FloatArray:
    """Windows' worth of information on tau^2: sum over windows of the squared share of the
    window's variance that the shock explains (1 for a window of pure shock)."""
    shock = m**2 * tau2[:, None]
    share = np.where(v > 0, shock / np.maximum(v + shock, 1e-300), 0.0)
    return (share**2).sum(axis=1)


def _information_from(v: FloatArray, m: FloatArray, dp: IntArray, tau2: FloatArray) -> FloatArray:
    return np.stack(
        [_information(v[:, dp == d], m[:, dp == d], tau2[:, d]) for d in range(N_DAYPARTS)],
        axis=1,
    )


def tested_moments(
    cal: RateCalibration, successes: FloatArray, trials: FloatArray, *, first_id: int
) -> tuple[FloatArray, FloatArray]:
    """Expectation and variance of the bad events of windows ``first_id, ...`` as the
    detectors test them: from the own history (pattern x baseline x trials) and, in a
    market, moved by the rest of the market's factor; variance binomial times the design
    effect (its shock, or its variance against the market plus the factor's error)."""
    e, g, design = _tested(cal, successes, trials, first_id)
    return e * g, e * g * (1 - cal.theta[:, None]) * design


def _tested(
    cal: RateCalibration, successes: FloatArray, trials: FloatArray, first_id: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(own expectation, market factor, design effect) per series and window."""
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    e = expected_counts(cal, n, first_id)
    dp = bucket_index(n.shape[1], period=N_DAYPARTS, start=first_id % N_DAYPARTS)
    g, rel = market_factor(
        cal.markets, s, e, market_tau2(cal.tau2, cal.markets, dp), trials=n, power=cal.link_power
    )
    inside = (cal.markets >= 0)[:, None]
    extra = np.where(inside, rel + e * g * cal.kappa2[:, None], e * cal.tau2[:, dp])
    return e, g, 1.0 + extra / (1 - cal.theta[:, None])


def effective_obs(
    cal: RateCalibration, successes: FloatArray, trials: FloatArray, *, first_id: int
) -> RateObs:
    """What the detectors see for windows ``first_id, ...``: trials scaled by the pattern
    (an exposure) and, in a market, by the rest of the market's factor; counts divided by
    the design effect (variance over binomial variance)."""
    s = np.asarray(successes, dtype=float)
    e, g, design = _tested(cal, s, trials, first_id)
    nd = np.maximum(e / cal.theta[:, None] * g, s)
    return RateObs(s / design, nd / design)
