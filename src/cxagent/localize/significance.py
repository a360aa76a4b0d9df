"""Significance of a slice: a quasi-likelihood deviance test on counts, BH-adjusted.

A slice aggregates its leaves to sufficient statistics: observed numerator ``V``, expected
numerator ``E``, dispersion-free variance ``B`` (sum of the leaves' Poisson or
two-proportion variances) and modelled variance ``W`` (sum of the leaves' fitted variances,
see ``variance``). The test statistic is the Poisson deviance

    D = 2 * (V * log(V / E) - (V - E)),

converted to the modelled variance scale, ``T = D * E / W``, and divided by the
genomic-control factor ``lambda`` (Devlin and Roeder, "Genomic control for association
studies", Biometrics 1999). ``T`` is referred to chi-square with one degree of freedom; the
signed root ``z = sign(V - E) * sqrt(T)`` gives one-sided p-values when the direction of the
regression is known.

Why the deviance rather than the Pearson statistic ``(V - E)**2 / W``: for small expected
counts (a sparse leaf, one viewer who stalled) the Pearson statistic is wildly
anti-conservative, while the signed-root deviance stays close to the exact Poisson tail
(McCullagh and Nelder, "Generalized Linear Models", 2nd ed., 1989, ch. 6 and 9 on
quasi-likelihood). For rates, ``B`` is the variance of the two-proportion comparison of the
observed numerator with the expected one given the observed denominator (binomial variance
of the after window plus the variance of the before-window rate), so ``T`` is a
two-proportion test on counts, never a test on averaged per-leaf rates.

Multiplicity: the search accepts a slice only below the Bonferroni level over all candidate
slices; the reported q-values are Benjamini-Hochberg adjustments over the same number of
tested slices (Benjamini and Hochberg, JRSS B 57, 1995).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

TINY = 1e-12


def poisson_deviance(observed: FloatArray, expected: FloatArray) -> FloatArray:
    """Poisson deviance of observed against expected, elementwise; 0 where nothing is expected
    and nothing observed."""
    v = np.maximum(np.asarray(observed, dtype=np.float64), 0.0)
    e = np.maximum(np.asarray(expected, dtype=np.float64), TINY)
    with np.errstate(divide="ignore", invalid="ignore"):
        vlog = np.where(v > 0.0, v * np.log(np.where(v > 0.0, v, 1.0) / e), 0.0)
    return np.maximum(2.0 * (vlog - (v - e)), 0.0)


def deviance_statistic(
    observed: FloatArray,
    expected: FloatArray,
    variance: FloatArray,
) -> FloatArray:
    """Chi-square(1) statistic ``D * E / W``; 0 for slices with no expected value or variance."""
    e = np.asarray(expected, dtype=np.float64)
    w = np.asarray(variance, dtype=np.float64)
    dev = poisson_deviance(observed, e)
    ok = (e > 0.0) & (w > 0.0)
    return np.where(ok, dev * np.where(ok, e, 0.0) / np.where(ok, w, 1.0), 0.0)


def normal_sf(z: float) -> float:
    """Upper tail of the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def p_value(z: float, sign: float) -> float:
    """p-value of a signed-root statistic: two-sided for ``sign == 0``, else one-sided in the
    direction of ``sign`` (-1 drops, +1 rises)."""
    return min(1.0, 2.0 * normal_sf(abs(z))) if sign == 0.0 else normal_sf(sign * z)


def critical_statistic(alpha: float, n_tests: int, *, two_sided: bool) -> float:
    """The chi-square(1) value a statistic must exceed to pass Bonferroni at ``alpha``."""
    level = alpha / max(n_tests, 1)
    z = NormalDist().inv_cdf(1.0 - (level / 2.0 if two_sided else level))
    return z * z


def genomic_control(statistics: FloatArray) -> float:
    """Median chi-square(1) statistic over its null median (0.4549), at least 1."""
    stats = np.asarray(statistics, dtype=np.float64)
    if stats.size == 0:
        return 1.0
    return max(1.0, float(np.median(stats)) / 0.454936423119572)


def benjamini_hochberg(p_values: list[float], n_tests: int) -> list[float]:
    """BH q-values of the given p-values, as if ``n_tests`` hypotheses were tested (the
    untested rest having larger p-values)."""
    m = max(n_tests, len(p_values))
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    q = [1.0] * len(p_values)
    running = 1.0
    for rank in range(len(order), 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = min(1.0, running)
    return q


def stars(q: float) -> str:
    """``***`` below 0.001, ``**`` below 0.01, ``*`` below 0.05, else empty."""
    if q < 0.001:
        return "***"
    if q < 0.01:
        return "**"
    if q < 0.05:
        return "*"
    return ""
