"""Shift attribution: synthetic orders whose late rate moves for a known reason."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cxagent.rca.shift import (
    FeatureShift,
    ShiftAttribution,
    _attribute,
    _probability_scale,
    attribute_shift,
)

FEATURES = ["prep", "distance", "busy", "batched", "promised"]


def make_orders(
    n: int,
    *,
    seed: int,
    prep_shift: float = 0.0,
    distance_shift: float = 0.0,
    batched_before: float = 0.3,
    batched_after: float = 0.3,
    batched_effect: float = 0.0,
) -> pd.DataFrame:
    """Half the orders before, half after. Late depends on prep (strongly), busy share and
    optionally batching; distance and promised minutes never affect it."""
    rng = np.random.default_rng(seed)
    after = np.arange(n) >= n // 2
    prep = rng.normal(12.0, 4.0, n) + prep_shift * after
    distance = rng.gamma(3.0, 1.0, n) + distance_shift * after
    busy = rng.uniform(0.0, 1.0, n)
    batched = rng.random(n) < np.where(after, batched_after, batched_before)
    promised = rng.normal(35.0, 5.0, n)
    logit = -2.0 + 0.3 * (prep - 12.0) + 2.0 * (busy - 0.5) + batched_effect * batched
    late = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            "after": after,
            "late": late,
            "prep": prep,
            "distance": distance,
            "busy": busy,
            "batched": batched,
            "promised": promised,
        }
    )


def by_name(result: ShiftAttribution) -> dict[str, FeatureShift]:
    return {f.feature: f for f in result.features}


@pytest.fixture(scope="module")
def single_cause() -> ShiftAttribution:
    frame = make_orders(16_000, seed=1, prep_shift=5.0, distance_shift=2.0)
    return attribute_shift(frame, outcome="late", features=FEATURES, seed=0)


def test_single_cause_ranks_prep_first_with_most_of_the_change(
    single_cause: ShiftAttribution,
) -> None:
    top = single_cause.features[0]
    assert top.feature == "prep"
    assert top.share > 0.6
    assert top.contribution > 0.1  # a +5 minute prep shift adds well over 10 points of lateness
    assert top.ci_low > 0.0
    assert top.after_mean - top.before_mean == pytest.approx(5.0, abs=0.3)
    contributions = [f.contribution for f in single_cause.features]
    assert contributions == sorted(contributions, reverse=True)


def test_shifted_feature_without_effect_gets_little(single_cause: ShiftAttribution) -> None:
    features = by_name(single_cause)
    distance = features["distance"]
    assert distance.after_mean - distance.before_mean == pytest.approx(2.0, abs=0.2)
    assert abs(distance.contribution) < 0.01
    # busy matters for lateness but did not shift: no credit either
    assert abs(features["busy"].contribution) < 0.01


def test_contributions_add_up_to_the_predicted_change(single_cause: ShiftAttribution) -> None:
    total = sum(f.contribution for f in single_cause.features)
    assert total == pytest.approx(single_cause.predicted_change, abs=1e-9)
    assert sum(f.share for f in single_cause.features) == pytest.approx(1.0, abs=1e-9)
    assert single_cause.predicted_change == pytest.approx(single_cause.observed_change, abs=0.02)


def test_summary_fields(single_cause: ShiftAttribution) -> None:
    assert single_cause.outcome == "late"
    assert (single_cause.n_before, single_cause.n_after) == (8_000, 8_000)
    assert single_cause.observed_after > single_cause.observed_before
    assert 0.7 < single_cause.model_auc < 1.0  # prep and busy explain lateness well
    for f in single_cause.features:
        assert f.ci_low <= f.contribution <= f.ci_high


def test_two_causes_both_get_credit() -> None:
    frame = make_orders(
        16_000, seed=2, prep_shift=3.0, batched_before=0.2, batched_after=0.6, batched_effect=1.2
    )
    result = attribute_shift(frame, outcome="late", features=FEATURES, seed=0)
    assert {f.feature for f in result.features[:2]} == {"prep", "batched"}
    for f in result.features[:2]:
        assert f.contribution > 0.02
        assert f.ci_low > 0.0
        assert f.ci_low <= f.contribution <= f.ci_high
    total = sum(f.contribution for f in result.features)
    assert total == pytest.approx(result.predicted_change, abs=1e-9)


def test_no_shift_gives_no_credit() -> None:
    frame = make_orders(16_000, seed=3)
    result = attribute_shift(frame, outcome="late", features=FEATURES, seed=0)
    for f in result.features:
        assert abs(f.contribution) < 0.01, f


def test_same_seed_same_result_and_seed_matters() -> None:
    frame = make_orders(4_000, seed=4, prep_shift=4.0)
    first = attribute_shift(frame, outcome="late", features=FEATURES, seed=7, n_bootstrap=50)
    second = attribute_shift(frame, outcome="late", features=FEATURES, seed=7, n_bootstrap=50)
    assert first == second
    other = attribute_shift(frame, outcome="late", features=FEATURES, seed=8, n_bootstrap=50)
    assert other != first


def test_subsampling_missing_values_and_bool_outcome() -> None:
    frame = make_orders(12_000, seed=5, prep_shift=5.0)
    frame.loc[frame.index[::7], "prep"] = np.nan
    frame["late"] = frame["late"].astype(bool)
    result = attribute_shift(
        frame, outcome="late", features=FEATURES, max_rows=6_000, max_explained=2_000
    )
    assert result.features[0].feature == "prep"
    assert result.features[0].share > 0.6
    # counts, rates and feature means describe the whole frame, not the sample
    assert (result.n_before, result.n_after) == (6_000, 6_000)
    assert result.observed_before == pytest.approx(frame.loc[~frame["after"], "late"].mean())
    prep = by_name(result)["prep"]
    assert prep.before_mean == pytest.approx(frame.loc[~frame["after"], "prep"].mean())
    total = sum(f.contribution for f in result.features)
    assert total == pytest.approx(result.predicted_change, abs=1e-9)


def test_no_bootstrap_gives_nan_intervals() -> None:
    frame = make_orders(2_000, seed=6, prep_shift=5.0)
    result = attribute_shift(frame, outcome="late", features=FEATURES, n_bootstrap=0)
    assert all(math.isnan(f.ci_low) and math.isnan(f.ci_high) for f in result.features)
    assert result.features[0].feature == "prep"


def test_probability_scale_is_the_ratio_or_falls_back() -> None:
    assert _probability_scale(0.5, 0.1, 0.2) == (pytest.approx(0.2), True)
    # mean log-odds did not move: the ratio is undefined
    assert _probability_scale(0.0, 0.01, 0.15) == (0.15, False)
    # not a sigmoid slope (opposite sign, or steeper than 0.25): not a shift to share out
    assert _probability_scale(0.1, -0.01, 0.15) == (0.15, False)
    assert _probability_scale(0.01, 0.01, 0.15) == (0.15, False)


def test_attribute_marks_non_additive_contributions_with_nan_share() -> None:
    # columns: shap_a, shap_b, p, p(1-p); a and b cancel in log-odds, p moved anyway
    before = np.array([0.0, 0.0, 0.20, 0.16])
    after = np.array([0.4, -0.4, 0.21, 0.16])
    contributions, shares, change = _attribute(before, after)
    assert change == pytest.approx(0.01)
    np.testing.assert_allclose(contributions, [0.064, -0.064])
    assert np.isnan(shares).all()
    # the additive case: shares are contribution / change
    after = np.array([0.3, 0.1, 0.26, 0.18])
    contributions, shares, change = _attribute(before, after)
    assert contributions.sum() == pytest.approx(change, abs=1e-12)
    np.testing.assert_allclose(shares, [0.75, 0.25])


@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (lambda f: f.drop(columns="distance"), {}, "'distance'"),
        (lambda f: f.drop(columns="late"), {}, "'late'"),
        (lambda f: f.drop(columns="after"), {}, "'after'"),
        (lambda f: f.assign(late=f["late"] * 2), {}, "'late'"),
        (lambda f: f.assign(late=f["late"].astype(float).where(f.index > 0)), {}, "'late'"),
        (lambda f: f.assign(late=1), {}, "constant"),
        (lambda f: f.assign(after=f["after"].astype(int)), {}, "'after'"),
        (lambda f: f.assign(distance="far"), {}, "'distance'"),
        (lambda f: f.iloc[: f.shape[0] // 2 + 30], {}, "after period"),
        (lambda f: f.iloc[f.shape[0] // 2 - 30 :], {}, "before period"),
        (lambda f: f, {"features": [*FEATURES, "after"]}, "'after'"),
        (lambda f: f, {"n_bootstrap": -1}, "n_bootstrap"),
    ],
)
def test_validation_errors_name_the_column_or_period(
    mutate: object, kwargs: dict[str, object], message: str
) -> None:
    frame = make_orders(400, seed=9)
    assert callable(mutate)
    arguments: dict[str, object] = {"outcome": "late", "features": FEATURES, **kwargs}
    with pytest.raises(ValueError, match=message):
        attribute_shift(mutate(frame), **arguments)  # type: ignore[arg-type]
