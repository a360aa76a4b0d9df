"""Typed settings and results of root-cause localisation (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["additive", "ratio"]
Direction = Literal["drop", "rise", "both"]
Status = Literal["ok", "empty", "no_expected"]


@dataclass(frozen=True)
class LocalizeConfig:
    """Fixed defaults of the method; none of them is tuned per case or per data set.

    - ``max_layer``: a slice fixes at most this many attributes (3: "grocery + SF + dinner").
    - ``alpha``: family-wise level of the search, Bonferroni over every candidate slice, and
      the BH level behind the stars.
    - ``max_slices``: at most this many slices are reported.
    - ``prior_events``: ratio KPIs only; each leaf's baseline rate is shrunk toward the
      overall baseline rate by a prior worth this many expected numerator events.
    - ``min_fit_size`` / ``min_fit_leaves``: the variance function is fitted on leaves whose
      dispersion-free variance is at least ``min_fit_size`` (Cochran's rule of 5), and only
      when at least ``min_fit_leaves`` such leaves exist; otherwise Poisson/binomial is used.
    """

    max_layer: int = 3
    alpha: float = 0.05
    max_slices: int = 10
    prior_events: float = 1.0
    min_fit_size: float = 5.0
    min_fit_leaves: int = 20

    def __post_init__(self) -> None:
        if self.max_layer < 1:
            raise ValueError(f"max_layer must be at least 1, got {self.max_layer}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.max_slices < 1:
            raise ValueError(f"max_slices must be at least 1, got {self.max_slices}")
        if self.prior_events <= 0.0:
            raise ValueError(f"prior_events must be positive, got {self.prior_events}")
        if self.min_fit_size <= 0.0 or self.min_fit_leaves < 3:
            raise ValueError("min_fit_size must be positive and min_fit_leaves at least 3")


@dataclass(frozen=True)
class VarianceModel:
    """Leaf variance: ``dispersion * base + relative**2 * expected**2``.

    ``base`` is the dispersion-free variance (Poisson for counts, two-proportion for rates);
    ``dispersion`` is at least 1. ``inflation`` is the genomic-control factor applied to
    slice statistics. ``fitted_on`` counts the leaves the fit used (0: Poisson default).
    """

    dispersion: float
    relative: float
    inflation: float
    fitted_on: int


@dataclass(frozen=True)
class SliceFinding:
    """One slice that explains part of the change.

    ``delta``: additive, observed minus expected sum; ratio, observed minus expected rate of
    the slice. ``contribution``: the slice's part of the top-line change (additive: equal to
    ``delta``; ratio: excess numerator over the total denominator, in rate units).
    ``share``: contribution over the total change. ``expected`` is at the observed
    denominator for ratio KPIs; ``baseline_rate`` is the slice's rate in the before window.
    """

    slice: dict[str, str]
    direction: Literal["drop", "rise"]
    n_leaves: int
    observed: float
    expected: float
    delta: float
    contribution: float
    share: float
    z: float
    p_value: float
    q_value: float
    stars: str
    denominator: float | None = None
    observed_rate: float | None = None
    expected_rate: float | None = None
    baseline_rate: float | None = None

    @property
    def label(self) -> str:
        """Canonical text form, attributes sorted: ``category=grocery&region=SF``."""
        return "&".join(f"{k}={v}" for k, v in sorted(self.slice.items()))


@dataclass(frozen=True)
class LocalizationResult:
    """Ranked slices (strongest first) and the context needed to read them."""

    kind: Kind
    dims: tuple[str, ...]
    direction: Direction
    status: Status
    slices: list[SliceFinding] = field(default_factory=list)
    n_leaves: int = 0
    n_candidates: int = 0
    total_observed: float = 0.0
    total_expected: float = 0.0
    total_change: float = 0.0
    variance: VarianceModel | None = None

    @property
    def significant(self) -> list[SliceFinding]:
        """The slices whose BH-adjusted q-value is below 0.05."""
        return [s for s in self.slices if s.q_value < 0.05]
