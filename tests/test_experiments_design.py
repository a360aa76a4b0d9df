"""Sample size, power, design effects, ICC and CUPED of ``cxagent.experiments.design``.

Sample sizes are checked against statsmodels' ``NormalIndPower`` (and ``TTestIndPower``) on
grids of cases; the ICC and CUPED estimators on seeded simulations with a planted truth; the
plans on the property that defines them (the planned duration reaches the target power, one
day less does not).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from cxagent.experiments.design import (
    PowerPlan,
    achieved_power,
    cohens_h,
    cuped_adjust,
    cuped_theta,
    cuped_variance_factor,
    design_effect,
    icc_anova,
    plan_power,
    sample_size_means,
    sample_size_proportions,
)

# The suite shares the machine with benchmarks: no deadline, few examples.
FAST = settings(max_examples=60, deadline=None)

rates = st.floats(0.02, 0.95)
alphas = st.floats(0.005, 0.2)
powers = st.floats(0.5, 0.99)
ratios = st.floats(0.25, 4.0)


def _alternative(effect: float, two_sided: bool) -> str:
    if two_sided:
        return "two-sided"
    return "larger" if effect > 0 else "smaller"


def _statsmodels_n(
    effect: float, alpha: float, power: float, ratio: float, two_sided: bool
) -> float:
    return float(
        NormalIndPower().solve_power(
            effect_size=effect,
            alpha=alpha,
            power=power,
            ratio=ratio,
            alternative=_alternative(effect, two_sided),
        )
    )


def _assert_matches(n: int, reference: float, case: tuple[Any, ...]) -> None:
    assert abs(n - reference) / reference < 0.01, (case, n, reference)
    # Same equation solved exactly, so n is statsmodels' answer rounded up.
    assert reference - 1e-6 <= n < reference + 1 + 1e-6, (case, n, reference)


# --- sample sizes against statsmodels ---------------------------------------------------------


@pytest.mark.parametrize("two_sided", [True, False])
def test_proportions_match_statsmodels_normal_ind_power(two_sided: bool) -> None:
    grid = itertools.product(
        (0.05, 0.2, 0.5, 0.85),  # p_control
        (-0.02, 0.01, 0.04),  # mde_abs
        (0.01, 0.05),  # alpha
        (0.8, 0.9),  # power
        (0.5, 1.0, 2.0),  # ratio
    )
    for case in grid:
        p, mde, alpha, power, ratio = case
        n = sample_size_proportions(
            p, mde, alpha=alpha, power=power, ratio=ratio, two_sided=two_sided
        )
        effect = proportion_effectsize(p + mde, p)
        _assert_matches(n, _statsmodels_n(effect, alpha, power, ratio, two_sided), case)


@pytest.mark.parametrize("two_sided", [True, False])
def test_means_match_statsmodels_normal_ind_power(two_sided: bool) -> None:
    grid = itertools.product(
        (2.0, 8.0),  # sd (minutes)
        (0.25, -0.4),  # mde_abs: standardised effects 0.03-0.2, so n > 100 and rounding < 1%
        (0.01, 0.05, 0.1),  # alpha
        (0.8, 0.9),  # power
        (0.5, 1.0, 3.0),  # ratio
    )
    for case in grid:
        sd, mde, alpha, power, ratio = case
        n = sample_size_means(sd, mde, alpha=alpha, power=power, ratio=ratio, two_sided=two_sided)
        _assert_matches(n, _statsmodels_n(mde / sd, alpha, power, ratio, two_sided), case)


def test_means_within_one_percent_of_the_t_test_above_100_orders() -> None:
    checked = 0
    for effect, power, ratio in itertools.product(
        (0.05, 0.1, 0.2, 0.3, 0.38), (0.8, 0.9), (0.5, 1.0, 2.0)
    ):
        n = sample_size_means(1.0, effect, alpha=0.05, power=power, ratio=ratio)
        if n <= 100:
            continue
        checked += 1
        t_n = TTestIndPower().solve_power(effect_size=effect, alpha=0.05, power=power, ratio=ratio)
        assert abs(n - t_n) / t_n < 0.01, (effect, power, ratio, n, t_n)
        assert n <= t_n + 1  # the z-test never asks for more orders than the t-test
    assert checked >= 25


def test_cohens_h_is_statsmodels_proportion_effectsize() -> None:
    for p_control, p_treatment in [(0.1, 0.12), (0.5, 0.45), (0.03, 0.01), (0.9, 0.95)]:
        assert cohens_h(p_control, p_treatment) == pytest.approx(
            proportion_effectsize(p_treatment, p_control), rel=1e-12
        )


def test_known_sample_sizes() -> None:
    # 10% -> 12% at alpha 0.05, power 0.8: statsmodels gives 3834.6 per arm.
    assert sample_size_proportions(0.10, 0.02) == 3835
    # d = 0.1: ((1.95996 + 0.84162) / 0.1)^2 * 2 = 1569.77 per arm.
    assert sample_size_means(10.0, 1.0) == 1570
    # Halving the control arm's partner (ratio 0.5) needs 1.5x the control orders of ratio 1.
    assert sample_size_means(10.0, 1.0, ratio=0.5) == math.ceil(1569.772 * 1.5)


def test_achieved_power_matches_statsmodels_power() -> None:
    for n, effect, alpha, ratio, two_sided in [
        (500, 0.1, 0.05, 1.0, True),
        (2000, -0.07, 0.01, 2.0, True),
        (800, 0.12, 0.1, 0.5, False),
        (1500, -0.05, 0.05, 1.0, False),
        (50, 0.0, 0.05, 1.0, True),
    ]:
        reference = NormalIndPower().power(
            effect, n, alpha, ratio=ratio, alternative=_alternative(effect, two_sided)
        )
        got = achieved_power(n, effect, alpha=alpha, ratio=ratio, two_sided=two_sided)
        assert got == pytest.approx(reference, rel=1e-10, abs=1e-14)
    assert achieved_power(50, 0.0, alpha=0.05) == pytest.approx(0.05)


# --- consistency and monotonicity properties --------------------------------------------------


@st.composite
def rate_cases(draw: st.DrawFn) -> tuple[float, float]:
    p = draw(rates)
    mde = draw(st.floats(0.005, 0.2)) * draw(st.sampled_from([-1.0, 1.0]))
    assume(0.0 < p + mde < 1.0)
    return p, mde


@FAST
@given(rate_cases(), alphas, powers, ratios, st.booleans())
def test_solved_n_is_the_smallest_reaching_the_target_power(
    case: tuple[float, float], alpha: float, power: float, ratio: float, two_sided: bool
) -> None:
    assume(power > alpha + 0.05)
    p, mde = case
    n = sample_size_proportions(p, mde, alpha=alpha, power=power, ratio=ratio, two_sided=two_sided)
    h = cohens_h(p, p + mde)

    def power_at(orders: int) -> float:
        return achieved_power(orders, h, alpha=alpha, ratio=ratio, two_sided=two_sided)

    assert power_at(n) >= power - 1e-12
    if n > 1:
        assert power_at(n - 1) <= power + 1e-12


@FAST
@given(st.floats(0.5, 30.0), st.floats(0.05, 5.0), alphas, powers, ratios, st.booleans())
def test_solved_n_for_means_is_the_smallest_reaching_the_target_power(
    sd: float, mde: float, alpha: float, power: float, ratio: float, two_sided: bool
) -> None:
    assume(power > alpha + 0.05)
    n = sample_size_means(sd, mde, alpha=alpha, power=power, ratio=ratio, two_sided=two_sided)
    effect = mde / sd
    assert achieved_power(n, effect, alpha=alpha, ratio=ratio, two_sided=two_sided) >= power - 1e-12
    if n > 1:
        below = achieved_power(n - 1, effect, alpha=alpha, ratio=ratio, two_sided=two_sided)
        assert below <= power + 1e-12


@FAST
@given(rate_cases(), st.floats(1.05, 3.0), alphas, powers)
def test_n_shrinks_as_the_mde_grows(
    case: tuple[float, float], factor: float, alpha: float, power: float
) -> None:
    assume(power > alpha + 0.05)
    p, mde = case
    assume(0.0 < p + mde * factor < 1.0)
    small = sample_size_proportions(p, mde, alpha=alpha, power=power)
    large = sample_size_proportions(p, mde * factor, alpha=alpha, power=power)
    assert large <= small
    assert sample_size_means(5.0, mde * factor * 10, alpha=alpha, power=power) <= (
        sample_size_means(5.0, mde * 10, alpha=alpha, power=power)
    )


@FAST
@given(rate_cases(), alphas, st.floats(0.5, 0.9), st.floats(0.02, 0.09))
def test_n_grows_with_power_and_shrinks_with_alpha(
    case: tuple[float, float], alpha: float, power: float, step: float
) -> None:
    assume(power > alpha + 0.05 and alpha + step < 0.5)
    p, mde = case
    n = sample_size_proportions(p, mde, alpha=alpha, power=power)
    assert sample_size_proportions(p, mde, alpha=alpha, power=power + step) >= n
    assert sample_size_proportions(p, mde, alpha=alpha + step, power=power) <= n
    n_mean = sample_size_means(3.0, mde * 10, alpha=alpha, power=power)
    assert sample_size_means(3.0, mde * 10, alpha=alpha, power=power + step) >= n_mean


def test_one_sided_needs_fewer_orders_than_two_sided() -> None:
    two = sample_size_proportions(0.2, -0.01)
    one = sample_size_proportions(0.2, -0.01, two_sided=False)
    # z_{0.95} vs z_{0.975}: ((1.645 + 0.842) / (1.960 + 0.842))^2 = 0.788
    assert one / two == pytest.approx(0.788, abs=0.002)


# --- design effect ----------------------------------------------------------------------------


def test_design_effect_known_values() -> None:
    assert design_effect(20, 0.05) == pytest.approx(1.95)
    assert design_effect(20, 0.05, cluster_size_cv=0.5) == pytest.approx(1 + (1.25 * 20 - 1) * 0.05)
    assert design_effect(1, 0.3) == 1.0
    assert design_effect(50, 0.0, cluster_size_cv=2.0) == 1.0
    assert design_effect(50, 1.0) == 50.0


def test_design_effect_with_unequal_sizes_is_the_variance_of_an_order_level_mean() -> None:
    # Random-intercept model with fixed cluster sizes: var(order mean) * N / sigma^2 is
    # 1 + (sum(n_i^2) / N - 1) icc, which the cv form must reproduce (cv with divisor k).
    sizes = np.random.default_rng(5).integers(3, 120, 300).astype(float)
    icc = 0.07
    n = sizes.sum()
    exact = 1 + (float(np.sum(sizes**2)) / n - 1) * icc
    cv = float(sizes.std() / sizes.mean())
    assert design_effect(float(sizes.mean()), icc, cluster_size_cv=cv) == pytest.approx(exact)


@FAST
@given(st.floats(1.0, 5000.0), st.floats(0.0, 1.0), st.floats(0.0, 3.0), st.floats(0.0, 0.5))
def test_design_effect_is_at_least_one_and_monotone(
    m: float, icc: float, cv: float, step: float
) -> None:
    de = design_effect(m, icc, cluster_size_cv=cv)
    assert de >= 1.0
    assert design_effect(m * (1 + step), icc, cluster_size_cv=cv) >= de
    assert design_effect(m, min(1.0, icc + step), cluster_size_cv=cv) >= de
    assert design_effect(m, icc, cluster_size_cv=cv + step) >= de


# --- ICC ----------------------------------------------------------------------------------------


def _clustered_normal(
    icc: float, seed: int, n_clusters: int = 1500
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_clusters), rng.integers(5, 50, n_clusters))
    between = rng.normal(0.0, math.sqrt(icc), n_clusters)[labels]
    return 30.0 + between + rng.normal(0.0, math.sqrt(1.0 - icc), labels.size), labels


# Tolerances are about 3 standard deviations of the estimate over seeds (1500 clusters).
@pytest.mark.parametrize(
    ("icc", "seed", "tol"), [(0.05, 1, 0.01), (0.2, 2, 0.02), (0.01, 3, 0.006)]
)
def test_icc_recovers_a_planted_value_with_unequal_clusters(
    icc: float, seed: int, tol: float
) -> None:
    values, labels = _clustered_normal(icc, seed)
    assert icc_anova(values, labels) == pytest.approx(icc, abs=tol)


def test_icc_recovers_a_planted_value_for_binary_outcomes() -> None:
    # Beta-binomial stores: late probability ~ Beta(a, b) has icc 1 / (a + b + 1) = 0.05.
    rng = np.random.default_rng(11)
    n_clusters = 1500
    labels = np.repeat(np.arange(n_clusters), rng.integers(10, 60, n_clusters))
    late_prob = rng.beta(1.9, 17.1, n_clusters)
    late = (rng.random(labels.size) < late_prob[labels]).astype(float)
    assert icc_anova(late, labels) == pytest.approx(0.05, abs=0.01)  # sd over seeds 0.003


def test_icc_is_near_zero_without_clustering_and_never_negative() -> None:
    for seed in range(5):
        values, labels = _clustered_normal(0.0, seed)
        estimate = icc_anova(values, labels)
        assert 0.0 <= estimate < 0.01


def test_icc_is_the_anova_f_identity() -> None:
    # (F - 1) / (F + n0 - 1) with scipy's one-way F, an independent route to the same value.
    values, labels = _clustered_normal(0.1, 7, n_clusters=60)
    groups = [values[labels == c] for c in np.unique(labels)]
    f = stats.f_oneway(*groups).statistic
    sizes = np.array([g.size for g in groups], dtype=float)
    n0 = (sizes.sum() - np.sum(sizes**2) / sizes.sum()) / (sizes.size - 1)
    assert icc_anova(values, labels) == pytest.approx((f - 1) / (f + n0 - 1), rel=1e-10)


def test_icc_extremes_and_string_labels() -> None:
    labels = np.array(["SF|12", "SF|12", "SF|13", "SF|13", "LA|12", "LA|12"])
    assert icc_anova([1.0, 1.0, 2.0, 2.0, 5.0, 5.0], labels) == 1.0
    values, numeric = _clustered_normal(0.1, 9, n_clusters=50)
    as_text = np.array([f"store-{c}" for c in numeric])
    assert icc_anova(values, as_text) == pytest.approx(icc_anova(values, numeric))


# --- CUPED ------------------------------------------------------------------------------------


def test_cuped_variance_factor_values() -> None:
    assert cuped_variance_factor(0.0) == 1.0
    assert cuped_variance_factor(0.5) == pytest.approx(0.75)
    assert cuped_variance_factor(-0.8) == pytest.approx(0.36)
    assert cuped_variance_factor(1.0) == 0.0


@pytest.mark.parametrize("rho", [0.3, 0.6, -0.7])
def test_cuped_adjusted_variance_is_one_minus_rho_squared(rho: float) -> None:
    rng = np.random.default_rng(int(abs(rho) * 100))
    n = 200_000
    x = rng.normal(20.0, 4.0, n)  # pre-period minutes
    z = (x - 20.0) / 4.0
    y = 35.0 + 6.0 * (rho * z + math.sqrt(1 - rho**2) * rng.normal(size=n))
    theta = cuped_theta(y, x)
    assert theta == pytest.approx(6.0 * rho / 4.0, abs=0.01)
    assert theta == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)  # the OLS slope
    adjusted = cuped_adjust(y, x, theta)
    ratio = adjusted.var() / y.var()
    assert ratio == pytest.approx(cuped_variance_factor(rho), abs=0.01)
    # In sample the identity is exact with the sample correlation.
    r = np.corrcoef(y, x)[0, 1]
    assert ratio == pytest.approx(1 - r**2, rel=1e-9)
    assert adjusted.mean() == pytest.approx(y.mean(), rel=1e-12)


# --- plans ------------------------------------------------------------------------------------


def _power_after(plan: PowerPlan, days: int, orders_per_day: float, burn_in: float = 0.0) -> float:
    """Power with ``days`` of traffic at the plan's design effect (fixed-DE units only)."""
    control = orders_per_day * (1 - plan.treated_share) * (1 - burn_in) * days
    ratio = plan.treated_share / (1 - plan.treated_share)
    return achieved_power(
        control / (plan.design_effect * plan.cuped_factor),
        plan.effect_size,
        alpha=plan.alpha,
        ratio=ratio,
        two_sided=plan.two_sided,
    )


