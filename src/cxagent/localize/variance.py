"""Robust fit of the leaf variance function ``dispersion * base + relative**2 * expected**2``.

Real counts are noisier than Poisson in two ways: a constant overdispersion factor
(quasi-Poisson) and a part that grows with the square of the size (forecast error and
relative fluctuations, as in the negative binomial). Which one dominates differs between
data sets (Squeeze's B0 is purely relative noise, video stalls are near binomial), so both
are estimated from the leaves of the case at hand.

Fit: on the leaves with base >= ``min_fit_size`` (where the Gaussian approximation is
adequate, Cochran's rule of five), for each crossover size ``m`` on a log grid (and
``m = inf``, pure quasi-Poisson) the variance shape is ``base + expected**2 / m``; its scale
is the lower quartile of the scaled squared residuals over that of chi-square(1) (0.1015),
and the grid point with the smallest capped Gaussian negative log-likelihood wins (each
leaf's squared z-score is capped at the chi-square(1) 0.99 quantile, a bounded-influence
M-estimate; Huber and Ronchetti, "Robust Statistics", 2009). The lower quartile keeps the
scale unbiased with up to 75% abnormal leaves, which matters when a root cause covers most
of the traffic; the cap keeps abnormal leaves from choosing the shape. Counts cannot be less
variable than Poisson/binomial, so the dispersion is floored at 1 (the relative part is
kept). With too few usable leaves the Poisson/binomial variance is used as is.

The fit is run twice by the caller: on all leaves, then on the leaves outside the slices
found in the first pass (the "normal" leaves).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CHI2_1_LOWER_QUARTILE = 0.10153104426762154
QUARTILE = 0.25
CAP = 6.634896601021214  # chi-square(1) 0.99 quantile
GRID_POINTS = 30


def fit_variance(
    residual: FloatArray,
    base: FloatArray,
    expected: FloatArray,
    usable: BoolArray,
    *,
    min_fit_size: float,
    min_fit_leaves: int,
) -> tuple[float, float, int]:
    """Return ``(dispersion, relative, n_leaves_used)``; ``(1, 0, 0)`` without enough data."""
    sel = usable & (base >= min_fit_size)
    n_used = int(sel.sum())
    if n_used < min_fit_leaves:
        return 1.0, 0.0, 0
    b, e, r2 = base[sel], expected[sel], residual[sel] ** 2
    square_over_base = e * e / b
    lo = max(float(square_over_base.min()), 1e-12) / 10.0
    hi = max(float(square_over_base.max()), lo) * 10.0
    best: tuple[float, float, float] | None = None
    for m in [*np.geomspace(lo, hi, GRID_POINTS), math.inf]:
        shape = b + (e * e / m if math.isfinite(m) else 0.0)
        scaled = r2 / shape
        scale = float(np.quantile(scaled, QUARTILE)) / CHI2_1_LOWER_QUARTILE
        if scale <= 0.0:
            continue
        loss = float(np.sum(np.log(scale * shape)) + np.sum(np.minimum(scaled / scale, CAP)))
        if best is None or loss < best[0]:
            best = (loss, scale, m)
    if best is None:
        return 1.0, 0.0, 0
    _, scale, m = best
    relative = math.sqrt(scale / m) if math.isfinite(m) else 0.0
    return max(scale, 1.0), relative, n_used


def leaf_variance(
    base: FloatArray, expected: FloatArray, dispersion: float, relative: float
) -> FloatArray:
    """The modelled variance of observed minus expected, per leaf."""
    return dispersion * base + (relative * expected) ** 2
