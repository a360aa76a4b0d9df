"""Window-limited scan: the most significant recent stretch, for shifts of unknown duration.

At each column the excess over the baseline is summed over the last ``k`` columns for ``k``
on a doubling grid up to ``max_window`` (1, 2, 4, ..., and ``max_window`` itself), and the
stretch with the largest standardised sum is tested:
``z = max_k (A_num,k - theta A_den,k) / sqrt(A_var,k)``. It is the generalised likelihood
ratio for a step of unknown size that began at an unknown column within the window (Lai,
"Sequential changepoint detection in quality control and dynamical systems", JRSS B 1995;
Siegmund and Venkatraman, "Using the generalized likelihood ratio statistic for sequential
detection of a change-point", Annals of Statistics 1995): one bad column is found as fast
as by a z-score on it, and a small shift that lasts accumulates over every column since it
began, where an EWMA keeps only its smoothing's memory. The stretch's start is the change
start. The p-value is the tail of the chosen stretch times the number of stretches on the
grid (Bonferroni: valid whatever their overlap; a doubling grid keeps the factor at most
``log2(max_window) + 2`` while a lasting shift still finds a stretch over at least half its
length, the multiscale scan of Walther, "Optimal and fast detection of spatial clusters
with scan statistics", Annals of Statistics 2010).
"""

from __future__ import annotations

import numpy as np

from cxagent.detect.base import Direction, FloatArray
from cxagent.detect.residual import ResidualDetector


class Scan(ResidualDetector):
    """The best of the windows of the last 1 to ``max_window`` columns (28 = a week of
    daypart windows). Other parameters as for ``ZScore``: ``direction`` ("increase" and
    "decrease" pick the stretch most extreme that way, "both" the largest ``|z|``),
    ``alpha``, ``min_history``, ``half_life``."""

    name = "scan"

    def __init__(
        self,
        *,
        max_window: int = 28,
        direction: Direction = "both",
        alpha: float = 0.001,
        min_history: int = 24,
        half_life: float | None = 672.0,
    ) -> None:
        super().__init__(
            direction=direction, alpha=alpha, min_history=min_history, half_life=half_life
        )
        if max_window < 1:
            raise ValueError(f"max_window must be >= 1, got {max_window}")
        self.max_window = max_window

    def _start_aggregate(self, n_series: int) -> None:
        self.grid_ = self.stretches(self.max_window)
        # the last max_window contributions (num, den, var) in a ring, and the running sum
        # of each stretch on the grid: a column costs one update per stretch
        self.ring_ = np.zeros((3, n_series, self.max_window))
        self.sums_ = np.zeros((3, n_series, len(self.grid_)))
        self.stretch_ = np.ones(n_series, dtype=np.int64)
        self.seen_ = 0

    @staticmethod
    def stretches(max_window: int) -> np.ndarray:
        """Stretch lengths tested: powers of two below ``max_window``, and ``max_window``."""
        powers = 2 ** np.arange(int(np.log2(max_window)) + 1)
        return np.unique(np.append(powers[powers < max_window], max_window)).astype(np.int64)

    def _aggregate(
        self, num: FloatArray, den: FloatArray, var: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        new = np.stack([num, den, var])
        pos = self.seen_ % self.max_window
        for g, length in enumerate(self.grid_):
            if self.seen_ >= length:  # the column ``length`` ago leaves the stretch
                self.sums_[:, :, g] -= self.ring_[:, :, (pos - length) % self.max_window]
            self.sums_[:, :, g] += new
        self.ring_[:, :, pos] = new
        self.seen_ += 1
        theta = self.baseline_.theta()[:, None]
        var_k = np.maximum(self.sums_[2], 0.0)
        ok = var_k > 0
        z = np.where(
            ok, (self.sums_[0] - theta * self.sums_[1]) / np.sqrt(np.where(ok, var_k, 1)), 0
        )
        score = {"increase": z, "decrease": -z, "both": np.abs(z)}[self.direction]
        # a stretch longer than the columns seen so far would only repeat a shorter one
        score = np.where(self.grid_[None, :] <= self.seen_, score, -np.inf)
        best = np.argmax(score, axis=1)
        self.stretch_ = self.grid_[best]
        rows = np.arange(z.shape[0])
        return self.sums_[0, rows, best], self.sums_[1, rows, best], var_k[rows, best]

    def _searched(self, p: FloatArray) -> FloatArray:
        return np.minimum(p * len(self.grid_), 1.0)

    def _change_start(self, now: int, z: FloatArray) -> np.ndarray:
        return now - self.stretch_ + 1
