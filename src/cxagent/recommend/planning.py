"""From a recommended fix to its experiment plan, every input measured on the incident's data.

``plan_inputs`` reads, from the orders of the incident's slice after the regression began:

- the CX Score now and its per-order standard deviation, by linearisation (the delta method:
  each order's influence on the ratio metrics the score is made of, Deng, Knoblich & Lu 2018,
  "Applying the Delta Method in Metric Analytics");
- the intra-cluster correlation of that linearised score between orders of one store and of
  one region x 2-hour window (``experiments.design.icc_anova``);
- the correlation of a store's score before and after (the CUPED covariate of a store test);
- traffic: orders a day, stores and regions in scope.

The expected effect of the primary is the what-if estimate; the guardrails' margins are the
efficiency costs the what-if allowed for (the far end of its 90% interval, at least 2% of
the baseline): a fix that costs more than the recommendation said is rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from cxagent.experiments.design import icc_anova
from cxagent.experiments.plan import (
    ActionSpec,
    ExperimentPlan,
    MetricSpec,
    PlanContext,
    build_plan,
)
from cxagent.metrics.definitions import Component, cx_components
from cxagent.recommend.recommend import Recommendation
from cxagent.recommend.whatif import FIELDS, order_stats, scored_components

MIN_MARGIN_SHARE: Final = 0.02  # a guardrail tolerates at least 2% of its baseline
WINDOW_HOURS: Final = 2.0

# component -> (numerator field, denominator field, sign: +1 when the field counts good events)
_COMPONENT_FIELDS: Final = {
    "on_time": ("on_time", "delivered", 1.0),
    "item_accuracy": ("bad_items", "items", -1.0),
    "cancellation": ("canceled", "orders", 1.0),
    "refund": ("refunded", "orders", 1.0),
    "support_contact": ("support", "orders", 1.0),
    "rating": ("stars", "ratings", 1.0),
}


def linearised_cx(
    stats: np.ndarray, components: tuple[Component, ...] | None = None
) -> tuple[float, np.ndarray]:
    """The CX Score (of ``components``, else those in force) of the summed per-order ``stats``
    (``whatif.FIELDS`` rows) and each order's linearised score: the score plus the order's influence, so that the mean of the values is
    the score and their variance / n its delta-method variance. A component clipped at 0 or
    100 has no slope and no influence."""
    idx = {f: i for i, f in enumerate(FIELDS)}
    n = stats.shape[1]
    total = stats.sum(axis=1)
    influence = np.zeros(n)
    weights, scores = [], []
    for comp in cx_components() if components is None else components:
        num, den, sign = _COMPONENT_FIELDS[comp.name]
        d_mean = total[idx[den]] / n
        if d_mean <= 0:
            continue
        ratio = total[idx[num]] / total[idx[den]]
        value = 1.0 - ratio if sign < 0 else ratio
        score = comp.score(value)
        weights.append(comp.weight)
        scores.append(score)
        if 0.0 < score < 100.0:
            slope = 100.0 / (comp.best - comp.worst) * sign
            psi = (stats[idx[num]] - ratio * stats[idx[den]]) / d_mean
            influence += comp.weight * slope * psi
    w = float(np.sum(weights))
    cx = float(np.dot(weights, scores) / w) if w else float("nan")
    return cx, cx + influence / w if w else np.full(n, np.nan)


@dataclass(frozen=True)
class MeasuredContext:
    cx_now: float
    cx_sd: float
    orders_per_day: float
    stores: int
    regions: int
    icc_store: float
    icc_window: float
    cuped_correlation: float
    efficiency: dict[str, tuple[float, float]]  # metric -> (baseline mean, per-order sd)


def _icc(values: np.ndarray, clusters: np.ndarray) -> float:
    try:
        return float(np.clip(icc_anova(values, clusters), 0.0, 1.0))
    except ValueError:
        return 0.0


def _sampled_share(frame: pd.DataFrame) -> float:
    """The share of the slice's orders the frame holds: 1, or kept / of when the engine drew
    a sample (``rca.orders.order_frame``'s cap): rates need no correction, counts do."""
    sample = frame.attrs.get("sample")
    return 1.0 if not sample else sample[0] / max(sample[1], 1)


def measure(frame: pd.DataFrame) -> MeasuredContext:
    """What the plan needs to know about the slice, from its orders after the regression."""
    after = frame[frame["after"].to_numpy(bool)]
    before = frame[~frame["after"].to_numpy(bool)]
    components = scored_components(frame)
    cx_now, values = linearised_cx(order_stats(after), components)
    days = max(int(after["order_time"].dt.normalize().nunique()), 1)  # service days
    store = after["store_id"].to_numpy()
    window = (
        after["region"].astype(str)
        + "|"
        + after["order_time"].dt.floor(f"{int(WINDOW_HOURS)}h").astype(str)
    ).to_numpy()
    # a store's linearised score before against after, across stores: the CUPED covariate
    _, before_values = (
        linearised_cx(order_stats(before), components) if len(before) else (0.0, np.zeros(0))
    )
    pre = pd.Series(before_values).groupby(before["store_id"].to_numpy()).mean()
    post = pd.Series(values).groupby(store).mean()
    both = pd.concat([pre, post], axis=1, join="inner").dropna()
    rho = float(np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1]) if len(both) >= 5 else 0.0
    delivered = after[after["delivered"].to_numpy(bool)]
    efficiency = {}
    for metric, column in (
        ("dasher_min_per_delivery", "dasher_active_min"),
        ("cost_per_delivery", "delivery_cost"),
    ):
        v = delivered[column].to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v) > 1 and np.std(v) > 0:
            efficiency[metric] = (float(np.mean(v)), float(np.std(v, ddof=1)))
    return MeasuredContext(
        cx_now=cx_now,
        cx_sd=float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
        orders_per_day=len(after) / days / _sampled_share(frame),
        stores=int(after["store_id"].nunique()),
        regions=int(after["region"].nunique()),
        icc_store=_icc(values, store),
        icc_window=_icc(values, window),
        cuped_correlation=float(np.clip(rho, -0.95, 0.95)) if np.isfinite(rho) else 0.0,
        efficiency=efficiency,
    )


