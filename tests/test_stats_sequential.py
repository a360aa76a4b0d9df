"""Always-valid inference: A/A error rates under peeking, power, widths, SRM and guardrails."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import numpy as np
import pytest
from scipy import optimize, stats

from cxagent.stats.sequential import (
    GuardrailState,
    SequentialTest,
    difference_confidence_sequence,
    fixed_interval,
    matched_tau,
    msprt_log_likelihood_ratio,
    msprt_p_value,
    non_inferiority,
    normal_mixture_radius,
    optimal_rho,
    sample_ratio_mismatch,
)

ALPHA = 0.05
EXPERIMENTS = 300
LOOKS = 50
BASE_RATE = 0.12


@dataclass(frozen=True)
class Paths:
    """Cumulative per-arm totals of many simulated experiments, shape (experiments, looks)."""

    sum_t: np.ndarray
    sumsq_t: np.ndarray
    n_t: np.ndarray
    sum_c: np.ndarray
    sumsq_c: np.ndarray
    n_c: np.ndarray
    truth: float  # true mean_t - mean_c
    sd: float  # true per-unit standard deviation (same in both arms under the null)

    def look(self, experiment: int, k: int) -> tuple[float, float, float, float, float, float]:
        return (
            float(self.sum_t[experiment, k]),
            float(self.sumsq_t[experiment, k]),
            float(self.n_t[experiment, k]),
            float(self.sum_c[experiment, k]),
            float(self.sumsq_c[experiment, k]),
            float(self.n_c[experiment, k]),
        )

    @property
    def n_final(self) -> float:
        return float(self.n_t[0, -1] + self.n_c[0, -1])


def rate_paths(
    seed: int, p_t: float, p_c: float, *, batch_t: int = 100, batch_c: int = 100
) -> Paths:
    """0/1 outcomes (late orders); a look after every batch, so sumsq == sum."""
    rng = np.random.default_rng(seed)
    shape = (EXPERIMENTS, LOOKS)
    s_t = np.cumsum(rng.binomial(batch_t, p_t, shape), axis=1).astype(np.float64)
    s_c = np.cumsum(rng.binomial(batch_c, p_c, shape), axis=1).astype(np.float64)
    looks = np.arange(1, LOOKS + 1, dtype=np.float64)
    n_t = np.broadcast_to(batch_t * looks, shape)
    n_c = np.broadcast_to(batch_c * looks, shape)
    sd = math.sqrt(p_c * (1.0 - p_c))
    return Paths(s_t, s_t, n_t, s_c, s_c, n_c, truth=p_t - p_c, sd=sd)


def skewed_paths(seed: int, *, batch: int = 100, sigma: float = 0.8) -> Paths:
    """A/A on right-skewed delivery minutes (log-normal), simulated order by order."""
    rng = np.random.default_rng(seed)
    y_t = rng.lognormal(3.2, sigma, (EXPERIMENTS, LOOKS, batch))
    y_c = rng.lognormal(3.2, sigma, (EXPERIMENTS, LOOKS, batch))
    looks = np.arange(1, LOOKS + 1, dtype=np.float64)
    n = np.broadcast_to(batch * looks, (EXPERIMENTS, LOOKS))
    mean = math.exp(3.2 + sigma**2 / 2.0)
    sd = mean * math.sqrt(math.expm1(sigma**2))
    return Paths(
        np.cumsum(y_t.sum(axis=2), axis=1),
        np.cumsum((y_t**2).sum(axis=2), axis=1),
        n,
        np.cumsum(y_c.sum(axis=2), axis=1),
        np.cumsum((y_c**2).sum(axis=2), axis=1),
        n,
        truth=0.0,
        sd=sd,
    )


SCENARIOS: dict[str, Callable[[], Paths]] = {
    "rate_50_50": lambda: rate_paths(11, BASE_RATE, BASE_RATE),
    "rate_30_70": lambda: rate_paths(12, BASE_RATE, BASE_RATE, batch_t=60, batch_c=140),
    "skewed_minutes": lambda: skewed_paths(13),
    "rate_effect": lambda: rate_paths(14, 0.15, BASE_RATE),
}


@dataclass(frozen=True)
class Monitoring:
    """What happened over the looks of every experiment of a scenario."""

    cs_ever_misses: float  # share whose confidence sequence ever excluded the truth
    fixed_ever_misses: float  # same for the fixed-horizon interval checked at every look
    msprt_ever_rejects: float  # share whose always-valid p-value ever reached alpha
    cs_excludes_zero_at_end: float


@functools.cache
def monitor(scenario: str) -> Monitoring:
    paths = SCENARIOS[scenario]()
    share_t = float(paths.n_t[0, 0] / (paths.n_t[0, 0] + paths.n_c[0, 0]))
    tau = matched_tau(paths.n_final, paths.sd, share_t=share_t, alpha=ALPHA)
    cs_miss = fixed_miss = msprt = end = 0
    for e in range(EXPERIMENTS):
        test = SequentialTest(tau=tau)
        cs_missed = fixed_missed = False
        for k in range(LOOKS):
            look = paths.look(e, k)
            cs = difference_confidence_sequence(*look, alpha=ALPHA, n_planned=paths.n_final)
            cs_missed |= cs.excludes(paths.truth)
            fixed_missed |= fixed_interval(*look, alpha=ALPHA).excludes(paths.truth)
            test.update(*look)
        cs_miss += cs_missed
        fixed_miss += fixed_missed
        msprt += test.p_value <= ALPHA
        end += cs.excludes_zero
    return Monitoring(
        cs_ever_misses=cs_miss / EXPERIMENTS,
        fixed_ever_misses=fixed_miss / EXPERIMENTS,
        msprt_ever_rejects=msprt / EXPERIMENTS,
        cs_excludes_zero_at_end=end / EXPERIMENTS,
    )


def totals(mean: float, var: float, n: float) -> tuple[float, float, float]:
    """Sufficient statistics (sum, sumsq, n) of n outcomes with this mean and sample variance."""
    return n * mean, (n - 1.0) * var + n * mean * mean, n


# --- error control under peeking --------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["rate_50_50", "rate_30_70", "skewed_minutes"])
def test_confidence_sequence_controls_error_under_peeking(scenario: str) -> None:
    result = monitor(scenario)
    assert result.cs_ever_misses <= 0.08
    # the fixed-horizon interval checked after every batch is what the sequence prevents
    assert result.fixed_ever_misses > 0.15


@pytest.mark.parametrize("scenario", ["rate_50_50", "rate_30_70", "skewed_minutes"])
def test_msprt_controls_error_under_peeking(scenario: str) -> None:
    assert monitor(scenario).msprt_ever_rejects <= 0.08


def test_real_effect_is_found_and_still_covered() -> None:
    result = monitor("rate_effect")  # late rate 15% vs 12%, 5,000 orders per arm at the end
    assert result.cs_excludes_zero_at_end >= 0.8
    assert result.msprt_ever_rejects >= 0.8
    assert result.cs_ever_misses <= 0.08  # coverage of the true +3 points holds too


# --- widths -----------------------------------------------------------------------------------


def test_sequence_is_wider_than_fixed_interval_and_shrinks() -> None:
    widths = []
    for n in [50, 200, 1_000, 5_000, 20_000, 100_000, 1_000_000]:
        arm_t, arm_c = totals(0.14, 0.12, n), totals(0.12, 0.10, n)
        cs = difference_confidence_sequence(*arm_t, *arm_c, n_planned=10_000)
        fixed = fixed_interval(*arm_t, *arm_c)
        assert cs.estimate == pytest.approx(0.02)
        assert fixed.estimate == pytest.approx(0.02)
        assert cs.se == pytest.approx(fixed.se)
        assert cs.lower < fixed.lower < fixed.upper < cs.upper
        widths.append(cs.half_width)
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))


def test_width_at_planned_size() -> None:
    arm = totals(0.12, 0.1056, 5_000)
    cs = difference_confidence_sequence(*arm, *arm, n_planned=10_000)
    fixed = fixed_interval(*arm, *arm)
    assert cs.half_width / fixed.half_width == pytest.approx(1.549, abs=0.005)
    # the fixed interval is the textbook one
    assert fixed.half_width == pytest.approx(stats.norm.ppf(0.975) * fixed.se)
    assert fixed.se == pytest.approx(math.sqrt(2 * 0.1056 / 5_000))


def test_sequence_is_normal_mixture_boundary_times_unit_sd() -> None:
    arm_t, arm_c = totals(31.0, 90.0, 700), totals(30.0, 60.0, 1_300)
    rho = 0.05
    cs = difference_confidence_sequence(*arm_t, *arm_c, alpha=0.1, rho=rho)
    n = 2_000.0
    sigma = math.sqrt(n * (90.0 / 700 + 60.0 / 1_300))
    half = sigma * float(normal_mixture_radius(n, rho, alpha=0.1))
    assert cs.rho == rho
    assert cs.half_width == pytest.approx(half)
    assert (cs.lower, cs.upper) == pytest.approx((1.0 - half, 1.0 + half))
    radii = normal_mixture_radius([10, 100, 1_000], rho)
    assert radii.shape == (3,)
    assert np.all(np.diff(radii) < 0)


def test_optimal_rho_nearly_minimises_width_at_planned_size() -> None:
    for alpha, n_planned in [(0.05, 10_000), (0.01, 250), (0.1, 1e6)]:
        rho = optimal_rho(n_planned, alpha)
        best = optimize.minimize_scalar(
            lambda log_rho, a=alpha, n=n_planned: float(
                normal_mixture_radius(n, math.exp(log_rho), a)
            ),
            bounds=(-15.0, 5.0),
            method="bounded",
        )
        assert float(normal_mixture_radius(n_planned, rho, alpha)) <= best.fun * 1.001
        assert rho == pytest.approx(math.exp(best.x), rel=0.05)


def test_rho_is_given_or_derived_from_planned_size() -> None:
    arm = totals(0.3, 0.2, 400)
    derived = difference_confidence_sequence(*arm, *arm, n_planned=4_000, alpha=0.01)
    assert derived.rho == pytest.approx(optimal_rho(4_000, 0.01))
    assert difference_confidence_sequence(*arm, *arm, rho=0.02).rho == 0.02


def test_no_spread_means_no_information() -> None:
    nothing = (0.0, 0.0, 300.0)  # no late order yet in either arm
    cs = difference_confidence_sequence(*nothing, *nothing, n_planned=10_000)
    assert cs.lower == -math.inf
    assert cs.upper == math.inf
    assert not cs.excludes_zero
    assert not fixed_interval(*nothing, *nothing).excludes_zero
    result = SequentialTest(tau=0.01).update(*nothing, *nothing)
    assert result.likelihood_ratio == 1.0
    assert result.p_value == 1.0


def test_results_are_frozen() -> None:
    arm = totals(0.3, 0.2, 400)
    cs = difference_confidence_sequence(*arm, *arm, n_planned=4_000)
    with pytest.raises(FrozenInstanceError):
        cs.lower = 0.0  # type: ignore[misc]


# --- mSPRT ------------------------------------------------------------------------------------


def test_msprt_likelihood_ratio_formula() -> None:
    d, v, tau = 0.02, 4e-5, 0.01
    expected = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * d**2 / (2 * v * (v + tau**2)))
    assert math.exp(float(msprt_log_likelihood_ratio(d, v, tau))) == pytest.approx(expected)
    shifted = msprt_log_likelihood_ratio([0.05, 0.03], [v, v], tau, null=0.03)
    assert shifted[0] == pytest.approx(math.log(expected))
    assert shifted[1] == pytest.approx(0.5 * math.log(v / (v + tau**2)))


def test_msprt_is_the_dual_of_the_confidence_sequence() -> None:
    arm_t, arm_c = totals(0.15, 0.1275, 3_000), totals(0.12, 0.1056, 2_000)
    rho = optimal_rho(10_000)
    cs = difference_confidence_sequence(*arm_t, *arm_c, rho=rho)
    n = 5_000.0
    tau = rho * math.sqrt(n) * cs.se  # tau**2 = rho**2 * n * V
    # a null on the boundary of the sequence is rejected at exactly alpha
    for null in (cs.lower, cs.upper):
        log_lr = float(msprt_log_likelihood_ratio(cs.estimate, cs.se**2, tau, null=null))
        assert log_lr == pytest.approx(-math.log(ALPHA))


def test_msprt_p_value_is_the_running_minimum() -> None:
    arm_c = totals(0.12, 0.1056, 2_000)
    looks = [(*totals(mean, 0.11, 2_000), *arm_c) for mean in (0.12, 0.13, 0.18, 0.12, 0.11)]
    # cumulative sizes must not fall, so grow them slightly from look to look
    looks = [(s, ss, n + i, *c) for i, (s, ss, n, *c) in enumerate(looks)]
    test = SequentialTest(tau=0.02)
    p_values = [test.update(*look).p_value for look in looks]
    per_look = []
    for s, ss, n, sc, ssc, nc in looks:
        var = (ss - s * s / n) / (n - 1) / n + (ssc - sc * sc / nc) / (nc - 1) / nc
        log_lr = float(msprt_log_likelihood_ratio(s / n - sc / nc, var, 0.02))
        per_look.append(min(1.0, math.exp(-log_lr)))
    assert p_values == pytest.approx(np.minimum.accumulate(per_look).tolist())
    assert p_values[2] < 0.001  # the strong look at 18% ...
    assert per_look[-1] > 0.5  # ... is remembered after the evidence fades
    assert p_values[-1] == p_values[2]
    assert msprt_p_value(looks, tau=0.02) == pytest.approx(p_values[-1])
    assert test.looks == 5


def test_sequential_test_rejects_batches_instead_of_totals() -> None:
    test = SequentialTest(tau=0.01)
    test.update(*totals(0.1, 0.09, 1_000), *totals(0.1, 0.09, 1_000))
    with pytest.raises(ValueError, match=r"^n_t\b"):
        test.update(*totals(0.1, 0.09, 100), *totals(0.1, 0.09, 1_100))


# --- sample ratio mismatch --------------------------------------------------------------------


def test_srm_flags_52_48_but_not_502_498_on_20000_orders() -> None:
    bad = sample_ratio_mismatch(10_400, 9_600)
    fine = sample_ratio_mismatch(10_040, 9_960)
    assert bad.mismatch
    assert not fine.mismatch
    for result, (t, c) in [(bad, (10_400, 9_600)), (fine, (10_040, 9_960))]:
        reference = stats.chisquare([t, c])
        assert result.statistic == pytest.approx(reference.statistic)
        assert result.p_value == pytest.approx(reference.pvalue)
    assert bad.observed_share_t == pytest.approx(0.52)


def test_srm_uses_the_planned_split_and_threshold() -> None:
    planned = sample_ratio_mismatch(6_000, 14_000, expected_share_t=0.3)
    assert planned.statistic == pytest.approx(0.0)
    assert not planned.mismatch
    assert sample_ratio_mismatch(10_000, 10_000, expected_share_t=0.3).mismatch
    borderline = sample_ratio_mismatch(10_200, 9_800)  # p about 0.005
    assert not borderline.mismatch
    assert sample_ratio_mismatch(10_200, 9_800, threshold=0.01).mismatch


# --- guardrails -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "upper", "bad_direction", "state"),
    [
        (0.031, 0.05, "increase", "breached"),
        (-0.02, 0.029, "increase", "cleared"),
        (0.01, 0.04, "increase", "undecided"),
        (-0.05, -0.031, "decrease", "breached"),
        (-0.029, 0.02, "decrease", "cleared"),
        (-0.04, 0.0, "decrease", "undecided"),
        (0.03, 0.05, "increase", "undecided"),  # touching the margin decides nothing
        (-math.inf, math.inf, "increase", "undecided"),
    ],
)
def test_guardrail_states(lower: float, upper: float, bad_direction: Any, state: str) -> None:
    result = non_inferiority(lower, upper, margin=0.03, bad_direction=bad_direction)
    assert result == state
    assert isinstance(result, GuardrailState)


def test_guardrail_with_relative_margin_on_a_confidence_sequence() -> None:
    # cost per delivery of 6.00 must not rise by more than 3% (0.18)
    control = totals(6.00, 4.0, 40_000)
    margin = 0.03 * 6.00
    worse = difference_confidence_sequence(*totals(6.40, 4.0, 40_000), *control, rho=0.01)
    same = difference_confidence_sequence(*totals(6.00, 4.0, 40_000), *control, rho=0.01)
    early = difference_confidence_sequence(*totals(6.00, 4.0, 400), *control, rho=0.01)
    assert non_inferiority(worse.lower, worse.upper, margin=margin, bad_direction="increase") == (
        GuardrailState.BREACHED
    )
    assert non_inferiority(same.lower, same.upper, margin=margin, bad_direction="increase") == (
        GuardrailState.CLEARED
    )
    assert non_inferiority(early.lower, early.upper, margin=margin, bad_direction="increase") == (
        GuardrailState.UNDECIDED
    )


# --- validation -------------------------------------------------------------------------------

ARM = totals(0.2, 0.16, 500)


def _cs(**changes: Any) -> Any:
    args: dict[str, Any] = dict(
        zip(("sum_t", "sumsq_t", "n_t", "sum_c", "sumsq_c", "n_c"), (*ARM, *ARM), strict=True)
    )
    options = {"n_planned": 5_000.0}
    for key, value in changes.items():
        (options if key in ("alpha", "rho", "n_planned") else args)[key] = value
    return difference_confidence_sequence(*args.values(), **options)


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: _cs(alpha=0.0), "alpha"),
        (lambda: _cs(alpha=1.5), "alpha"),
        (lambda: _cs(n_planned=-10.0), "n_planned"),
        (lambda: _cs(n_planned=None), "n_planned"),
        (lambda: _cs(rho=0.1), "rho"),  # together with n_planned
        (lambda: _cs(n_planned=None, rho=0.0), "rho"),
        (lambda: _cs(n_t=1), "n_t"),
        (lambda: _cs(n_c=float("nan")), "n_c"),
        (lambda: _cs(sum_t=float("inf")), "sum_t"),
        (lambda: _cs(sumsq_c=1.0), "sumsq_c"),
        (lambda: fixed_interval(*ARM, *ARM, alpha=-0.1), "alpha"),
        (lambda: optimal_rho(0.0), "n_planned"),
        (lambda: normal_mixture_radius([10, 0], 0.1), "n"),
        (lambda: normal_mixture_radius(10, -0.1), "rho"),
        (lambda: msprt_log_likelihood_ratio(0.1, 0.01, 0.0), "tau"),
        (lambda: msprt_log_likelihood_ratio(0.1, -0.01, 0.1), "variance"),
        (lambda: msprt_log_likelihood_ratio(math.nan, 0.01, 0.1), "estimate"),
        (lambda: msprt_log_likelihood_ratio(0.1, 0.01, 0.1, null=math.inf), "null"),
        (lambda: SequentialTest(tau=-1.0), "tau"),
        (lambda: msprt_p_value([], tau=0.1), "looks"),
        (lambda: matched_tau(1_000, 0.0), "sd"),
        (lambda: matched_tau(1_000, 0.3, share_t=1.0), "share_t"),
        (lambda: matched_tau(1_000, 0.3, alpha=2.0), "alpha"),
        (lambda: sample_ratio_mismatch(-1, 10), "n_t"),
        (lambda: sample_ratio_mismatch(10, 2.5), "n_c"),  # type: ignore[arg-type]
        (lambda: sample_ratio_mismatch(0, 0), "n_t"),
        (lambda: sample_ratio_mismatch(10, 10, expected_share_t=0.0), "expected_share_t"),
        (lambda: sample_ratio_mismatch(10, 10, threshold=1.0), "threshold"),
        (lambda: non_inferiority(0.1, 0.0, margin=0.1, bad_direction="increase"), "lower"),
        (lambda: non_inferiority(math.nan, 0.0, margin=0.1, bad_direction="increase"), "lower"),
        (lambda: non_inferiority(0.0, math.nan, margin=0.1, bad_direction="increase"), "upper"),
        (lambda: non_inferiority(0.0, 0.1, margin=-0.1, bad_direction="increase"), "margin"),
        (lambda: non_inferiority(0.0, 0.1, margin=0.1, bad_direction="up"), "bad_direction"),
    ],
)
def test_value_errors_name_their_parameter(call: Callable[[], Any], parameter: str) -> None:
    with pytest.raises(ValueError, match=rf"^{parameter}\b"):
        call()
