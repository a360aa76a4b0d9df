"""Always-valid inference for experiments that are looked at every day.

An experiment compares a treatment arm (say, stores that got a fix) with a control arm on a
per-unit outcome: a 0/1 flag such as "order was late" (then means are rates) or a real value
such as delivery minutes. The experiment is monitored: someone looks at the result after
every batch of orders and stops as soon as it "looks significant". A fixed-horizon p-value or
confidence interval checked at every look is then invalid: with 50 looks an A/A test "finds"
an effect far more often than the nominal 5%. This module gives inference that stays valid
under continuous monitoring and optional stopping:

- ``difference_confidence_sequence``: an asymptotic confidence sequence (CS) for the
  difference in means, treatment minus control. With probability about ``1 - alpha`` it
  covers the true difference at *every* look simultaneously, so it may be checked as often as
  wished and the experiment stopped whenever it excludes zero.
- ``msprt_p_value`` / ``SequentialTest``: the always-valid p-value of the mixture sequential
  probability ratio test (mSPRT), whose running value may be compared with ``alpha`` at every
  look.
- ``sample_ratio_mismatch``: the chi-square check that units were assigned in the planned
  split; a mismatch means the assignment or logging is broken and no effect estimate can be
  trusted.
- ``non_inferiority``: the state of a guardrail metric (breached / cleared / undecided)
  from a confidence sequence and a tolerated margin.

Data model. Each arm is summarised by running sufficient statistics of its unit outcomes
``y``: ``sum = sum(y)``, ``sumsq = sum(y**2)`` and ``n`` (for 0/1 outcomes ``sumsq == sum``).
The totals are cumulative: at every look pass the totals since the start of the experiment.
From them

    mean_a   = sum_a / n_a,      s2_a = (sumsq_a - sum_a**2 / n_a) / (n_a - 1),
    estimate = mean_t - mean_c,  V    = s2_t / n_t + s2_c / n_c,     se = sqrt(V),

where ``V`` is the usual (Welch) variance of the difference in means. Both sequential
procedures below are the same normal mixture seen from two sides: the boundary of the
confidence sequence with mixing parameter ``rho`` is exactly the set of nulls that the
mSPRT with mixing variance ``tau**2 = rho**2 * n * V`` rejects at level ``alpha``.

Both are *asymptotic*: they rely on the central limit theorem and a plug-in variance, so they
are accurate once each arm holds a few hundred units (for rare 0/1 outcomes: a few dozen
events), not from the first order. A look whose pooled outcomes show no variation at all
carries no usable scale; it yields an unbounded interval and no evidence rather than a
spurious zero-width one.

References:

- Howard, Ramdas, McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic
  confidence sequences", Annals of Statistics 49(2): the normal-mixture (Robbins) boundary
  and how to tune its mixing parameter for a target time.
- Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024), "Time-uniform central limit theory
  and asymptotic confidence sequences", Annals of Statistics 52(6) (arXiv 2103.06476): the
  asymptotic confidence sequence used here and its optimal ``rho``; Waudby-Smith, Wu, Ramdas,
  Karampatziakis & Mineiro (2023), "Anytime-valid off-policy inference for contextual
  bandits", for the same construction applied to treatment effects.
- Johari, Pekelis & Walsh (2017), "Always valid inference: bringing sequential analysis to
  A/B testing" (arXiv 1512.04922), and Johari, Koomen, Pekelis & Walsh (2022), "Always valid
  inference: continuous monitoring of A/B tests", Operations Research 70(3): the mSPRT and
  its always-valid p-value.
- Fabijan, Gupchup, Gupta, Omhover, Qin, Vermeer & Dmitriev (2019), "Diagnosing sample ratio
  mismatch in online controlled experiments", KDD 2019: the sample ratio mismatch check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

__all__ = [
    "ConfidenceSequenceResult",
    "DifferenceInterval",
    "GuardrailState",
    "Look",
    "MSPRTResult",
    "SRMResult",
    "SequentialTest",
    "difference_confidence_sequence",
    "fixed_interval",
    "matched_tau",
    "msprt_log_likelihood_ratio",
    "msprt_p_value",
    "non_inferiority",
    "normal_mixture_radius",
    "optimal_rho",
    "sample_ratio_mismatch",
]

FloatArray = NDArray[np.float64]
BadDirection = Literal["increase", "decrease"]
Look = tuple[float, float, float, float, float, float]
"""One look's cumulative totals: ``(sum_t, sumsq_t, n_t, sum_c, sumsq_c, n_c)``."""