def test_order_plan_is_the_plain_sample_size() -> None:
    plan = plan_power("late_rate", baseline=0.12, mde=-0.01, orders_per_day=2000, min_days=1)
    n = sample_size_proportions(0.12, -0.01)
    assert (plan.kind, plan.unit, plan.design_effect, plan.cuped_factor) == ("rate", "order", 1, 1)
    assert plan.orders_control == plan.orders_treatment == plan.orders_per_arm_iid == n
    assert plan.duration_days == math.ceil(2 * n / 2000)
    assert plan.cluster_size is plan.clusters_control is plan.clusters_treatment is None
    assert plan.achieved_power >= 0.8
    assert _power_after(plan, plan.duration_days - 1, 2000) < 0.8
    # Plenty of traffic: the weekly minimum binds.
    busy = plan_power("late_rate", baseline=0.12, mde=-0.01, orders_per_day=1e6)
    assert busy.duration_days == 7 and busy.achieved_power > 0.999


def test_mean_plan_with_cuped_and_unequal_allocation() -> None:
    plan = plan_power(
        "delivery_minutes",
        baseline=38.0,
        mde=-0.5,
        sd=14.0,
        orders_per_day=800,
        treated_share=0.2,
        cuped_correlation=0.5,
        min_days=1,
    )
    n_iid = sample_size_means(14.0, -0.5, ratio=0.25)
    assert plan.kind == "mean" and plan.effect_size == pytest.approx(-0.5 / 14.0)
    assert plan.orders_per_arm_iid == n_iid
    assert plan.cuped_factor == pytest.approx(0.75)
    assert plan.orders_control == pytest.approx(0.75 * n_iid, abs=1.0)
    assert plan.orders_treatment == pytest.approx(0.25 * plan.orders_control, abs=1.0)
    # 80% of the traffic is control, and control is what the duration waits for.
    assert plan.duration_days == pytest.approx(plan.orders_control / (0.8 * 800), abs=1.0)
    assert plan.achieved_power >= 0.8 > _power_after(plan, plan.duration_days - 1, 800)


