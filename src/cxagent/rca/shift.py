"""Shift attribution: which features explain why an outcome rate moved between two periods.

Inside an incident slice (say SF grocery) the late-delivery rate rose from a *before* period to
an *after* period. ``attribute_shift`` fits **one** per-order model of the outcome on orders of
both periods, *without* the period as a feature, explains every order with exact TreeSHAP
(LightGBM's ``pred_contrib=True``, Lundberg et al. 2020, "From local explanations to global
understanding with explainable AI for trees") and credits each feature with

    mean SHAP value over after-orders  -  mean SHAP value over before-orders.

Because the model never sees the period, the only way its prediction can differ between the
periods is through the features' values, so a feature earns credit only if its distribution
moved *and* the model's outcome depends on it in the region it moved through. A feature that
shifted but does not matter (distance when lateness does not depend on it) gets ~0; a feature
that matters but did not shift gets ~0; the feature whose shift the model believes drives the
outcome gets the change. SHAP values of one order add up to its log-odds minus the model's base
value, so the per-feature mean shifts add up exactly to the shift of the mean log-odds; the
conversion to the probability scale below keeps that additivity (see
``_probability_scale``).

What the numbers are *not*: a causal effect. The model learns associations on the pooled
orders; a cause that is not among the features (or a proxy standing in for it) is credited to
whatever correlated feature the model used. ``model_auc`` tells how much the features explain
the outcome at all: near 0.5, the attributions describe a model that explains little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit
from scipy.stats import rankdata

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MIN_PERIOD_ROWS = 50
"""Fewest orders either period may have: below this neither the model nor the means mean much."""

HOLDOUT_FRACTION = 0.2
"""Share of each period's orders held out to measure the model's AUC."""

CI_LEVEL = 0.90
"""Coverage of the bootstrap interval of every contribution."""

MAX_SIGMOID_SLOPE = 0.25
"""The largest slope of the logistic function (at p = 0.5)."""

LGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 15,
    "max_depth": 4,  # TreeSHAP costs ~ trees x leaves x depth^2 per order: keep trees shallow
    "min_data_in_leaf": 50,  # min_child_samples: no leaf explains fewer than 50 orders
    "bagging_fraction": 1.0,  # no row subsampling ...
    "feature_fraction": 1.0,  # ... nor column subsampling: the fit is a function of the data
    "lambda_l2": 0.0,
    "num_threads": 2,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
"""Fixed, modest LightGBM settings of the outcome model (plus ``seed``); see ``N_TREES``.

