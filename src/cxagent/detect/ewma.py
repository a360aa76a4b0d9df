"""EWMA detector: an exponentially weighted moving sum of excesses over the baseline.

``A_t = (1 - lam) A_{t-1} + lam c_t`` for the numerator, denominator and (with weights
squared) the variance, so the statistic has its exact time-varying variance rather than the
asymptotic one (Roberts, "Control chart tests based on geometric moving averages",
Technometrics 1959; Lucas and Saccucci, "Exponentially weighted moving average control
schemes: properties and enhancements", Technometrics 1990). Rates weight each hour by its
denominator, the efficient score for a shift in the rate.
"""

from __future__ import annotations

import numpy as np

from cxagent.detect.base import Direction, FloatArray
from cxagent.detect.residual import ResidualDetector


class EWMA(ResidualDetector):
    """EWMA with smoothing ``lam`` (0.05-0.25 in Lucas & Saccucci; 0.1 ~ a 19-column memory).

    Other parameters as for ``ZScore``: ``direction``, ``alpha``, ``min_history``,
    ``half_life``.
    """

    name = "ewma"

    def __init__(
        self,
        *,
        lam: float | FloatArray = 0.1,
        direction: Direction = "both",
        alpha: float = 0.001,
        min_history: int = 24,
        half_life: float | None = 672.0,
    ) -> None:
        super().__init__(
            direction=direction, alpha=alpha, min_history=min_history, half_life=half_life
        )
        lams = np.asarray(lam, dtype=float)
        if lams.ndim > 1 or not np.all((lams > 0) & (lams <= 1)):
            raise ValueError(f"lam must be in (0, 1], got {lam}")
        self.lam = lam

    def _start_aggregate(self, n_series: int) -> None:
        lam = np.asarray(self.lam, dtype=float)
        if lam.ndim == 1 and lam.shape != (n_series,):
            raise ValueError(f"lam has {lam.size} values for {n_series} series")
        self.state_ = np.zeros((3, n_series))

    def _aggregate(
        self, num: FloatArray, den: FloatArray, var: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        lam = np.asarray(self.lam, dtype=float)  # one value, or one per series
        keep = 1.0 - lam
        a = self.state_
        self.state_ = np.stack(
            [
                a[0] * keep + lam * num,
                a[1] * keep + lam * den,
                a[2] * (keep * keep) + lam * lam * var,
            ]
        )
        return self.state_[0], self.state_[1], self.state_[2]