def test_switchback_plan_uses_the_window_as_cluster_and_burn_in_costs_days() -> None:
    common: dict[str, Any] = dict(
        baseline=0.15,
        mde=-0.01,
        unit="region_x_window",
        orders_per_day=6000,
        cluster_size_mean=120.0,
        cluster_size_cv=0.6,
        icc=0.01,
        min_days=1,
    )
    clean = plan_power("late_rate", **common)
    burnt = plan_power("late_rate", **common, burn_in_share=0.25)
    assert clean.cluster_size == 120.0 and burnt.cluster_size == 90.0
    assert clean.design_effect == pytest.approx(design_effect(120.0, 0.01, cluster_size_cv=0.6))
    assert burnt.design_effect == pytest.approx(design_effect(90.0, 0.01, cluster_size_cv=0.6))
    for plan, burn_in in ((clean, 0.0), (burnt, 0.25)):
        assert plan.clusters_control == math.ceil(plan.orders_control / plan.cluster_size)
        assert plan.orders_control == pytest.approx(
            plan.orders_per_arm_iid * plan.design_effect, abs=1.0
        )
        assert (
            plan.achieved_power >= 0.8 > _power_after(plan, plan.duration_days - 1, 6000, burn_in)
        )
    # Smaller windows shrink the design effect but dropping a quarter of them costs more.
    assert burnt.orders_control < clean.orders_control
    assert burnt.duration_days > clean.duration_days


