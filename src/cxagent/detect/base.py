"""The detector contract: observations, results and the registry.

Detectors run on many series at once (one per slice x metric), so every input is a 2-D array
of shape ``(n_series, T)``. Two kinds of observation:

- ``RateObs(successes, trials)``: counts per column, e.g. late orders over delivered orders
  per hour. Likelihoods use the denominator, so a small cohort's noise is not an incident.
- ``MeanObs(values, weights)``: a mean (weights = units behind it) or any real-valued series
  (weights = 1). A NaN value is a missing column.

A detector stores parameters in ``__init__``; ``fit(history)`` learns state (names end in
``_``) and returns ``self``; ``update(new_columns)`` processes only the new columns;
``scan(obs)`` runs online over a whole series for offline use and also returns change points.
Subclasses register themselves by existing: ``get_detector("bocpd", hazard=0.01)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Direction = Literal["increase", "decrease", "both"]
DIRECTIONS: tuple[Direction, ...] = ("increase", "decrease", "both")


def _as_2d(values: ArrayLike, field: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{field} must have shape (n_series, T), got {array.shape}")
    return array


@dataclass(frozen=True)
class RateObs:
    """Successes over trials per series and column; a column with 0 trials is missing."""

    successes: FloatArray
    trials: FloatArray

    def __post_init__(self) -> None:
        s = _as_2d(self.successes, "successes")
        n = _as_2d(self.trials, "trials")
        if s.shape != n.shape:
            raise ValueError(f"successes {s.shape} and trials {n.shape} differ in shape")
        if np.any(~np.isfinite(n)) or np.any(n < 0):
            raise ValueError("trials must be finite and >= 0")
        if np.any(~np.isfinite(s)) or np.any(s < 0) or np.any(s > n):
            raise ValueError("successes must be finite and within 0..trials")
        object.__setattr__(self, "successes", s)
        object.__setattr__(self, "trials", n)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.trials.shape[0], self.trials.shape[1])

    def columns(self, start: int, stop: int | None = None) -> RateObs:
        return RateObs(self.successes[:, start:stop], self.trials[:, start:stop])


@dataclass(frozen=True)
class MeanObs:
    """Real values with weights (units behind each mean); NaN or weight 0 is missing."""

    values: FloatArray
    weights: FloatArray | None = None

    def __post_init__(self) -> None:
        x = _as_2d(self.values, "values")
        w = np.ones_like(x) if self.weights is None else _as_2d(self.weights, "weights")
        if w.shape != x.shape:
            raise ValueError(f"values {x.shape} and weights {w.shape} differ in shape")
        if np.any(~np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and >= 0")
        missing = ~np.isfinite(x)
        object.__setattr__(self, "values", np.where(missing, 0.0, x))
        object.__setattr__(self, "weights", np.where(missing, 0.0, w))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0], self.values.shape[1])

    def columns(self, start: int, stop: int | None = None) -> MeanObs:
        assert self.weights is not None
        return MeanObs(self.values[:, start:stop], self.weights[:, start:stop])


Observations = RateObs | MeanObs


@dataclass(frozen=True)
class DetectionStep:
    """Per series and processed column (absolute column index ``start + j``).

    ``score``: the detector's own evidence (|z| for z-score and EWMA, posterior probability of
    a recent change for BOCPD); ``z``: signed statistic (positive = the metric went up);
    ``p_value``: one-sided for the detector's direction, two-sided for "both";
    ``change_start``: estimated first column of the current change, -1 when there is none.
    """

    start: int
    score: FloatArray
    z: FloatArray
    p_value: FloatArray
    change_start: IntArray

    @staticmethod
    def concat(steps: list[DetectionStep]) -> DetectionStep:
        return DetectionStep(
            start=steps[0].start,
            score=np.concatenate([s.score for s in steps], axis=1),
            z=np.concatenate([s.z for s in steps], axis=1),
            p_value=np.concatenate([s.p_value for s in steps], axis=1),
            change_start=np.concatenate([s.change_start for s in steps], axis=1),
        )


@dataclass(frozen=True)
class DetectionResult:
    """Offline result: the per-column step over the whole series and change points per series.

    A change point ``i`` means a new segment starts at column ``i`` (TCPDBench convention).
    """

    step: DetectionStep
    change_points: list[IntArray]


def empty_step(n_series: int, start: int, t_new: int) -> DetectionStep:
    return DetectionStep(
        start=start,
        score=np.zeros((n_series, t_new)),
        z=np.zeros((n_series, t_new)),
        p_value=np.ones((n_series, t_new)),
        change_start=np.full((n_series, t_new), -1, dtype=np.int64),
    )


def check_direction(direction: str) -> Direction:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    return direction


def alarm_change_points(alarm: NDArray[np.bool_], change_start: IntArray) -> list[IntArray]:
    """Change points from alarm episodes: each episode's estimated start and its end."""
    points = []
    for row_alarm, row_start in zip(alarm, change_start, strict=True):
        edges = np.diff(np.concatenate([[False], row_alarm, [False]]).astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        begin = np.where(row_start[starts] >= 0, row_start[starts], starts)
        cps = np.concatenate([begin, ends[ends < row_alarm.size]])
        points.append(np.unique(cps).astype(np.int64))
    return points


class Detector(ABC):
    """Base class: ``fit(history) -> self``, ``update(new) -> DetectionStep``, ``scan``."""

    name: ClassVar[str] = ""

    @abstractmethod
    def fit(self, obs: Observations) -> Self:
        """Learn state from the history ``obs`` (which may have zero columns)."""

    @abstractmethod
    def update(self, obs: Observations) -> DetectionStep:
        """Process new columns only, continuing from the fitted state."""

    @abstractmethod
    def scan(self, obs: Observations) -> DetectionResult:
        """Run online over the whole of ``obs`` (offline use) and return change points."""

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (for reports such as the benchmark JSON)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and k[0] != "_"}


def _subclasses(cls: type) -> list[type[Detector]]:
    found: list[type[Detector]] = []
    sub: type[Detector]
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def detector_names() -> list[str]:
    """Names of every registered detector (importing ``cxagent.detect`` registers the built-ins)."""
    return sorted(sub.name for sub in _subclasses(Detector) if sub.name)


def get_detector(name: str, **params: Any) -> Detector:
    """The detector registered as ``name``, built with ``params`` (explicit keywords)."""
    for sub in _subclasses(Detector):
        if sub.name == name:
            return sub(**params)
    raise ValueError(f"unknown detector {name!r}; known detectors: {', '.join(detector_names())}")