MIN_ARM_SIZE = 2
SRM_THRESHOLD = 0.001
# sumsq may fall short of sum**2 / n by float rounding only; anything beyond is bad input.
_SUMSQ_RTOL = 1e-9


# --- validation -------------------------------------------------------------------------------


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def _check_positive(name: str, value: float) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


@dataclass(frozen=True)
class _Arm:
    mean: float
    variance: float  # unbiased sample variance of the unit outcomes
    n: float


def _arm(suffix: str, total: float, sumsq: float, n: float) -> _Arm:
    """Mean and unbiased variance of one arm from its sufficient statistics."""
    n_name, sum_name, sumsq_name = f"n_{suffix}", f"sum_{suffix}", f"sumsq_{suffix}"
    count = _finite(n_name, n)
    if count < MIN_ARM_SIZE:
        raise ValueError(f"{n_name} must be at least {MIN_ARM_SIZE} units, got {n!r}")
    s = _finite(sum_name, total)
    ss = _finite(sumsq_name, sumsq)
    centred = ss - s * s / count
    if centred < -_SUMSQ_RTOL * max(abs(ss), 1.0):
        raise ValueError(
            f"{sumsq_name} ({ss!r}) is below {sum_name}**2 / {n_name} ({s * s / count!r}); "
            "it must be the sum of squared outcomes"
        )
    return _Arm(mean=s / count, variance=max(centred, 0.0) / (count - 1.0), n=count)


@dataclass(frozen=True)
class _Difference:
    estimate: float
    variance: float  # V = s2_t / n_t + s2_c / n_c, the variance of the estimate
    n_t: float
    n_c: float

    @property
    def n(self) -> float:
        return self.n_t + self.n_c


def _difference(
    sum_t: float, sumsq_t: float, n_t: float, sum_c: float, sumsq_c: float, n_c: float
) -> _Difference:
    t = _arm("t", sum_t, sumsq_t, n_t)
    c = _arm("c", sum_c, sumsq_c, n_c)
    return _Difference(
        estimate=t.mean - c.mean,
        variance=t.variance / t.n + c.variance / c.n,
        n_t=t.n,
        n_c=c.n,
    )


# --- intervals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DifferenceInterval:
    """An interval for the difference in means, treatment minus control.

    ``se`` is the plug-in standard error ``sqrt(s2_t / n_t + s2_c / n_c)``; ``alpha`` the
    error level the interval was built for. Bounds are infinite when the data carry no
    estimate of spread yet (every outcome so far identical).
    """

    estimate: float
    lower: float
    upper: float
    se: float
    n_t: float
    n_c: float
    alpha: float

    @property
    def excludes_zero(self) -> bool:
        """True when zero lies outside the interval: the arms differ at level ``alpha``."""
        return self.excludes(0.0)

    def excludes(self, value: float) -> bool:
        """True when ``value`` lies outside ``[lower, upper]``."""
        return value < self.lower or value > self.upper

    @property
    def half_width(self) -> float:
        return (self.upper - self.lower) / 2.0


@dataclass(frozen=True)
class ConfidenceSequenceResult(DifferenceInterval):
    """One look of an asymptotic confidence sequence; ``rho`` is its mixing parameter."""

    rho: float


def optimal_rho(n_planned: float, alpha: float = 0.05) -> float:
    """Mixing parameter that makes the confidence sequence tightest at ``n_planned`` units.

    The closed form ``rho**2 = (-2 log(alpha) + log(1 - 2 log(alpha))) / n_planned`` is the
    tuning Waudby-Smith et al. (2024) give for asymptotic confidence sequences, after the
    tuning of normal-mixture boundaries to a target time in Howard et al. (2021). It nearly
    minimises ``normal_mixture_radius(n_planned, rho, alpha)``: the exact minimiser differs by
    about 2% in ``rho`` and by less than 0.01% in the width. ``n_planned`` counts units of both arms
    together, as the confidence sequence does.
    """
    a = _check_alpha(alpha)
    n_star = _check_positive("n_planned", n_planned)
    log_term = -2.0 * math.log(a)
    return math.sqrt((log_term + math.log1p(log_term)) / n_star)