def test_store_plan_solves_duration_with_the_growing_cluster() -> None:
    plan = plan_power(
        "late_rate",
        baseline=0.12,
        mde=-0.01,
        unit="store",
        orders_per_day=20_000,
        clusters_available=400,
        icc=0.01,
        cluster_size_cv=0.5,
        min_days=1,
    )
    assert plan.cluster_size == pytest.approx(50.0 * plan.duration_days)
    assert plan.design_effect == pytest.approx(
        design_effect(plan.cluster_size, 0.01, cluster_size_cv=0.5)
    )
    assert plan.clusters_control is not None and plan.clusters_control <= 200
    assert plan.achieved_power >= 0.8

    # One day less: smaller stores, smaller design effect, but not enough power.
    shorter = 50.0 * (plan.duration_days - 1)
    de = design_effect(shorter, 0.01, cluster_size_cv=0.5)
    assert achieved_power(200 * shorter / de, plan.effect_size) < 0.8


def test_store_plan_without_clustering_matches_order_randomisation() -> None:
    kwargs: dict[str, Any] = dict(baseline=0.3, mde=0.02, orders_per_day=3000, min_days=1)
    by_order = plan_power("refund_rate", **kwargs)
    by_store = plan_power("refund_rate", unit="store", clusters_available=150, **kwargs)
    assert by_store.design_effect == 1.0
    assert by_store.duration_days == by_order.duration_days
    assert by_store.orders_control == by_order.orders_control


