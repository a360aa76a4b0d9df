"""Sample size, power and duration of experiments that test fixes to CX regressions.

Every calculation is the large-sample two-sample z-test on a standardised effect ``d``:

    power = Phi(|d| sqrt(n_eff) - z_crit) [+ Phi(-|d| sqrt(n_eff) - z_crit) if two-sided]
    n_eff = n_c n_t / (n_c + n_t),   n_t = ratio * n_c,

with ``z_crit = z_{1-alpha/2}`` (two-sided) or ``z_{1-alpha}`` (one-sided, taken in the direction
of the effect). This is the equation statsmodels' ``NormalIndPower`` solves. For a rate, ``d`` is
Cohen's h, the difference of the arcsine-square-root transformed rates, whose sampling variance
is 1/n whatever the rate (Cohen 1988, ch. 6); for a mean, ``d = mde / sd`` with one common
per-order standard deviation in both arms.

Orders are the analysis unit throughout ("orders" means the metric's denominator: delivered
orders for an on-time rate, rated orders for a rating). Randomising whole stores, or region x
time windows in a switchback, multiplies the iid sample size by a design effect (Kish 1965;
Donner & Klar 2000); a pre-period covariate used as a CUPED control multiplies it by
``1 - rho^2`` (Deng, Xu, Kohavi & Walker 2013). ``plan_power`` combines the two and turns
orders into days of traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

Unit = Literal["order", "store", "region_x_window"]
MetricKind = Literal["rate", "mean"]
UNITS: Final[tuple[Unit, ...]] = ("order", "store", "region_x_window")


# --- input checks -----------------------------------------------------------------------------


def _check_open_unit(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:  # NaN fails every comparison, so it is rejected too
        raise ValueError(f"{name}: must be in (0, 1), got {value}")


def _check_positive(name: str, value: float) -> None:
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name}: must be positive and finite, got {value}")


def _check_nonzero(name: str, value: float) -> None:
    if not math.isfinite(value) or value == 0.0:
        raise ValueError(f"{name}: must be finite and non-zero, got {value}")


def _check_test(alpha: float, power: float, ratio: float) -> None:
    _check_open_unit("alpha", alpha)
    _check_open_unit("power", power)
    if power <= alpha:
        # The test rejects with probability alpha even with no data, so no n is the answer.
        raise ValueError(f"power: must exceed alpha={alpha}, got {power}")
    _check_positive("ratio", ratio)


def _as_vector(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: must hold only finite values")
    return array


# --- standardised effects and the z-test ------------------------------------------------------


def cohens_h(p_control: float, p_treatment: float) -> float:
    """Cohen's h = 2 asin(sqrt(p_treatment)) - 2 asin(sqrt(p_control)) (Cohen 1988, ch. 6).

    The arcsine square root stabilises the variance of a rate at 1 / (4 n), so h is the rate
    difference in units of the per-order standard deviation on that scale; it equals
    statsmodels' ``proportion_effectsize(p_treatment, p_control)``.
    """
    _check_open_unit("p_control", p_control)
    _check_open_unit("p_treatment", p_treatment)
    return 2.0 * math.asin(math.sqrt(p_treatment)) - 2.0 * math.asin(math.sqrt(p_control))


def _rate_effect(p_control: float, mde_abs: float) -> float:
    _check_open_unit("p_control", p_control)
    _check_nonzero("mde_abs", mde_abs)
    p_treatment = p_control + mde_abs
    if not 0.0 < p_treatment < 1.0:
        raise ValueError(
            f"mde_abs: p_control + mde_abs must be in (0, 1), got {p_control} + {mde_abs}"
        )
    return cohens_h(p_control, p_treatment)


def _critical_value(alpha: float, two_sided: bool) -> float:
    return float(stats.norm.isf(alpha / 2.0 if two_sided else alpha))


def _power_at(n_eff: float, effect_size: float, alpha: float, two_sided: bool) -> float:
    shift = abs(effect_size) * math.sqrt(n_eff)
    crit = _critical_value(alpha, two_sided)
    power = float(stats.norm.sf(crit - shift))
    if two_sided:
        power += float(stats.norm.cdf(-crit - shift))  # rejecting on the wrong side still rejects
    return power


def _n_eff_required(effect_size: float, alpha: float, power: float, two_sided: bool) -> float:
    """The n_eff at which the z-test's power equals ``power`` exactly (not rounded)."""
    crit = _critical_value(alpha, two_sided)
    one_tail = ((crit + float(stats.norm.ppf(power))) / abs(effect_size)) ** 2
    if not two_sided:
        return one_tail
    # The far tail only adds power, so the root lies in (0, one_tail]; it is closer to one_tail
    # than one order for any power worth planning for, but solving keeps n and power consistent.
    gap = _power_at(one_tail, effect_size, alpha, two_sided) - power
    if gap <= 0.0:
        return one_tail
    root = optimize.brentq(
        lambda n: _power_at(n, effect_size, alpha, two_sided) - power, 0.0, one_tail
    )
    return float(root)