Depth-4 trees capture each feature's (non-linear) effect and interactions of up to four
features, which is what an order-level lateness model needs. Unbounded leaf-wise trees
(31 leaves, depth up to ~16) made LightGBM's exact TreeSHAP several times slower per tree
(100k orders took about a minute on 2 cores) with no visible gain on synthetic checks. The
seed still drives the holdout split, the subsamples and the bootstrap.
"""

N_TREES = 100
"""Boosting rounds of the outcome model (with learning rate 0.1)."""


@dataclass(frozen=True)
class FeatureShift:
    """One feature's share of the change of the mean predicted outcome.

    ``contribution`` is on the probability scale, in rate points (0.05 = the feature's shift
    moved the predicted late rate up by 5 points). ``share`` is ``contribution`` divided by the
    total ``predicted_change``; it is negative for a feature that pushed against the change and
    NaN when the contributions are not exactly additive (see ``attribute_shift``).
    ``ci_low``/``ci_high`` bound a 90% bootstrap interval of the contribution: orders are
    resampled within each period and their (fixed) SHAP values re-averaged, so it covers the
    sampling noise of the orders but not the uncertainty of the fitted model. ``before_mean``
    and ``after_mean`` are the feature's own mean in each period (NaN ignored), so a reader
    can see what moved.
    """

    feature: str
    contribution: float
    share: float
    ci_low: float
    ci_high: float
    before_mean: float
    after_mean: float


@dataclass(frozen=True)
class ShiftAttribution:
    """The change of an outcome rate between two periods, attributed to features.

    ``observed_before``/``observed_after`` are the outcome rates of the orders in the frame
    and ``n_before``/``n_after`` their counts. ``predicted_change`` is the model's mean
    predicted probability over after-orders minus over before-orders (on the explained orders,
    at most ``max_explained``); it should be close to the observed change, otherwise the model does
    not reproduce the rates it is asked to explain. ``features`` are sorted by
    ``contribution``, largest (most harmful for an outcome like lateness) first; their
    contributions add up to ``predicted_change`` whenever their shares are finite.
    ``model_auc`` is the outcome model's AUC on held-out orders (20% of each period): 0.5
    means the features do not explain the outcome, and the attribution says little.
    """

    outcome: str
    observed_before: float
    observed_after: float
    predicted_change: float
    features: list[FeatureShift]
    model_auc: float
    n_before: int
    n_after: int

    @property
    def observed_change(self) -> float:
        """Observed outcome rate after minus before."""
        return self.observed_after - self.observed_before


def attribute_shift(
    frame: pd.DataFrame,
    *,
    outcome: str,
    features: list[str],
    after: str = "after",
    seed: int = 0,
    n_bootstrap: int = 200,
    max_rows: int = 200_000,
    max_explained: int = 20_000,
) -> ShiftAttribution:
    """Attribute the change of a 0/1 outcome's rate between two periods to ``features``.

    ``frame`` has one row per order: the ``outcome`` (0/1 or bool), the boolean period column
    ``after`` (True = after period) and the numeric (or bool) ``features``, NaN allowed.

    Steps:

    1. If the frame has more than ``max_rows`` rows, each period is subsampled without
       replacement in proportion to its size (at least ``MIN_PERIOD_ROWS`` rows each), with
       ``seed``. Observed rates, counts and feature means always use the whole frame.
    2. 20% of each period's orders are held out; a LightGBM classifier (``N_TREES`` trees,
       ``LGBM_PARAMS``, ``seed``) is fit on the rest, and its AUC measured on the held-out
       orders. The model is *not* refit: the same model, the one the AUC describes, is
       explained, on held-out and training orders alike.
    3. Exact TreeSHAP is costly (~0.1 ms per order), so at most ``max_explained`` analysed
       orders are explained: a random sample split as evenly as possible between the periods
       (an even split minimises the variance of a difference of means), with ``seed``.
       ``predicted_change`` and all contributions are computed on these orders.
    4. TreeSHAP values (log-odds) of each explained order; the per-feature mean shift between
       the periods is converted to the probability scale by one common factor (see
       ``_probability_scale``) so that the contributions add up to ``predicted_change``.
    5. ``n_bootstrap`` replicates resample the explained orders of each period with
       replacement and recompute the contributions from their fixed SHAP values; the 5th and
       95th percentiles give ``ci_low``/``ci_high`` (NaN when ``n_bootstrap`` is 0). They
       cover the sampling noise of the orders (including the ``max_explained`` sample) but
       not the uncertainty of the fitted model.

    Same inputs and seed give an identical result. Raises ``ValueError`` naming the column
    for a missing or non-numeric column or an outcome that is not 0/1, naming the period when
    it has fewer than ``MIN_PERIOD_ROWS`` orders, and when the outcome is constant.
    """
    _validate_arguments(frame, outcome=outcome, features=features, after=after)
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    for name, value in (("max_rows", max_rows), ("max_explained", max_explained)):
        if value < 2 * MIN_PERIOD_ROWS:
            raise ValueError(f"{name} must be >= {2 * MIN_PERIOD_ROWS}, got {value}")

    is_after = frame[after].to_numpy(dtype=bool)
    y_all = frame[outcome].to_numpy(dtype=np.float64)
    x_all = _feature_matrix(frame, features)
    for name, mask in (("before", ~is_after), ("after", is_after)):
        n = int(mask.sum())
        if n < MIN_PERIOD_ROWS:
            raise ValueError(
                f"the {name} period ({after!r} is {name == 'after'}) has {n} rows; "
                f"at least {MIN_PERIOD_ROWS} are needed"
            )
    if np.unique(y_all).size < 2:
        raise ValueError(f"outcome {outcome!r} is constant ({int(y_all[0])} on every row)")

    rng = np.random.default_rng(seed)
    rows = _subsample(is_after, max_rows, rng)
    x, y, period = x_all[rows], y_all[rows], is_after[rows]

    holdout = _holdout_mask(period, rng)
    if np.unique(y[~holdout]).size < 2:
        raise ValueError(f"outcome {outcome!r} is constant on the training orders")
    booster = lgb.train(
        {**LGBM_PARAMS, "seed": seed},
        lgb.Dataset(x[~holdout], label=y[~holdout]),
        num_boost_round=N_TREES,
    )
    raw = np.asarray(booster.predict(x[holdout], raw_score=True), dtype=np.float64)
    auc = _auc(y[holdout], raw)

    explained = _explained_rows(period, max_explained, rng)
    x, period = x[explained], period[explained]
    contrib = np.asarray(booster.predict(x, pred_contrib=True), dtype=np.float64)
    shap = contrib[:, : len(features)]  # last column is the base value, common to all orders
    prob = expit(contrib.sum(axis=1))
    # per order: SHAP values, p and the sigmoid slope p(1 - p); one mean per period does it all
    table = np.column_stack([shap, prob, prob * (1.0 - prob)])
    before_rows, after_rows = table[~period], table[period]

    point, share, predicted_change = _attribute(before_rows.mean(axis=0), after_rows.mean(axis=0))
    ci_low, ci_high = _bootstrap(before_rows, after_rows, n_bootstrap, rng)

    before_frame, after_frame = frame.loc[~is_after, features], frame.loc[is_after, features]
    shifts = [
        FeatureShift(
            feature=name,
            contribution=float(point[j]),
            share=float(share[j]),
            ci_low=float(ci_low[j]),
            ci_high=float(ci_high[j]),
            before_mean=_mean(before_frame[name]),
            after_mean=_mean(after_frame[name]),
        )
        for j, name in enumerate(features)
    ]
    shifts.sort(key=lambda s: -s.contribution)  # stable: ties keep the order of ``features``
    return ShiftAttribution(
        outcome=outcome,
        observed_before=float(y_all[~is_after].mean()),
        observed_after=float(y_all[is_after].mean()),
        predicted_change=predicted_change,
        features=shifts,
        model_auc=auc,
        n_before=int((~is_after).sum()),
        n_after=int(is_after.sum()),
    )


def _probability_scale(
    logodds_shift: float, prob_change: float, mean_slope: float
) -> tuple[float, bool]:
    """The factor turning per-feature mean log-odds shifts into probability-scale points.

    Returns ``(factor, additive)``. Normally ``factor = Δ mean p / Δ mean log-odds``: a
    linearisation of the sigmoid along the change, the average slope between the two periods.
    Multiplying every feature's mean SHAP shift by the *same* factor keeps the proportions of
    the log-odds attribution and is exactly additive: the shifts sum to Δ mean log-odds (the
    base value cancels), so the converted contributions sum to ``factor * Δ mean log-odds =
    Δ mean p``, the predicted change.

    The ratio is meaningless when the mean log-odds barely moved (the division amplifies
    noise) or when it is not a plausible sigmoid slope, i.e. outside ``(0, 0.25]`` (the change
    of the mean probability then comes from orders spreading or mixing, not from a shift the
    features can share out). Then the factor is the mean local slope ``p(1 - p)`` (averaged
    over the orders of each period, then over the two periods), which still ranks and sizes
    the features' shifts on the probability scale, and ``additive`` is False: the contributions no longer sum to the
    predicted change and their shares are reported as NaN.
    """
    if abs(logodds_shift) > 1e-9:
        ratio = prob_change / logodds_shift
        if 0.0 < ratio <= MAX_SIGMOID_SLOPE:
            return ratio, True
    return mean_slope, False


def _attribute(before: FloatArray, after: FloatArray) -> tuple[FloatArray, FloatArray, float]:
    """Contributions, shares and predicted change from the period means of the SHAP table.

    ``before``/``after`` hold the mean of each column of the per-order table
    ``[shap_1 .. shap_k, p, p(1 - p)]`` in one period.
    """
    k = before.size - 2
    shift = after[:k] - before[:k]
    prob_change = float(after[k] - before[k])
    mean_slope = float(0.5 * (after[k + 1] + before[k + 1]))
    factor, additive = _probability_scale(float(shift.sum()), prob_change, mean_slope)
    contributions = factor * shift
    # additive implies a positive ratio, hence a non-zero change
    shares = contributions / prob_change if additive else np.full(k, np.nan)
    return contributions, shares, prob_change


def _bootstrap(
    before: FloatArray, after: FloatArray, n_bootstrap: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Percentile interval of the contributions, resampling orders within each period."""
    k = before.shape[1] - 2
    if n_bootstrap == 0:
        nan = np.full(k, np.nan)
        return nan, nan.copy()
    draws = np.empty((n_bootstrap, k))
    nb, na = before.shape[0], after.shape[0]
    for b in range(n_bootstrap):
        mean_before = before[rng.integers(0, nb, nb)].mean(axis=0)
        mean_after = after[rng.integers(0, na, na)].mean(axis=0)
        draws[b] = _attribute(mean_before, mean_after)[0]
    tail = (1.0 - CI_LEVEL) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail], axis=0)
    return low, high


