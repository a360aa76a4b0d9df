"""Difference-in-differences on a panel of rates, with event-study leads and a placebo.

An incident slice (say region=SF + category=grocery) saw its late-delivery rate rise after
some time ``t0``. The affected stores are the *treated* units; comparable unaffected stores are
the *controls*. The panel holds one row per (unit, period) with a numerator (bad events, e.g.
late deliveries) and a denominator (e.g. delivered orders).

The estimate is the two-way fixed-effects difference-in-differences

    rate_it = a_i + g_t + effect * treated_i * post_t + e_it,      rate = num / den,

fitted by weighted least squares with weights ``den``, so that every order counts once and a
store with 3 orders does not weigh as much as one with 300 (never average per-row rates
unweighted). ``effect`` is the change of the treated units' rate after ``t0`` beyond the
change the controls saw over the same periods, in rate points (0.12 = +12 points).

Standard errors are clustered by unit (CRV1): rates of the same store are serially
correlated, and ignoring that makes DiD standard errors far too small (Bertrand, Duflo and
Mullainathan 2004, "How much should we trust differences-in-differences estimates?").
Inference uses Student's t with (number of units - 1) degrees of freedom, following Cameron
and Miller (2015), "A practitioner's guide to cluster-robust inference".

Two checks come with the estimate:

* pre-trend: an event study adds treated x (pre-period bin) leads, with the pre periods cut
  into at most 8 equal bins by time and the last pre bin as the reference, and Wald-tests that
  all leads are zero (clustered covariance). A small p-value means the treated-minus-control
  gap was already moving before ``t0``, so parallel trends is doubtful (Autor 2003;
  Roth 2022 on pre-trend testing).
* placebo: the same DiD on the pre-``t0`` rows only, with a fake ``t0`` at a quantile of the
  pre periods. A significant placebo effect means the design finds "effects" where there are
  none.

Implementation: both sets of fixed effects are partialled out (Frisch-Waugh-Lovell): unit
effects by the weighted within-unit transformation, period effects by a weighted projection on
the within-unit period dummies computed from unit x period weight totals, so no dummy matrix
is built. statsmodels then fits the WLS of the residualised rate on the residualised
treatment columns with clustered covariance. The point estimate, residuals and cluster-robust
sandwich are exactly those of the full dummy regression; the small-sample factor counts the
period effects but not the unit effects, which are nested in the clusters (as Stata's
``xtreg, fe`` and ``reghdfe`` do). 300 units x 120 periods take a fraction of a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from statsmodels.regression.linear_model import WLS

__all__ = ["DidResult", "diff_in_diff"]

MAX_LEAD_BINS = 8
MIN_PLACEBO_PRE_PERIODS = 4
CONFIDENCE = 0.95


@dataclass(frozen=True)
class DidResult:
    """A difference-in-differences estimate on a panel of rates, with its checks.

    ``effect`` is in rate points: the change of the treated units' rate after ``t0`` beyond the
    change of the controls (0.12 = +12 points). ``se``, the interval and ``p_value`` use
    standard errors clustered by unit; ``se_unclustered`` is the classical (homoskedastic,
    independent rows) standard error of the same fit, only for comparison.
    """

    effect: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    n_units: int
    n_treated: int
    n_periods: int
    pretrend_p: float
    placebo_effect: float
    placebo_p: float
    se_unclustered: float = math.nan

    def ok(self, alpha: float = 0.05) -> bool:
        """Whether the estimate is credible evidence of an effect at level ``alpha``.

        True when the effect is significant, the pre-trend test does not reject (or could not
        be run) and the placebo effect is not significant (or could not be run).
        """
        significant = self.p_value < alpha
        no_pretrend = math.isnan(self.pretrend_p) or self.pretrend_p > alpha
        no_placebo = math.isnan(self.placebo_p) or self.placebo_p > alpha
        return bool(significant and no_pretrend and no_placebo)


@dataclass(frozen=True)
class _Fit:
    """Coefficients and clustered covariance of the regressors of one two-way FE fit."""

    coef: np.ndarray
    cov: np.ndarray
    se_naive: float
    df: int  # degrees of freedom for t and F: clusters - 1


def diff_in_diff(
    panel: pd.DataFrame,
    *,
    unit: str = "unit",
    period: str = "period",
    treated: str = "treated",
    post: str = "post",
    numerator: str = "num",
    denominator: str = "den",
    placebo_fraction: float = 0.5,
    bounded: bool = True,
) -> DidResult:
    """Estimate how much treatment changed the treated units' rate, with clustered errors.

    ``panel`` has one row per (unit, period). ``treated`` (bool or 0/1) must be constant within
    a unit and ``post`` (bool or 0/1, true from ``t0`` on) constant within a period; periods
    must be sortable (ints, dates, timestamps). Rows with a zero denominator carry no
    information and are dropped.

    The model is WLS of ``num / den`` on unit and period fixed effects and treated x post with
    weights ``den``, standard errors clustered by unit (Bertrand, Duflo and Mullainathan 2004).
    See the module docstring for the pre-trend test (``pretrend_p``, NaN with fewer than 2 pre
    periods) and the placebo (``placebo_effect``/``placebo_p``, NaN with fewer than 4 pre
    periods; the fake ``t0`` is at the ``placebo_fraction`` quantile of the pre periods).

    With ``bounded=False`` the outcome is a per-row mean rather than a share (``num`` the
    sum of a non-negative quantity such as prep minutes, ``den`` the orders), so ``num`` may
    exceed ``den``.

    Raises ``ValueError`` naming the column at fault for missing columns and bad values, and
    naming the missing group when there are no treated or control units or no pre or post
    rows.
    """
    if not 0.0 < placebo_fraction < 1.0:
        raise ValueError(f"placebo_fraction must be in (0, 1), got {placebo_fraction}")
    data = _validate(panel, unit, period, treated, post, numerator, denominator, bounded)

    unit_codes, _ = pd.factorize(data[unit], sort=False)
    period_codes, _ = pd.factorize(data[period], sort=True)
    is_treated = data[treated].to_numpy(dtype=bool)
    is_post = data[post].to_numpy(dtype=bool)
    weight = data[denominator].to_numpy(dtype=float)
    rate = data[numerator].to_numpy(dtype=float) / weight

    fit = _twfe(rate, weight, unit_codes, period_codes, [is_treated & is_post])
    effect = float(fit.coef[0])
    se = float(math.sqrt(fit.cov[0, 0]))
    p_value, ci_low, ci_high = _t_inference(effect, se, fit.df)

    pre_periods = np.unique(period_codes[~is_post])
    pretrend_p = _pretrend_p(
        rate, weight, unit_codes, period_codes, is_treated, is_post, pre_periods
    )
    placebo_effect, placebo_p = _placebo(
        rate, weight, unit_codes, period_codes, is_treated, is_post, pre_periods, placebo_fraction
    )

    return DidResult(
        effect=effect,
        se=se,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        n_units=int(unit_codes.max()) + 1,
        n_treated=int(np.unique(unit_codes[is_treated]).size),
        n_periods=int(period_codes.max()) + 1,
        pretrend_p=pretrend_p,
        placebo_effect=placebo_effect,
        placebo_p=placebo_p,
        se_unclustered=fit.se_naive,
    )


def _validate(
    panel: pd.DataFrame,
    unit: str,
    period: str,
    treated: str,
    post: str,
    numerator: str,
    denominator: str,
    bounded: bool = True,
) -> pd.DataFrame:
    """Check the panel and return its rows with a positive denominator, flags as bools."""
    columns = [unit, period, treated, post, numerator, denominator]
    for column in columns:
        if column not in panel.columns:
            raise ValueError(f"column '{column}' is missing from the panel")
    data = panel[list(dict.fromkeys(columns))].copy()

    for column in (unit, period):
        if data[column].isna().any():
            raise ValueError(f"column '{column}' has missing values")
    for column in (numerator, denominator):
        if not pd.api.types.is_numeric_dtype(data[column]) or pd.api.types.is_bool_dtype(
            data[column]
        ):
            raise ValueError(f"column '{column}' must be numeric, got {data[column].dtype}")
        values = data[column].to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise ValueError(f"column '{column}' has missing or infinite values")
        if (values < 0).any():
            raise ValueError(f"column '{column}' has negative values")
    num, den = data[numerator].to_numpy(dtype=float), data[denominator].to_numpy(dtype=float)
    if bounded and (num > den).any():
        raise ValueError(f"column '{numerator}' exceeds column '{denominator}' in some rows")

    for column in (treated, post):
        flag = data[column]
        if flag.isna().any() or not flag.isin([0, 1]).all():
            raise ValueError(f"column '{column}' must hold only booleans or 0/1")
        data[column] = flag.astype(bool)
    if data.duplicated([unit, period]).any():
        raise ValueError(f"columns '{unit}' and '{period}' have duplicate (unit, period) rows")
    if (data.groupby(unit, sort=False)[treated].nunique() > 1).any():
        raise ValueError(f"column '{treated}' is not constant within a unit ('{unit}')")
    if (data.groupby(period, sort=False)[post].nunique() > 1).any():
        raise ValueError(f"column '{post}' is not constant within a period ('{period}')")

    data = data[data[denominator] > 0]
    if not data[treated].any():
        raise ValueError(f"no treated units (column '{treated}' is never true)")
    if data[treated].all():
        raise ValueError(f"no control units (column '{treated}' is always true)")
    if data[post].all():
        raise ValueError(f"no pre rows (column '{post}' is always true)")
    if not data[post].any():
        raise ValueError(f"no post rows (column '{post}' is never true)")
    for is_treated, group in ((True, "treated"), (False, "control")):
        for is_post, when in ((False, "pre"), (True, "post")):
            cell = (data[treated] == is_treated) & (data[post] == is_post)
            if not cell.any():
                raise ValueError(
                    f"no {when} rows for {group} units (columns '{treated}' and '{post}')"
                )
    return data.reset_index(drop=True)


def _twfe(
    y: np.ndarray,
    weight: np.ndarray,
    unit_codes: np.ndarray,
    period_codes: np.ndarray,
    regressors: list[np.ndarray],
) -> _Fit:
    """WLS of y on unit FE + period FE + regressors; coefficients and clustered covariance.

    Only the coefficients of ``regressors`` (in order) are returned. Both sets of fixed
    effects are partialled out first (Frisch-Waugh-Lovell): unit effects by subtracting
    weighted unit means, then period effects by a weighted projection on the within-unit
    period dummies. The WLS of the residualised y on the residualised regressors has the same
    coefficients, residuals and cluster-robust sandwich as the full dummy regression; the
    small-sample factor is then rescaled to count the period effects but not the unit
    effects, which are nested in the clusters.
    """
    _, units = np.unique(unit_codes, return_inverse=True)
    _, periods = np.unique(period_codes, return_inverse=True)
    n, n_units, n_periods = y.size, int(units.max()) + 1, int(periods.max()) + 1
    k = len(regressors)

    targets = np.column_stack([*(r.astype(float) for r in regressors), y])

    # absorb the unit effects: subtract weighted unit means
    indicator = sp.csr_matrix((np.ones(n), (units, np.arange(n))), shape=(n_units, n))
    unit_weight = np.asarray(indicator @ weight)
    means = np.asarray(indicator @ (targets * weight[:, None])) / unit_weight[:, None]
    targets = targets - means[units]

    # project the within-unit period dummies out, without building them: with A = cells[u, p]
    # the weight of unit u in period p and W_u its total, their weighted Gram matrix is
    # diag(sum_u A) - A' diag(1/W) A, their cross product with a within-unit column z is the
    # per-period weighted sum of z, and dummies @ b is b[period] - (A b / W)[unit].
    # The first period is the reference (its dummy is collinear with the unit effects).
    cell_weight = np.bincount(
        units * n_periods + periods, weights=weight, minlength=n_units * n_periods
    )
    cells = cell_weight.reshape(n_units, n_periods)[:, 1:]
    gram = np.diag(cells.sum(axis=0)) - cells.T @ (cells / unit_weight[:, None])
    cross = np.column_stack(
        [np.bincount(periods, weights=weight * col, minlength=n_periods)[1:] for col in targets.T]
    )
    values, vectors = np.linalg.eigh(gram)
    # a pseudo-inverse: should some dummies be redundant (a panel split into disconnected
    # blocks), the projection, hence the residuals, stays exact
    rank = values > values.max(initial=0.0) * gram.shape[0] * np.finfo(float).eps
    n_period_effects = int(rank.sum())
    b = vectors[:, rank] @ ((vectors[:, rank].T @ cross) / values[rank, None])
    b_full = np.vstack([np.zeros((1, b.shape[1])), b])
    fitted = b_full[periods] - ((cells @ b) / unit_weight[:, None])[units]
    targets = targets - fitted
    x, y_resid = targets[:, :k], targets[:, k]

    model = WLS(y_resid, x, weights=weight, hasconst=False)
    clustered = model.fit(cov_type="cluster", cov_kwds={"groups": units}, use_t=True)
    naive = model.fit()
    # statsmodels saw k parameters; the full model also has the period and unit effects
    df_seen = n - k
    df_clustered = df_seen - n_period_effects
    df_naive = df_clustered - n_units
    cov = np.full((k, k), np.nan)
    if df_clustered > 0:
        cov = np.asarray(clustered.cov_params()) * (df_seen / df_clustered)
    se_naive = math.nan
    if df_naive > 0:
        se_naive = float(naive.bse[0]) * math.sqrt(df_seen / df_naive)
    return _Fit(coef=np.asarray(clustered.params), cov=cov, se_naive=se_naive, df=n_units - 1)


def _t_inference(effect: float, se: float, df: int) -> tuple[float, float, float]:
    """Two-sided p-value and 95% interval from Student's t with ``df`` degrees of freedom."""
    if not (se > 0 and df > 0):
        return math.nan, math.nan, math.nan
    p_value = float(2.0 * stats.t.sf(abs(effect) / se, df))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2.0, df)) * se
    return p_value, effect - half, effect + half