def _n_control(
    effect_size: float, alpha: float, power: float, ratio: float, two_sided: bool
) -> float:
    """Control-arm orders (continuous) for the target power; the treatment arm has ratio times."""
    return _n_eff_required(effect_size, alpha, power, two_sided) * (1.0 + 1.0 / ratio)


def achieved_power(
    n_per_arm: float,
    effect_size: float,
    *,
    alpha: float = 0.05,
    ratio: float = 1.0,
    two_sided: bool = True,
) -> float:
    """Power of the two-sample z-test with ``n_per_arm`` control orders and ``ratio`` times as
    many treatment orders, for a standardised effect (``cohens_h`` for a rate, ``mde / sd`` for
    a mean).

    The inverse of ``sample_size_proportions`` / ``sample_size_means``; the same value as
    statsmodels' ``NormalIndPower().power``. A one-sided test is taken in the direction of the
    effect, so the sign of ``effect_size`` does not matter; ``effect_size = 0`` gives alpha.
    """
    _check_positive("n_per_arm", n_per_arm)
    if not math.isfinite(effect_size):
        raise ValueError(f"effect_size: must be finite, got {effect_size}")
    _check_open_unit("alpha", alpha)
    _check_positive("ratio", ratio)
    n_eff = n_per_arm * ratio / (1.0 + ratio)
    return _power_at(n_eff, effect_size, alpha, two_sided)


def sample_size_proportions(
    p_control: float,
    mde_abs: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    two_sided: bool = True,
) -> int:
    """Control-arm orders to detect an absolute change ``mde_abs`` in a rate (the treatment arm
    needs ``ratio`` times as many): the smallest whole n whose ``achieved_power`` reaches
    ``power``.

    Uses Cohen's h and the normal approximation (Cohen 1988, ch. 6), i.e. statsmodels'
    ``NormalIndPower`` with ``proportion_effectsize``. It is within a few per cent of the
    unpooled Wald formula for rates between 0.05 and 0.95; for rarer events (a few orders per
    thousand) an exact or Poisson calculation is the safer check. ``mde_abs`` may be negative
    (a fix that lowers a late or cancellation rate).
    """
    effect = _rate_effect(p_control, mde_abs)
    _check_test(alpha, power, ratio)
    return math.ceil(_n_control(effect, alpha, power, ratio, two_sided))


def sample_size_means(
    sd: float,
    mde_abs: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    two_sided: bool = True,
) -> int:
    """Control-arm orders to detect an absolute change ``mde_abs`` in a per-order mean (minutes,
    stars) whose per-order standard deviation is ``sd`` in both arms; treatment needs ``ratio``
    times as many.

    The z-test answer, as statsmodels' ``NormalIndPower`` with ``effect_size = mde / sd``. The
    t-test (``TTestIndPower``) asks for about ``z_{1-alpha/2}^2 / 4`` more orders per arm with
    equal arms (Guenther 1981): under 1% of n once n exceeds about 100 at alpha = 0.05, and
    negligible at the thousands of orders CX experiments need. Skewed metrics (delivery minutes)
    reach the normal limit more slowly than the formula assumes; winsorise before planning.
    """
    _check_positive("sd", sd)
    _check_nonzero("mde_abs", mde_abs)
    _check_test(alpha, power, ratio)
    return math.ceil(_n_control(mde_abs / sd, alpha, power, ratio, two_sided))