def test_store_plan_with_too_few_stores_is_refused() -> None:
    # 15970 iid orders per arm at icc 0.05 need more than 798 control stores.
    with pytest.raises(ValueError, match=r"^clusters_available: 200 stores cannot reach"):
        plan_power(
            "late_rate",
            baseline=0.12,
            mde=-0.01,
            unit="store",
            orders_per_day=1e6,
            clusters_available=200,
            icc=0.05,
        )


@FAST
@given(
    st.sampled_from(["order", "store", "region_x_window"]),
    st.floats(0.05, 0.5),  # baseline
    st.floats(0.005, 0.05),  # |mde|
    st.floats(0.1, 0.9),  # treated_share
    st.floats(0.0, 0.05),  # icc
    st.floats(0.0, 0.8),  # cuped correlation
    st.integers(1, 14),  # min_days
)
def test_every_plan_reaches_its_power_and_not_a_day_sooner(
    unit: str,
    baseline: float,
    mde: float,
    share: float,
    icc: float,
    rho: float,
    min_days: int,
) -> None:
    assume(mde < baseline)
    kwargs: dict[str, Any] = dict(
        baseline=baseline,
        mde=-mde,
        orders_per_day=5000.0,
        treated_share=share,
        cuped_correlation=rho,
        min_days=min_days,
        unit=unit,
    )
    if unit == "store":
        kwargs.update(clusters_available=5000, icc=icc)
    elif unit == "region_x_window":
        kwargs.update(cluster_size_mean=80.0, icc=icc, burn_in_share=0.1)
    try:
        plan = plan_power("metric", **kwargs)
    except ValueError as refused:
        # Only a store design may be infeasible, and only if infinitely long stores (effective
        # n -> stores_control / (icc * (1 + cv^2) * cuped)) still fall short of the power.
        assert unit == "store" and str(refused).startswith("clusters_available:")
        limit = 5000 * (1 - share) / (icc * cuped_variance_factor(rho))
        effect = cohens_h(baseline, baseline - mde)
        ratio = share / (1 - share)
        assert achieved_power(limit, effect, ratio=ratio) <= 0.8 + 1e-9
        return
    assert plan.duration_days >= min_days
    assert plan.design_effect >= 1.0
    assert plan.achieved_power >= 0.8 - 1e-9
    # orders_per_arm_iid is rounded up before the CUPED factor, orders_control after it.
    assert plan.orders_control >= (plan.orders_per_arm_iid - 1) * plan.cuped_factor
    if plan.duration_days > min_days and unit != "store":
        burn_in = 0.1 if unit == "region_x_window" else 0.0
        assert _power_after(plan, plan.duration_days - 1, 5000.0, burn_in) < 0.8