def _validate_arguments(
    frame: pd.DataFrame, *, outcome: str, features: list[str], after: str
) -> None:
    if not features:
        raise ValueError("features is empty: name at least one feature column")
    duplicated = sorted({f for f in features if features.count(f) > 1})
    if duplicated:
        raise ValueError(f"features lists column {duplicated[0]!r} more than once")
    for column in (outcome, after, *features):
        if column not in frame.columns:
            raise ValueError(f"column {column!r} is missing from the frame")
    for leak in (outcome, after):
        if leak in features:
            raise ValueError(f"column {leak!r} cannot be a feature (it is the outcome or period)")

    period = frame[after]
    if not pd.api.types.is_bool_dtype(period) or period.isna().any():
        raise ValueError(
            f"period column {after!r} must be boolean (True = after) without missing values"
        )

    y = frame[outcome]
    numeric = pd.api.types.is_bool_dtype(y) or pd.api.types.is_numeric_dtype(y)
    if not numeric or y.isna().any() or not y.isin([0, 1]).all():
        raise ValueError(f"outcome column {outcome!r} must be 0/1 (or bool) without missing values")

    for name in features:
        values = frame[name]
        if not (pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values)):
            raise ValueError(f"feature column {name!r} must be numeric or bool, got {values.dtype}")