def _pretrend_p(
    y: np.ndarray,
    weight: np.ndarray,
    unit_codes: np.ndarray,
    period_codes: np.ndarray,
    is_treated: np.ndarray,
    is_post: np.ndarray,
    pre_periods: np.ndarray,
) -> float:
    """Wald test (clustered, F with clusters - 1 denominator df) that all leads are zero.

    Pre periods are cut into at most ``MAX_LEAD_BINS`` equal consecutive bins by time; each
    bin but the last gets a treated x bin lead. The model also keeps treated x post.
    """
    if pre_periods.size < 2:
        return math.nan
    bins = np.array_split(np.sort(pre_periods), min(MAX_LEAD_BINS, pre_periods.size))
    leads = [is_treated & np.isin(period_codes, members) for members in bins[:-1]]
    leads = [lead for lead in leads if lead.any()]
    if not leads:
        return math.nan
    fit = _twfe(y, weight, unit_codes, period_codes, [is_treated & is_post, *leads])
    beta, cov = fit.coef[1:], fit.cov[1:, 1:]
    q = beta.size
    try:
        stat = float(beta @ np.linalg.solve(cov, beta)) / q
    except np.linalg.LinAlgError:
        stat = float(beta @ np.linalg.pinv(cov) @ beta) / q
    if not math.isfinite(stat) or fit.df <= 0:
        return math.nan
    return float(stats.f.sf(stat, q, fit.df))


def _placebo(
    y: np.ndarray,
    weight: np.ndarray,
    unit_codes: np.ndarray,
    period_codes: np.ndarray,
    is_treated: np.ndarray,
    is_post: np.ndarray,
    pre_periods: np.ndarray,
    fraction: float,
) -> tuple[float, float]:
    """DiD on pre rows only with a fake t0 at the ``fraction`` quantile of the pre periods."""
    if pre_periods.size < MIN_PLACEBO_PRE_PERIODS:
        return math.nan, math.nan
    ordered = np.sort(pre_periods)
    cut = min(max(round(fraction * ordered.size), 1), ordered.size - 1)
    pre = ~is_post
    fake_post = period_codes[pre] >= ordered[cut]
    treated = is_treated[pre]
    for group in (treated, ~treated):
        if not (group & fake_post).any() or not (group & ~fake_post).any():
            return math.nan, math.nan
    fit = _twfe(y[pre], weight[pre], unit_codes[pre], period_codes[pre], [treated & fake_post])
    effect = float(fit.coef[0])
    p_value, _, _ = _t_inference(effect, float(math.sqrt(fit.cov[0, 0])), fit.df)
    return effect, p_value
