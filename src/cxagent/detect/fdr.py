"""False-discovery control across many series, and the minimum-support rule.

Thousands of slice series are tested every hour; at a 1% level dozens would alarm on noise
alone. Benjamini-Hochberg keeps the expected share of false alarms among the alarms at
``alpha`` for independent or positively dependent p-values (Benjamini and Hochberg,
"Controlling the false discovery rate", JRSS B 1995); Benjamini-Yekutieli holds under any
dependence at the price of a factor sum(1/i) (Benjamini and Yekutieli, Annals of Statistics
2001). Slices of one cube overlap (a city contains its stores), so BY is the safe choice
when the family mixes parents and children. A p-value of NaN is not tested.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cxagent.detect.base import FloatArray

Method = Literal["bh", "by"]


def adjusted_p_values(p_values: ArrayLike, *, method: Method = "bh") -> FloatArray:
    """BH (or BY) adjusted p-values (q-values) of any shape; NaN stays NaN."""
    if method not in ("bh", "by"):
        raise ValueError(f"unknown FDR method {method!r}; choose 'bh' or 'by'")
    p = np.asarray(p_values, dtype=float)
    flat = p.ravel()
    tested = np.flatnonzero(np.isfinite(flat))
    m = tested.size
    out = np.full(flat.shape, np.nan)
    if m == 0:
        return out.reshape(p.shape)
    order = tested[np.argsort(flat[tested], kind="stable")]
    ranks = np.arange(1, m + 1)
    factor = float(np.sum(1.0 / ranks)) if method == "by" else 1.0
    scaled = flat[order] * m * factor / ranks
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out.reshape(p.shape)


def benjamini_hochberg(
    p_values: ArrayLike, *, alpha: float = 0.05, method: Method = "bh"
) -> tuple[NDArray[np.bool_], FloatArray]:
    """Rejections at FDR ``alpha`` and the adjusted p-values, both shaped like the input."""
    q = adjusted_p_values(p_values, method=method)
    return np.nan_to_num(q, nan=1.0) <= alpha, q


def min_support(
    successes: ArrayLike,
    trials: ArrayLike,
    baseline_rate: ArrayLike,
    *,
    min_trials: float = 100.0,
    min_excess: float = 5.0,
    direction: Literal["increase", "decrease", "both"] = "increase",
) -> NDArray[np.bool_]:
    """Which series are eligible for an alarm: enough denominators and extra bad events.

    Over the tested window, ``trials >= min_trials`` and the excess of events over the
    baseline, ``successes - trials * baseline_rate`` (its negative for "decrease", its
    absolute value for "both"), is at least ``min_excess``: a 40% rise on 3 orders is not
    worth a page even when it is significant.
    """
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    excess = s - n * np.asarray(baseline_rate, dtype=float)
    signed = {"increase": excess, "decrease": -excess, "both": np.abs(excess)}[direction]
    return (n >= min_trials) & (signed >= min_excess)