def _scope_text(scope: Mapping[str, Any]) -> dict[str, str]:
    return {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in scope.items()}


def plan_for(
    frame: pd.DataFrame, rec: Recommendation, *, incident_id: str | None = None
) -> ExperimentPlan:
    """The experiment plan of an estimated recommendation, on the incident slice's orders
    (``frame``: an ``order_frame`` with outcomes and the ``after`` column)."""
    e = rec.estimate
    if e is None:
        raise ValueError(f"recommendation: {rec.action.name} has no what-if estimate to plan on")
    if e.delta["cx_score"] <= 0:
        raise ValueError(
            f"recommendation: {rec.action.name} is not expected to raise the CX Score "
            f"({e.delta['cx_score']:+.1f} points); nothing to test"
        )
    m = measure(frame)
    a = rec.action
    action = ActionSpec(
        name=a.name,
        description=a.gerund,
        cause=a.cause,  # type: ignore[arg-type]
        kind=a.kind,
        scope=_scope_text(a.scope),
        parameters={k: v for k, v in a.parameters.items() if k != "target"},
        rollback_change_id=a.change_id if a.name == "rollback" else None,
    )
    primary = MetricSpec(
        name="cx_score",
        kind="mean",
        baseline=round(m.cx_now, 2),
        direction="increase_is_good",
        sd=round(m.cx_sd, 2),
        expected_effect=round(e.delta["cx_score"], 2),
        label="CX Score",
        unit="points",
    )
    secondary = []
    for name, label in (
        ("on_time_rate", "on-time rate"),
        ("cancellation_rate", "cancellation rate"),
    ):
        base = e.without[name]
        if 0.0 < base < 1.0:
            secondary.append(
                MetricSpec(
                    name=name,
                    kind="rate",
                    baseline=round(base, 4),
                    direction="increase_is_good" if name == "on_time_rate" else "decrease_is_good",
                    expected_effect=round(e.delta[name], 4),
                    label=label,
                )
            )
    guardrails = []
    for name, label, unit in (
        ("dasher_min_per_delivery", "dasher minutes per delivery", "min"),
        ("cost_per_delivery", "cost per delivery", "USD"),
    ):
        if name not in m.efficiency:
            continue
        base, sd = m.efficiency[name]
        allowed = max(e.high[name], e.delta[name], 0.0)  # the what-if's worst plausible cost
        margin = max(allowed, MIN_MARGIN_SHARE * base)
        guardrails.append(
            MetricSpec(
                name=name,
                kind="mean",
                baseline=round(base, 3),
                direction="decrease_is_good",
                sd=round(sd, 3),
                margin=round(margin, 3),
                label=label,
                unit=unit,
            )
        )
    context = PlanContext(
        orders_per_day=round(m.orders_per_day, 1),
        stores_in_scope=max(m.stores, 2),
        regions_in_scope=max(m.regions, 1),
        icc_store=round(m.icc_store, 4),
        icc_window=round(m.icc_window, 4),
        window_hours=WINDOW_HOURS,
        cuped_correlation=round(m.cuped_correlation, 3),
        incident_id=incident_id,
    )
    return build_plan(action, primary, guardrails, context, secondary=secondary)