# --- errors name their parameter --------------------------------------------------------------

ONES = np.ones(6)
TWO_CLUSTERS = np.array([0, 0, 0, 1, 1, 1])
RATE = dict(baseline=0.1, mde=0.01, orders_per_day=1000.0)

BAD_INPUTS: list[tuple[str, Callable[[], object]]] = [
    ("alpha", lambda: sample_size_proportions(0.1, 0.02, alpha=1.5)),
    ("alpha", lambda: sample_size_means(1.0, 0.1, alpha=0.0)),
    ("power", lambda: sample_size_proportions(0.1, 0.02, power=1.0)),
    ("power", lambda: sample_size_proportions(0.1, 0.02, alpha=0.05, power=0.04)),
    ("ratio", lambda: sample_size_proportions(0.1, 0.02, ratio=0.0)),
    ("p_control", lambda: sample_size_proportions(0.0, 0.02)),
    ("p_control", lambda: sample_size_proportions(float("nan"), 0.02)),
    ("mde_abs", lambda: sample_size_proportions(0.1, 0.0)),
    ("mde_abs", lambda: sample_size_proportions(0.1, 0.95)),
    ("sd", lambda: sample_size_means(0.0, 0.1)),
    ("sd", lambda: sample_size_means(float("inf"), 0.1)),
    ("mde_abs", lambda: sample_size_means(1.0, float("nan"))),
    ("n_per_arm", lambda: achieved_power(0, 0.1)),
    ("effect_size", lambda: achieved_power(100, float("inf"))),
    ("p_control", lambda: cohens_h(1.2, 0.1)),
    ("p_treatment", lambda: cohens_h(0.1, -0.1)),
    ("cluster_size_mean", lambda: design_effect(0.5, 0.1)),
    ("icc", lambda: design_effect(10, 1.1)),
    ("icc", lambda: design_effect(10, -0.1)),
    ("cluster_size_cv", lambda: design_effect(10, 0.1, cluster_size_cv=-1.0)),
    ("values", lambda: icc_anova(np.ones((3, 2)), np.zeros((3, 2)))),
    ("values", lambda: icc_anova([1.0, float("nan"), 2.0, 3.0], [0, 0, 1, 1])),
    ("values", lambda: icc_anova(ONES, TWO_CLUSTERS)),
    ("clusters", lambda: icc_anova(ONES, TWO_CLUSTERS[:5])),
    ("clusters", lambda: icc_anova([1.0, 2.0, 3.0], [0, 0, 0])),
    ("clusters", lambda: icc_anova([1.0, 2.0, 3.0], [0, 1, 2])),
    ("correlation", lambda: cuped_variance_factor(1.5)),
    ("x", lambda: cuped_theta(ONES, np.ones(5))),
    ("x", lambda: cuped_theta(np.arange(6.0), ONES)),
    ("y", lambda: cuped_theta([1.0], [2.0])),
    ("y", lambda: cuped_theta([1.0, float("inf")], [2.0, 3.0])),
    ("theta", lambda: cuped_adjust(ONES, ONES, float("nan"))),
    ("baseline", lambda: plan_power("m", baseline=1.5, mde=0.1, orders_per_day=10.0)),
    ("baseline", lambda: plan_power("m", baseline=np.inf, mde=1, sd=2.0, orders_per_day=10.0)),
    ("mde", lambda: plan_power("m", baseline=0.1, mde=0.0, orders_per_day=10.0)),
    ("mde", lambda: plan_power("m", baseline=0.1, mde=0.95, orders_per_day=10.0)),
    ("sd", lambda: plan_power("m", baseline=30.0, mde=1.0, sd=-1.0, orders_per_day=10.0)),
    ("treated_share", lambda: plan_power("m", **RATE, treated_share=1.0)),
    ("alpha", lambda: plan_power("m", **RATE, alpha=2.0)),
    ("orders_per_day", lambda: plan_power("m", baseline=0.1, mde=0.01, orders_per_day=0.0)),
    ("min_days", lambda: plan_power("m", **RATE, min_days=0)),
    ("unit", lambda: plan_power("m", **RATE, unit="city")),  # type: ignore[arg-type]
    ("icc", lambda: plan_power("m", **RATE, icc=0.1)),
    ("cluster_size_cv", lambda: plan_power("m", **RATE, cluster_size_cv=0.5)),
    ("cluster_size_mean", lambda: plan_power("m", **RATE, cluster_size_mean=50.0)),
    ("burn_in_share", lambda: plan_power("m", **RATE, burn_in_share=0.1)),
    ("cluster_size_mean", lambda: plan_power("m", **RATE, unit="region_x_window")),
    (
        "cluster_size_mean",
        lambda: plan_power(
            "m", **RATE, unit="region_x_window", cluster_size_mean=1.5, burn_in_share=0.5
        ),
    ),
    (
        "burn_in_share",
        lambda: plan_power(
            "m", **RATE, unit="region_x_window", cluster_size_mean=50.0, burn_in_share=1.0
        ),
    ),
    ("clusters_available", lambda: plan_power("m", **RATE, unit="store")),
    ("clusters_available", lambda: plan_power("m", **RATE, clusters_available=10)),
    ("clusters_available", lambda: plan_power("m", **RATE, unit="store", clusters_available=1)),
    ("icc", lambda: plan_power("m", **RATE, unit="store", clusters_available=50, icc=2.0)),
    ("cuped_correlation", lambda: plan_power("m", **RATE, cuped_correlation=1.0)),
    ("cuped_correlation", lambda: plan_power("m", **RATE, cuped_correlation=-1.2)),
]


@pytest.mark.parametrize(
    ("name", "call"), BAD_INPUTS, ids=[f"{i}-{name}" for i, (name, _) in enumerate(BAD_INPUTS)]
)
def test_bad_inputs_raise_value_errors_naming_the_parameter(
    name: str, call: Callable[[], object]
) -> None:
    with pytest.raises(ValueError) as caught:
        call()
    assert str(caught.value).startswith(f"{name}: "), str(caught.value)


def test_error_message_format() -> None:
    with pytest.raises(ValueError, match=r"^alpha: must be in \(0, 1\), got 1\.5$"):
        sample_size_proportions(0.1, 0.02, alpha=1.5)