# --- clustering -------------------------------------------------------------------------------


def design_effect(cluster_size_mean: float, icc: float, *, cluster_size_cv: float = 0.0) -> float:
    """Variance inflation of a mean over orders randomised in clusters rather than one by one:
    ``1 + ((1 + cv^2) m - 1) icc``.

    With equal clusters (cv = 0) this is ``1 + (m - 1) icc`` (Kish 1965; Donner & Klar 2000);
    the ``cv^2`` term is Eldridge, Ashby & Kerry (2006) for cluster sizes with mean
    ``m`` and coefficient of variation ``cv`` (standard deviation with divisor k over the mean).
    It is exact for an order-level mean, which weights clusters by their size, and
    conservative for analyses that weight clusters optimally.
    """
    if not (cluster_size_mean >= 1.0 and math.isfinite(cluster_size_mean)):
        raise ValueError(f"cluster_size_mean: must be >= 1 and finite, got {cluster_size_mean}")
    if not 0.0 <= icc <= 1.0:
        raise ValueError(f"icc: must be in [0, 1], got {icc}")
    if not (cluster_size_cv >= 0.0 and math.isfinite(cluster_size_cv)):
        raise ValueError(f"cluster_size_cv: must be >= 0 and finite, got {cluster_size_cv}")
    return 1.0 + ((1.0 + cluster_size_cv**2) * cluster_size_mean - 1.0) * icc


def icc_anova(values: npt.ArrayLike, clusters: npt.ArrayLike) -> float:
    """One-way ANOVA estimate of the intra-cluster correlation of per-order outcomes, clipped at 0:

        icc = (MSB - MSW) / (MSB + (n0 - 1) MSW),   n0 = (N - sum(n_i^2) / N) / (k - 1),

    over k clusters of n_i orders (N in all); ``n0`` is the size of equal clusters that would
    give the same expected between-cluster mean square (Donner 1986; Donner & Klar 2000).
    It serves 0/1 outcomes as well as continuous ones (Ridout, Demetrio & Firth 1999). Labels
    in ``clusters`` may be of any sortable type (store ids, "region|window" strings).
    """
    y = _as_vector("values", values)
    labels = np.asarray(clusters)
    if labels.shape != y.shape:
        raise ValueError(
            f"clusters: must have the shape of values {y.shape}, got shape {labels.shape}"
        )
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.ravel()
    sizes = np.bincount(codes).astype(np.float64)
    k, n = sizes.size, float(y.size)
    if k < 2:
        raise ValueError(f"clusters: need at least 2 clusters, got {k}")
    if n <= k:
        raise ValueError("clusters: every cluster has one order; need a cluster with two or more")
    cluster_means = np.bincount(codes, weights=y) / sizes
    within = float(np.sum((y - cluster_means[codes]) ** 2))
    between = float(np.sum(sizes * (cluster_means - y.mean()) ** 2))
    msb = between / (k - 1)
    msw = within / (n - k)
    n0 = (n - float(np.sum(sizes**2)) / n) / (k - 1)
    denominator = msb + (n0 - 1.0) * msw
    if denominator <= 0.0:
        raise ValueError("values: constant across all orders, the ICC is undefined")
    return max(0.0, (msb - msw) / denominator)


# --- CUPED ------------------------------------------------------------------------------------


