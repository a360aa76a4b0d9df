"""Z-score detector: the latest ``window`` columns against a learned baseline.

The classic Shewhart-style test: the window's excess over the baseline, divided by its
standard deviation under the baseline. For rates the variance is beta-binomial and the
p-value is a binomial tail on effective counts, so the denominator decides how surprising a
rate is (Shewhart, "Economic Control of Quality of Manufactured Product", 1931).
"""

from __future__ import annotations

import numpy as np

from cxagent.detect.base import Direction, FloatArray
from cxagent.detect.residual import ResidualDetector


class ZScore(ResidualDetector):
    """Window sum of the last ``window`` columns, tested against the guarded baseline.

    Parameters: ``window`` columns summed (1 = one hour at a time); ``direction`` of a
    regression; ``alpha`` pointwise level for alarms and change points; ``min_history``
    columns before any p-value; ``half_life`` of the baseline in columns (None = all history).
    """

    name = "zscore"

    def __init__(
        self,
        *,
        window: int = 1,
        direction: Direction = "both",
        alpha: float = 0.001,
        min_history: int = 24,
        half_life: float | None = 672.0,
    ) -> None:
        super().__init__(
            direction=direction, alpha=alpha, min_history=min_history, half_life=half_life
        )
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window

    def _start_aggregate(self, n_series: int) -> None:
        self.buffer_ = np.zeros((3, n_series, self.window))

    def _aggregate(
        self, num: FloatArray, den: FloatArray, var: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        self.buffer_ = np.roll(self.buffer_, -1, axis=2)
        self.buffer_[:, :, -1] = num, den, var
        total = self.buffer_.sum(axis=2)
        return total[0], total[1], total[2]