def _feature_matrix(frame: pd.DataFrame, features: list[str]) -> FloatArray:
    """Features as a float matrix; nullable NA becomes NaN, which LightGBM treats as missing."""
    columns = [
        frame[name].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        for name in features
    ]
    return np.column_stack(columns)


def _subsample(is_after: BoolArray, max_rows: int, rng: np.random.Generator) -> IntArray:
    """Row positions to analyse: all of them, or a proportional per-period sample of max_rows."""
    n = is_after.size
    if n <= max_rows:
        return np.arange(n, dtype=np.int64)
    picked = []
    for mask in (~is_after, is_after):
        positions = np.flatnonzero(mask)
        size = min(positions.size, max(MIN_PERIOD_ROWS, round(max_rows * positions.size / n)))
        picked.append(rng.choice(positions, size=size, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _explained_rows(period: BoolArray, max_explained: int, rng: np.random.Generator) -> IntArray:
    """Positions of the orders to explain: all, or max_explained split evenly by period."""
    if period.size <= max_explained:
        return np.arange(period.size, dtype=np.int64)
    sizes = np.array([(~period).sum(), period.sum()])
    quota = np.minimum(sizes, max_explained // 2)
    quota += np.minimum(sizes - quota, max_explained - quota.sum())  # the smaller period's rest
    picked = [
        rng.choice(np.flatnonzero(mask), size=int(size), replace=False)
        for mask, size in zip((~period, period), quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _holdout_mask(period: BoolArray, rng: np.random.Generator) -> BoolArray:
    """True for the HOLDOUT_FRACTION of each period's orders held out for the AUC."""
    holdout = np.zeros(period.size, dtype=bool)
    for mask in (~period, period):
        positions = np.flatnonzero(mask)
        size = round(HOLDOUT_FRACTION * positions.size)
        holdout[rng.choice(positions, size=size, replace=False)] = True
    return holdout


def _auc(y: FloatArray, score: FloatArray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with a single class."""
    positives = y == 1
    n_pos = int(positives.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _mean(values: pd.Series) -> float:
    """Mean ignoring missing values (NaN when there are none left)."""
    return float(values.astype("float64").mean())