def normal_mixture_radius(n: ArrayLike, rho: float, alpha: float = 0.05) -> FloatArray:
    """Half-width, in units of one unit's standard deviation, of the normal-mixture boundary.

    Computes, elementwise over ``n``,

        sqrt( 2 (n rho**2 + 1) / (n**2 rho**2) * log( sqrt(n rho**2 + 1) / alpha ) ),

    the two-sided boundary of Robbins' normal mixture (Howard et al. 2021) as used by the
    asymptotic confidence sequences of Waudby-Smith et al. (2024). For i.i.d. units with sd
    ``sigma``, ``mean_n +- sigma * radius(n)`` covers the mean at all ``n >= 1`` at once with
    probability about ``1 - alpha``. It shrinks like ``sqrt(log(n) / n)``: slower than the
    fixed-horizon ``z / sqrt(n)``, the price of looking at every ``n``.
    """
    a = _check_alpha(alpha)
    r = _check_positive("rho", rho)
    counts = np.asarray(n, dtype=np.float64)
    if not np.all(np.isfinite(counts) & (counts > 0)):
        raise ValueError("n must be finite and > 0")
    x = counts * r * r
    radius: FloatArray = np.sqrt(2.0 * (x + 1.0) / (counts * x) * (0.5 * np.log1p(x) - math.log(a)))
    return radius


def _resolve_rho(rho: float | None, n_planned: float | None, alpha: float) -> float:
    if rho is not None and n_planned is not None:
        raise ValueError("rho and n_planned are exclusive: pass only one of them")
    if rho is not None:
        return _check_positive("rho", rho)
    if n_planned is None:
        raise ValueError(
            "n_planned (or rho) is required: the mixing parameter must be fixed before the "
            "experiment starts, e.g. n_planned = the planned number of units in both arms"
        )
    return optimal_rho(n_planned, alpha)


def difference_confidence_sequence(
    sum_t: float,
    sumsq_t: float,
    n_t: float,
    sum_c: float,
    sumsq_c: float,
    n_c: float,
    *,
    alpha: float = 0.05,
    n_planned: float | None = None,
    rho: float | None = None,
) -> ConfidenceSequenceResult:
    """Asymptotic ``1 - alpha`` confidence sequence for ``mean_t - mean_c`` at the current look.

    The difference in means is asymptotically linear in the units, with influence function
    ``Z (y - mu_t) / p - (1 - Z) (y - mu_c) / (1 - p)`` (``Z`` = treated, ``p`` = treated
    share); it equals the augmented inverse-propensity estimator with arm means as outcome
    models. Following Waudby-Smith et al. (2024), its running value is wrapped in the normal-
    mixture boundary with the plug-in scale ``sigma_hat = sqrt(n V)``, ``n = n_t + n_c``:

        estimate +- sigma_hat * normal_mixture_radius(n, rho, alpha)
                 = estimate +- se * sqrt( 2 (n rho**2 + 1) / (n rho**2)
                                          * log( sqrt(n rho**2 + 1) / alpha ) ).

    With probability tending to at least ``1 - alpha`` the true difference lies inside at
    every look at once, so the result may be read at every look and the experiment stopped
    the first time ``excludes_zero`` holds. ``rho`` must be fixed before the experiment: pass
    it, or pass ``n_planned`` (planned units of both arms together) to use ``optimal_rho``,
    which makes the sequence tightest around that size. At ``n_planned`` the half-width is
    about 1.55 times the fixed-horizon half-width ``1.96 se`` for ``alpha = 0.05``.

    Because the statement holds at all looks at once, the running intersection of the
    intervals over looks is a valid confidence sequence as well (Howard et al. 2021).
    """
    a = _check_alpha(alpha)
    r = _resolve_rho(rho, n_planned, a)
    d = _difference(sum_t, sumsq_t, n_t, sum_c, sumsq_c, n_c)
    se = math.sqrt(d.variance)
    if d.variance > 0.0:
        x = d.n * r * r
        half = se * math.sqrt(2.0 * (x + 1.0) / x * (0.5 * math.log1p(x) - math.log(a)))
    else:
        half = math.inf
    return ConfidenceSequenceResult(
        estimate=d.estimate,
        lower=d.estimate - half,
        upper=d.estimate + half,
        se=se,
        n_t=d.n_t,
        n_c=d.n_c,
        alpha=a,
        rho=r,
    )