def cuped_variance_factor(correlation: float) -> float:
    """Variance of the CUPED-adjusted metric relative to the raw one, ``1 - rho^2``, for a
    pre-period covariate with correlation ``rho`` with the outcome (Deng, Xu, Kohavi & Walker
    2013); the sample size shrinks by the same factor."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation: must be in [-1, 1], got {correlation}")
    return 1.0 - correlation**2


def cuped_theta(y: npt.ArrayLike, x: npt.ArrayLike) -> float:
    """The variance-minimising CUPED coefficient ``cov(y, x) / var(x)`` (Deng et al. 2013).

    Estimate it on both arms pooled (or on pre-period data) so that it does not depend on the
    assignment; the adjusted difference in means then stays unbiased.
    """
    yv, xv = _as_vector("y", y), _as_vector("x", x)
    if xv.shape != yv.shape:
        raise ValueError(f"x: must have the shape of y {yv.shape}, got {xv.shape}")
    if yv.size < 2:
        raise ValueError(f"y: need at least 2 observations, got {yv.size}")
    x_centred = xv - xv.mean()
    sxx = float(x_centred @ x_centred)
    if sxx == 0.0:
        raise ValueError("x: constant covariate, theta is undefined")
    return float((yv - yv.mean()) @ x_centred) / sxx


def cuped_adjust(y: npt.ArrayLike, x: npt.ArrayLike, theta: float) -> npt.NDArray[np.float64]:
    """The CUPED-adjusted outcome ``y - theta (x - mean(x))`` (Deng et al. 2013).

    Centring on the mean of ``x`` over the rows given keeps the adjusted mean equal to the raw
    one; pass both arms together so every row is centred on the same mean.
    """
    yv, xv = _as_vector("y", y), _as_vector("x", x)
    if xv.shape != yv.shape:
        raise ValueError(f"x: must have the shape of y {yv.shape}, got {xv.shape}")
    if not math.isfinite(theta):
        raise ValueError(f"theta: must be finite, got {theta}")
    return yv - theta * (xv - xv.mean())


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerPlan:
    """Orders, clusters and days an experiment needs to detect ``mde`` on ``metric``.

    ``orders_control`` / ``orders_treatment`` are the analysed orders each arm needs after the
    design effect and the CUPED factor; ``orders_per_arm_iid`` is the control arm of the same
    test randomised order by order without CUPED. ``cluster_size`` is analysed orders per cluster
    (per store over the whole experiment, or per region x window after burn-in) and
    ``clusters_control`` / ``clusters_treatment`` the clusters each arm needs at that size;
    all three are None for order randomisation. ``achieved_power`` is the power with every
    eligible order of ``duration_days`` days (at least the target; more when ``min_days``
    binds).
    """

    metric: str
    kind: MetricKind
    baseline: float
    mde: float
    effect_size: float
    alpha: float
    power: float
    two_sided: bool
    unit: Unit
    treated_share: float
    orders_per_arm_iid: int
    design_effect: float
    cuped_factor: float
    orders_control: int
    orders_treatment: int
    cluster_size: float | None
    clusters_control: int | None
    clusters_treatment: int | None
    duration_days: int
    achieved_power: float

    @property
    def orders_total(self) -> int:
        """Analysed orders over both arms."""
        return self.orders_control + self.orders_treatment


def _check_unit_inputs(
    unit: str,
    icc: float,
    cluster_size_mean: float | None,
    clusters_available: int | None,
    cluster_size_cv: float,
    burn_in_share: float,
) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit: must be one of {', '.join(UNITS)}, got {unit!r}")
    if unit == "order" and icc != 0.0:
        raise ValueError(f"icc: order randomisation has no clusters, leave it at 0; got {icc}")
    if unit == "order" and cluster_size_cv != 0.0:
        raise ValueError(
            f"cluster_size_cv: order randomisation has no clusters, leave it at 0; "
            f"got {cluster_size_cv}"
        )
    if unit != "region_x_window":
        if cluster_size_mean is not None:
            raise ValueError("cluster_size_mean: only used with unit='region_x_window'")
        if burn_in_share != 0.0:
            raise ValueError("burn_in_share: only used with unit='region_x_window'")
    else:
        if cluster_size_mean is None:
            raise ValueError("cluster_size_mean: required with unit='region_x_window'")
        _check_positive("cluster_size_mean", cluster_size_mean)
        if not 0.0 <= burn_in_share < 1.0:
            raise ValueError(f"burn_in_share: must be in [0, 1), got {burn_in_share}")
    if unit != "store" and clusters_available is not None:
        raise ValueError("clusters_available: only used with unit='store'")
    if unit == "store":
        if clusters_available is None:
            raise ValueError("clusters_available: required with unit='store'")
        if isinstance(clusters_available, bool) or not isinstance(clusters_available, int):
            raise ValueError(f"clusters_available: must be an int, got {clusters_available!r}")
        if clusters_available < 2:
            raise ValueError(f"clusters_available: must be >= 2, got {clusters_available}")
    if not 0.0 <= icc <= 1.0:
        raise ValueError(f"icc: must be in [0, 1], got {icc}")
    if not (cluster_size_cv >= 0.0 and math.isfinite(cluster_size_cv)):
        raise ValueError(f"cluster_size_cv: must be >= 0 and finite, got {cluster_size_cv}")


def _store_orders_per_store(
    needed: float, stores_control: float, icc: float, cluster_size_cv: float, clusters: int
) -> float:
    """Smallest orders per store m with ``stores_control * m >= needed * design_effect(m)``.

    Solving ``S m >= N (1 + (k m - 1) icc)`` for m, k = 1 + cv^2 (Hemming, Girling, Sitch,
    Marsh & Lilford 2011, for a fixed number of clusters); impossible when ``S <= N k icc``.
    """
    k = 1.0 + cluster_size_cv**2
    floor = needed * k * icc
    if stores_control <= floor:
        raise ValueError(
            f"clusters_available: {clusters} stores cannot reach the target power at any "
            f"duration; between-store variance alone needs more than {floor:.1f} control "
            f"stores, the design has {stores_control:.1f} (more stores, a larger mde or a "
            "CUPED covariate)"
        )
    return max(1.0, needed * (1.0 - icc) / (stores_control - floor))


def plan_power(
    metric: str,
    *,
    baseline: float,
    mde: float,
    orders_per_day: float,
    sd: float | None = None,
    unit: Unit = "order",
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
    treated_share: float = 0.5,
    icc: float = 0.0,
    cluster_size_mean: float | None = None,
    cluster_size_cv: float = 0.0,
    clusters_available: int | None = None,
    cuped_correlation: float = 0.0,
    burn_in_share: float = 0.0,
    min_days: int = 7,
) -> PowerPlan:
    """Orders, clusters and days needed to detect an absolute change ``mde`` in ``metric``.

    A rate metric when ``sd`` is None (``baseline`` is the control rate, the effect Cohen's
    h); a mean metric otherwise (``sd`` the per-order standard deviation, the effect
    ``mde / sd``). ``orders_per_day`` counts eligible analysed orders per day over the whole
    experiment scope, of which ``treated_share`` go to treatment (treatment/control ratio
    ``s / (1 - s)``). Control orders needed are ``n_iid * (1 - rho^2) * DE``; the duration is the
    fewest whole days, at least ``min_days`` (7 covers one weekly cycle; the duration is not
    rounded to whole weeks), whose eligible orders cover both arms.

    Units:

    * ``"order"``: orders randomised one by one; DE = 1.
    * ``"store"``: every one of ``clusters_available`` eligible stores is randomised, each
      contributing ``orders_per_day / clusters_available`` orders a day. A store's cluster
      grows with the duration, and so does DE: the duration solves ``S_c m >= N DE(m)``
      (Hemming et al. 2011). Between-store variance does not average away with time, so too
      few stores make any duration insufficient (a ValueError). ``icc`` is the correlation
      of two orders of one store over the experiment, assumed not to change with its length.
      ``clusters_control`` is the fewest control stores that would suffice at that duration
      (rounded up, so a design that needs nearly every store can show one more than the
      expected ``clusters_available * (1 - treated_share)``).
    * ``"region_x_window"``: a switchback (Bojinov, Simchi-Levi & Zhao 2023). Each region x
      time window is a cluster of ``cluster_size_mean`` orders (``cluster_size_cv`` their
      spread, large when windows span busy and quiet hours) and ``icc`` is the correlation of
      two orders of one window. Carryover: orders in the first ``burn_in_share`` of every
      window still feel the previous assignment and are dropped from the analysis, which
      shrinks the analysed cluster and inflates the duration by ``1 / (1 - burn_in_share)``.
      Pick windows longer than the carryover (courier repositioning, queued orders) so the
      burn-in is a small share. Windows are treated as independent clusters; correlation
      between consecutive windows of a region is not modelled, so analyse with standard
      errors clustered by region-day or by randomisation inference.

    Caveats: the CUPED factor is applied to the whole variance, i.e. the covariate is assumed
    to explain the between-cluster part as well as the within-cluster part; one metric and one
    comparison only (correct alpha for several metrics or arms before calling); the normal
    approximation assumes at least a few dozen orders (or clusters) per arm.
    """
    kind: MetricKind
    if sd is None:
        kind = "rate"
        if not 0.0 < baseline < 1.0:
            raise ValueError(
                f"baseline: a rate must be in (0, 1) (pass sd for a mean metric), got {baseline}"
            )
        _check_nonzero("mde", mde)
        if not 0.0 < baseline + mde < 1.0:
            raise ValueError(f"mde: baseline + mde must be in (0, 1), got {baseline} + {mde}")
        effect = cohens_h(baseline, baseline + mde)
    else:
        kind = "mean"
        _check_positive("sd", sd)
        if not math.isfinite(baseline):
            raise ValueError(f"baseline: must be finite, got {baseline}")
        _check_nonzero("mde", mde)
        effect = mde / sd
    _check_open_unit("treated_share", treated_share)
    ratio = treated_share / (1.0 - treated_share)
    _check_test(alpha, power, ratio)
    _check_positive("orders_per_day", orders_per_day)
    if isinstance(min_days, bool) or not isinstance(min_days, int) or min_days < 1:
        raise ValueError(f"min_days: must be an int >= 1, got {min_days!r}")
    _check_unit_inputs(
        unit, icc, cluster_size_mean, clusters_available, cluster_size_cv, burn_in_share
    )
    if not -1.0 < cuped_correlation < 1.0:
        raise ValueError(f"cuped_correlation: must be in (-1, 1), got {cuped_correlation}")
    cuped = cuped_variance_factor(cuped_correlation)

    n_iid = _n_control(effect, alpha, power, ratio, two_sided)
    needed = n_iid * cuped  # control orders if they were independent
    control_per_day = orders_per_day * (1.0 - treated_share) * (1.0 - burn_in_share)

    cluster_size: float | None = None
    de = 1.0
    if unit == "region_x_window":
        assert cluster_size_mean is not None  # checked above
        cluster_size = cluster_size_mean * (1.0 - burn_in_share)
        if cluster_size < 1.0:
            raise ValueError(
                f"cluster_size_mean: windows keep {cluster_size:.2f} orders after burn-in; "
                "need at least 1"
            )
        de = design_effect(cluster_size, icc, cluster_size_cv=cluster_size_cv)
    if unit == "store":
        assert clusters_available is not None  # checked above
        per_store_day = orders_per_day / clusters_available
        per_store = _store_orders_per_store(
            needed,
            clusters_available * (1.0 - treated_share),
            icc,
            cluster_size_cv,
            clusters_available,
        )
        duration = max(min_days, math.ceil(per_store / per_store_day))
        if per_store_day * duration < per_store:  # the division rounded down
            duration += 1
        cluster_size = per_store_day * duration
        de = design_effect(cluster_size, icc, cluster_size_cv=cluster_size_cv)
    else:
        duration = max(min_days, math.ceil(needed * de / control_per_day))

    orders_control = math.ceil(needed * de)
    orders_treatment = math.ceil(needed * de * ratio)
    clusters_control = clusters_treatment = None
    if cluster_size is not None:
        clusters_control = math.ceil(orders_control / cluster_size)
        clusters_treatment = math.ceil(orders_treatment / cluster_size)
    collected = control_per_day * duration
    return PowerPlan(
        metric=metric,
        kind=kind,
        baseline=baseline,
        mde=mde,
        effect_size=effect,
        alpha=alpha,
        power=power,
        two_sided=two_sided,
        unit=unit,
        treated_share=treated_share,
        orders_per_arm_iid=math.ceil(n_iid),
        design_effect=de,
        cuped_factor=cuped,
        orders_control=orders_control,
        orders_treatment=orders_treatment,
        cluster_size=cluster_size,
        clusters_control=clusters_control,
        clusters_treatment=clusters_treatment,
        duration_days=duration,
        achieved_power=achieved_power(
            collected / (de * cuped), effect, alpha=alpha, ratio=ratio, two_sided=two_sided
        ),
    )
