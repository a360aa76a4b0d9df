"""Difference-in-differences on seeded synthetic binomial panels of store late rates.

Every panel has per-store base rates, common period shocks (weather, demand) and binomial
noise on 50-200 orders per store-period; the first ``n_treated`` stores are treated from
period ``t0`` on.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from cxagent.rca.did import DidResult, diff_in_diff


def make_panel(
    *,
    n_units: int = 60,
    n_periods: int = 40,
    n_treated: int = 20,
    t0: int = 25,
    effect: float = 0.08,
    pre_slope: float = 0.0,
    unit_ar_sd: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A binomial panel; ``pre_slope`` tilts the treated rate linearly before t0 (0 at t0),
    ``unit_ar_sd`` adds store-level AR(1) noise (rho 0.8) to the true rate."""
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(n_units), n_periods)
    period = np.tile(np.arange(n_periods), n_units)
    treated = unit < n_treated
    post = period >= t0
    base = rng.uniform(0.08, 0.2, n_units)
    shock = rng.normal(0.0, 0.02, n_periods)
    noise = np.zeros((n_units, n_periods))
    for t in range(n_periods):
        previous = noise[:, t - 1] if t else 0.0
        noise[:, t] = 0.8 * previous + rng.normal(0.0, unit_ar_sd, n_units)
    rate = base[unit] + shock[period] + noise.ravel()
    rate += np.where(treated & post, effect, 0.0)
    rate += np.where(treated & ~post, pre_slope * (period - t0), 0.0)
    den = rng.integers(50, 200, unit.size)
    num = rng.binomial(den, np.clip(rate, 0.001, 0.999))
    return pd.DataFrame(
        {"unit": unit, "period": period, "treated": treated, "post": post, "num": num, "den": den}
    )


def test_recovers_planted_effect_and_passes_checks() -> None:
    result = diff_in_diff(make_panel(effect=0.08, seed=1))
    assert isinstance(result, DidResult)
    assert abs(result.effect - 0.08) < 0.02
    assert result.ci_low < 0.08 < result.ci_high
    assert result.ci_low < result.effect < result.ci_high
    assert result.p_value < 0.01
    assert result.pretrend_p > 0.05
    assert not math.isnan(result.placebo_p)
    assert result.placebo_p > 0.05
    assert abs(result.placebo_effect) < 0.02
    assert (result.n_units, result.n_treated, result.n_periods) == (60, 20, 40)
    assert result.ok()


def test_no_effect_is_not_significant() -> None:
    result = diff_in_diff(make_panel(effect=0.0, seed=2))
    assert abs(result.effect) < 0.01
    assert result.p_value > 0.01
    assert not result.ok()


def test_treated_only_pre_trend_is_flagged() -> None:
    # the treated late rate climbs 0.4 points a period before t0, then jumps
    result = diff_in_diff(make_panel(effect=0.08, pre_slope=0.004, seed=3))
    assert result.p_value < 0.01
    assert result.pretrend_p < 0.05
    assert not result.ok()


def test_clustered_se_exceeds_naive_se_under_serial_correlation() -> None:
    panel = make_panel(
        n_units=40, n_periods=30, n_treated=15, t0=18, effect=0.05, unit_ar_sd=0.02, seed=4
    )
    result = diff_in_diff(panel)
    # the naive SE of the same regression, fitted with unit and period dummies directly
    rate = (panel["num"] / panel["den"]).to_numpy()
    did = (panel["treated"] & panel["post"]).to_numpy(dtype=float)
    units = pd.get_dummies(panel["unit"], dtype=float).to_numpy()
    periods = pd.get_dummies(panel["period"], drop_first=True, dtype=float).to_numpy()
    model = sm.WLS(
        rate,
        np.column_stack([did, units, periods]),
        weights=panel["den"].to_numpy(),
        hasconst=False,
    )
    naive = model.fit()
    assert result.se_unclustered == pytest.approx(float(naive.bse[0]), rel=1e-6)
    assert result.se > 1.5 * result.se_unclustered


def test_matches_full_dummy_regression_on_unbalanced_panel() -> None:
    panel = make_panel(n_units=30, n_periods=12, n_treated=10, t0=8, seed=5)
    rng = np.random.default_rng(5)
    panel = panel.drop(index=rng.choice(len(panel), 40, replace=False))
    panel.loc[panel.index[:5], ["num", "den"]] = 0  # zero-denominator rows are dropped
    result = diff_in_diff(panel)

    kept = panel[panel["den"] > 0]
    rate = (kept["num"] / kept["den"]).to_numpy()
    did = (kept["treated"] & kept["post"]).to_numpy(dtype=float)
    units = pd.get_dummies(kept["unit"], dtype=float).to_numpy()
    periods = pd.get_dummies(kept["period"], drop_first=True, dtype=float).to_numpy()
    design = np.column_stack([did, units, periods])
    groups = kept["unit"].to_numpy()
    fit = sm.WLS(rate, design, weights=kept["den"].to_numpy(), hasconst=False).fit(
        cov_type="cluster", cov_kwds={"groups": groups}, use_t=True
    )
    assert result.effect == pytest.approx(float(fit.params[0]), rel=1e-8)
    # same sandwich; the small-sample factor does not count the unit effects (nested in
    # the clusters), like reghdfe
    n, k = design.shape
    n_units = units.shape[1]
    expected_se = float(fit.bse[0]) * math.sqrt((n - k) / (n - k + n_units))
    assert result.se == pytest.approx(expected_se, rel=1e-8)
    # Student's t with clusters - 1 degrees of freedom
    t_stat = abs(result.effect) / result.se
    assert result.p_value == pytest.approx(2 * stats.t.sf(t_stat, 29), rel=1e-6)
    half = stats.t.ppf(0.975, 29) * result.se
    assert result.ci_high - result.effect == pytest.approx(half, rel=1e-6)
    assert result.n_units == 30