def fixed_interval(
    sum_t: float,
    sumsq_t: float,
    n_t: float,
    sum_c: float,
    sumsq_c: float,
    n_c: float,
    *,
    alpha: float = 0.05,
) -> DifferenceInterval:
    """Fixed-horizon normal (Wald/Welch) interval ``estimate +- z_{1 - alpha/2} se``.

    Valid only when looked at once, at a sample size fixed in advance. It is here for
    comparison: checked at every look it excludes the truth far more often than ``alpha``.
    """
    a = _check_alpha(alpha)
    d = _difference(sum_t, sumsq_t, n_t, sum_c, sumsq_c, n_c)
    se = math.sqrt(d.variance)
    z = float(special.ndtri(1.0 - a / 2.0))  # the normal quantile, without stats.norm's overhead
    half = z * se if d.variance > 0.0 else math.inf
    return DifferenceInterval(
        estimate=d.estimate,
        lower=d.estimate - half,
        upper=d.estimate + half,
        se=se,
        n_t=d.n_t,
        n_c=d.n_c,
        alpha=a,
    )


# --- mixture SPRT -----------------------------------------------------------------------------


def msprt_log_likelihood_ratio(
    estimate: ArrayLike, variance: ArrayLike, tau: float, null: float = 0.0
) -> FloatArray:
    """Log of the mSPRT mixture likelihood ratio, elementwise.

    With ``d = estimate - null``, ``V = variance`` of the estimate and a normal ``N(null,
    tau**2)`` mixing distribution over the true difference (Johari et al. 2017, 2022):

        Lambda = sqrt(V / (V + tau**2)) * exp( tau**2 d**2 / (2 V (V + tau**2)) ).

    Where ``V == 0`` the look carries no usable scale and the log ratio is 0 (no evidence).
    Logs avoid the overflow of ``Lambda`` itself under large effects.
    """
    t = _check_positive("tau", tau)
    m0 = _finite("null", null)
    d = np.asarray(estimate, dtype=np.float64) - m0
    v = np.asarray(variance, dtype=np.float64)
    if np.any(~np.isfinite(v) | (v < 0.0)):
        raise ValueError("variance must be finite and >= 0")
    if np.any(~np.isfinite(d)):
        raise ValueError("estimate must be finite")
    t2 = t * t
    positive = v > 0.0
    safe_v = np.where(positive, v, 1.0)
    log_lr = 0.5 * np.log(safe_v / (safe_v + t2)) + t2 * d * d / (2.0 * safe_v * (safe_v + t2))
    result: FloatArray = np.where(positive, log_lr, 0.0)
    return result


def _log_likelihood_ratio(shift: float, variance: float, tau: float) -> float:
    """Scalar twin of ``msprt_log_likelihood_ratio`` for the per-look loop."""
    if variance <= 0.0:
        return 0.0
    t2 = tau * tau
    total = variance + t2
    return 0.5 * math.log(variance / total) + t2 * shift * shift / (2.0 * variance * total)


def matched_tau(n_planned: float, sd: float, *, share_t: float = 0.5, alpha: float = 0.05) -> float:
    """mSPRT mixing standard deviation ``tau`` matched to the tuned confidence sequence.

    ``tau**2 = rho**2 * sigma**2`` with ``rho = optimal_rho(n_planned, alpha)`` and
    ``sigma**2 = sd**2 * (1 / share_t + 1 / (1 - share_t))``, the per-unit variance of the
    difference in means when both arms' outcomes have standard deviation ``sd``. With this
    ``tau`` the mSPRT rejects at level ``alpha`` where the confidence sequence tuned to
    ``n_planned`` excludes the null, provided ``sd`` is the true spread. ``sd`` is a planning
    guess (for a rate ``p``: ``sqrt(p (1 - p))``) fixed before the experiment; ``tau`` must
    not be re-estimated from the data during it.
    """
    rho = optimal_rho(n_planned, alpha)
    s = _check_positive("sd", sd)
    p = float(share_t)
    if not 0.0 < p < 1.0:
        raise ValueError(f"share_t must be in (0, 1), got {share_t!r}")
    return rho * s * math.sqrt(1.0 / p + 1.0 / (1.0 - p))


@dataclass(frozen=True)
class MSPRTResult:
    """The state of an mSPRT after a look.

    ``likelihood_ratio`` is this look's ``Lambda_n``; ``p_value`` is the always-valid p-value
    ``min(1, 1 / Lambda_1, ..., 1 / Lambda_n)``, which may be compared with ``alpha`` at every
    look: ``P(p_value ever <= alpha) <= alpha`` under the null, asymptotically.
    """

    estimate: float
    se: float
    likelihood_ratio: float
    p_value: float
    looks: int
    n_t: float
    n_c: float
    tau: float
    null: float

    def rejects(self, alpha: float = 0.05) -> bool:
        """True when the always-valid p-value is at most ``alpha``."""
        return self.p_value <= _check_alpha(alpha)


class SequentialTest:
    """Running mixture SPRT of ``mean_t - mean_c == null`` over the looks of one experiment.

    Feed ``update`` the cumulative totals at every look; it keeps the running minimum of
    ``min(1, 1 / Lambda_n)``, the always-valid p-value of Johari et al. (2017, 2022).
    ``tau`` is the standard deviation of the normal mixing distribution over the true
    difference, in the outcome's units: roughly the size of effect the test is tuned to find.
    It must be fixed before the experiment (``matched_tau`` derives one from a planned size).
    """

    def __init__(self, *, tau: float, null: float = 0.0) -> None:
        self.tau = _check_positive("tau", tau)
        self.null = _finite("null", null)
        self._p_value = 1.0
        self._looks = 0
        self._n_t = 0.0
        self._n_c = 0.0

    @property
    def p_value(self) -> float:
        """Always-valid p-value after the looks so far (1.0 before the first)."""
        return self._p_value

    @property
    def looks(self) -> int:
        return self._looks

    def update(
        self,
        sum_t: float,
        sumsq_t: float,
        n_t: float,
        sum_c: float,
        sumsq_c: float,
        n_c: float,
    ) -> MSPRTResult:
        """Take one look at the cumulative totals since the start of the experiment."""
        d = _difference(sum_t, sumsq_t, n_t, sum_c, sumsq_c, n_c)
        if d.n_t < self._n_t:
            raise ValueError(
                f"n_t fell from {self._n_t!r} to {d.n_t!r}: pass cumulative totals, not batches"
            )
        if d.n_c < self._n_c:
            raise ValueError(
                f"n_c fell from {self._n_c!r} to {d.n_c!r}: pass cumulative totals, not batches"
            )
        log_lr = _log_likelihood_ratio(d.estimate - self.null, d.variance, self.tau)
        self._p_value = min(self._p_value, math.exp(-log_lr) if log_lr > 0.0 else 1.0)
        self._looks += 1
        self._n_t, self._n_c = d.n_t, d.n_c
        return MSPRTResult(
            estimate=d.estimate,
            se=math.sqrt(d.variance),
            likelihood_ratio=math.exp(log_lr) if log_lr < 700.0 else math.inf,
            p_value=self._p_value,
            looks=self._looks,
            n_t=d.n_t,
            n_c=d.n_c,
            tau=self.tau,
            null=self.null,
        )


def msprt_p_value(looks: Iterable[Look], *, tau: float, null: float = 0.0) -> float:
    """Always-valid mSPRT p-value after a sequence of looks.

    ``looks`` holds each look's cumulative ``(sum_t, sumsq_t, n_t, sum_c, sumsq_c, n_c)`` in
    time order; the result is ``min(1, min_n 1 / Lambda_n)`` (see ``SequentialTest``).
    """
    test = SequentialTest(tau=tau, null=null)
    for look in looks:
        test.update(*look)
    if test.looks == 0:
        raise ValueError("looks must hold at least one look")
    return test.p_value