def test_weights_rates_by_denominator() -> None:
    # one treated store-period with a wild rate on a single order must barely move the effect
    panel = make_panel(n_units=20, n_periods=10, n_treated=5, t0=5, effect=0.05, seed=6)
    base = diff_in_diff(panel).effect
    row = panel.index[(panel["unit"] == 0) & (panel["period"] == 9)][0]
    panel.loc[row, ["num", "den"]] = [1, 1]
    assert abs(diff_in_diff(panel).effect - base) < 0.01


def test_few_pre_periods_give_nan_checks() -> None:
    panel = make_panel(n_units=20, n_periods=4, n_treated=5, t0=1, seed=7)
    result = diff_in_diff(panel)
    assert math.isnan(result.pretrend_p)
    assert math.isnan(result.placebo_effect)
    assert math.isnan(result.placebo_p)
    three_pre = diff_in_diff(make_panel(n_units=20, n_periods=6, n_treated=5, t0=3, seed=7))
    assert not math.isnan(three_pre.pretrend_p)
    assert math.isnan(three_pre.placebo_p)


def test_placebo_catches_a_pre_period_break() -> None:
    # the treated rate already stepped up halfway through the pre period
    panel = make_panel(n_periods=40, t0=30, effect=0.08, seed=8)
    early = panel["treated"] & (panel["period"] >= 15) & ~panel["post"]
    panel.loc[early, "num"] = np.minimum(
        panel.loc[early, "den"], panel.loc[early, "num"] + (0.1 * panel.loc[early, "den"]).round()
    ).astype(int)
    result = diff_in_diff(panel)
    assert result.placebo_effect > 0.05
    assert result.placebo_p < 0.01
    assert not result.ok()


@pytest.mark.parametrize("column", ["unit", "period", "treated", "post", "num", "den"])
def test_missing_column_is_named(column: str) -> None:
    panel = make_panel(n_units=10, n_periods=6, n_treated=3, t0=3).drop(columns=column)
    with pytest.raises(ValueError, match=f"'{column}'"):
        diff_in_diff(panel)


def test_custom_column_names() -> None:
    panel = make_panel(n_units=10, n_periods=6, n_treated=3, t0=3).rename(
        columns={"unit": "store", "num": "late", "den": "orders"}
    )
    result = diff_in_diff(panel, unit="store", numerator="late", denominator="orders")
    assert result.n_units == 10
    with pytest.raises(ValueError, match="'orders'"):
        diff_in_diff(
            panel.drop(columns="orders"), unit="store", numerator="late", denominator="orders"
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"treated": False}, "no treated units"),
        ({"treated": True}, "no control units"),
        ({"post": True}, "no pre rows"),
        ({"post": False}, "no post rows"),
    ],
)
def test_missing_group_is_named(change: dict[str, bool], message: str) -> None:
    panel = make_panel(n_units=10, n_periods=6, n_treated=3, t0=3).assign(**change)
    with pytest.raises(ValueError, match=message):
        diff_in_diff(panel)


def test_treated_units_without_post_rows_are_named() -> None:
    panel = make_panel(n_units=10, n_periods=6, n_treated=3, t0=3)
    panel = panel[~(panel["treated"] & panel["post"])]
    with pytest.raises(ValueError, match="no post rows for treated units"):
        diff_in_diff(panel)


def test_bad_counts_are_named() -> None:
    panel = make_panel(n_units=10, n_periods=6, n_treated=3, t0=3)
    negative = panel.assign(num=panel["num"].where(panel.index != 4, -1))
    with pytest.raises(ValueError, match="'num'.*negative"):
        diff_in_diff(negative)
    above = panel.assign(num=panel["num"].where(panel.index != 4, panel["den"] + 1))
    with pytest.raises(ValueError, match="'num' exceeds column 'den'"):
        diff_in_diff(above)
    with pytest.raises(ValueError, match="'den'.*negative"):
        diff_in_diff(panel.assign(den=-panel["den"], num=0))


def test_inconsistent_flags_are_named() -> None:
    panel = make_panel(n_units=10, n_periods=6, n_treated=3, t0=3)
    flipped = panel.copy()
    flipped.loc[0, "treated"] = False  # unit 0 is treated in its other rows
    with pytest.raises(ValueError, match="'treated' is not constant within a unit"):
        diff_in_diff(flipped)
    staggered = panel.copy()
    staggered.loc[0, "post"] = True  # period 0 is pre for every other unit
    with pytest.raises(ValueError, match="'post' is not constant within a period"):
        diff_in_diff(staggered)
    with pytest.raises(ValueError, match="placebo_fraction"):
        diff_in_diff(panel, placebo_fraction=1.0)