# --- sample ratio mismatch --------------------------------------------------------------------


@dataclass(frozen=True)
class SRMResult:
    """Chi-square goodness-of-fit of the assignment counts against the planned split."""

    n_t: int
    n_c: int
    expected_share_t: float
    observed_share_t: float
    statistic: float
    p_value: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        """True when ``p_value < threshold``: assignment or logging is likely broken."""
        return self.p_value < self.threshold


def _count(name: str, value: int) -> int:
    number = float(value)
    if not (math.isfinite(number) and number >= 0 and number == math.floor(number)):
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(number)


def sample_ratio_mismatch(
    n_t: int, n_c: int, expected_share_t: float = 0.5, *, threshold: float = SRM_THRESHOLD
) -> SRMResult:
    """Sample ratio mismatch test (Fabijan et al. 2019).

    Pearson's chi-square goodness-of-fit (``scipy.stats.chisquare``, 1 degree of freedom) of
    the units assigned to each arm against the planned treatment share. Experiments are
    large, so even a small imbalance such as 52/48 is decisive; the conventional threshold is
    strict (``p < 0.001``) because the test is run on every experiment and a flag halts the
    analysis. The test is not adjusted for repeated looks; the strict threshold keeps the
    inflation small.
    """
    t = _count("n_t", n_t)
    c = _count("n_c", n_c)
    share = float(expected_share_t)
    if not 0.0 < share < 1.0:
        raise ValueError(f"expected_share_t must be in (0, 1), got {expected_share_t!r}")
    level = float(threshold)
    if not 0.0 < level < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    total = t + c
    if total == 0:
        raise ValueError("n_t and n_c must not both be 0")
    statistic, p_value = stats.chisquare([t, c], f_exp=[total * share, total * (1.0 - share)])
    return SRMResult(
        n_t=t,
        n_c=c,
        expected_share_t=share,
        observed_share_t=t / total,
        statistic=float(statistic),
        p_value=float(p_value),
        threshold=level,
    )


# --- guardrails -------------------------------------------------------------------------------


class GuardrailState(StrEnum):
    """Where a guardrail metric's confidence sequence lies relative to its margin."""

    BREACHED = "breached"
    CLEARED = "cleared"
    UNDECIDED = "undecided"


def non_inferiority(
    lower: float, upper: float, *, margin: float, bad_direction: BadDirection
) -> GuardrailState:
    """State of a guardrail from an interval ``[lower, upper]`` for treatment minus control.

    ``margin >= 0`` is the largest tolerated change in the harmful direction, in the units of
    the difference; ``bad_direction`` says which way harms ("increase" for cost per
    delivery). With ``threshold = +margin`` ("increase") or ``-margin`` ("decrease"):

    - ``breached``: the whole interval lies beyond the threshold on the bad side, so the
      change is worse than tolerated;
    - ``cleared``: the whole interval lies on the good side, so non-inferiority is shown;
    - ``undecided``: the interval contains the threshold.

    Pass a confidence sequence so that the state may be checked at every look. A relative
    margin ("at most +3%") becomes absolute as ``0.03 * control mean``; that ignores the
    uncertainty of the control mean, which is small next to that of the difference.
    """
    lo = float(lower)
    hi = float(upper)
    if math.isnan(lo):
        raise ValueError("lower must not be NaN")
    if math.isnan(hi):
        raise ValueError("upper must not be NaN")
    if lo > hi:
        raise ValueError(f"lower ({lo!r}) must not exceed upper ({hi!r})")
    m = float(margin)
    if not (math.isfinite(m) and m >= 0.0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if bad_direction == "increase":
        if lo > m:
            return GuardrailState.BREACHED
        if hi < m:
            return GuardrailState.CLEARED
    elif bad_direction == "decrease":
        if hi < -m:
            return GuardrailState.BREACHED
        if lo > -m:
            return GuardrailState.CLEARED
    else:
        raise ValueError(f"bad_direction must be 'increase' or 'decrease', got {bad_direction!r}")
    return GuardrailState.UNDECIDED
