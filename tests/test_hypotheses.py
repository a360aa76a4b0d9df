"""The hypothesis library: one module per cause, one registry every test reads."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pandas as pd
import pytest

from cxagent.hypotheses import CAUSES, MECHANISMS, NORMAL, REGISTRY, normal_variance
from cxagent.hypotheses.base import Driver, Hypothesis
from cxagent.rca.changelog import hypotheses_of
from cxagent.rca.timeline import late_impacts
from cxagent.web.schemas import Cause
from cxagent.workbench.summary import PLAIN_CAUSES


def test_registry_is_the_scenario_vocabulary_and_the_api_accepts_it():
    assert CAUSES == (
        "batching_policy",
        "prep_time_drift",
        "dasher_shortage",
        "eta_model_bias",
        "inventory_drop",
    )
    assert set(get_args(Cause)) == {*CAUSES, NORMAL}
    assert set(PLAIN_CAUSES) == {*CAUSES, NORMAL}
    assert tuple(c for c in CAUSES if c != "inventory_drop") == MECHANISMS


@pytest.mark.parametrize("name", CAUSES)
def test_each_hypothesis_module_declares_what_it_tests(name):
    h = REGISTRY[name]
    assert h.name == name and h.needs and h.change_keywords and h.plain
    assert h.driver.harm in (1.0, -1.0)
    # its own words in a change log point at it
    assert name in hypotheses_of(h.change_keywords[0], "")


def test_a_hypothesis_needs_exactly_one_way_to_measure_its_impact():
    line = lambda b, a: ""  # noqa: E731
    with pytest.raises(ValueError, match="counterfactual or an own impact"):
        Hypothesis("x", "x", "late", ("a",), Driver("x", "a", 1.0), line)
    with pytest.raises(ValueError, match="for lateness"):
        Hypothesis(
            "x",
            "x",
            "item_accuracy",
            ("a",),
            Driver("x", "a", 1.0),
            line,
            counterfactual=lambda o, w: 0.0,
        )


def _orders(rng: np.random.Generator, n: int, prep_after: float) -> pd.DataFrame:
    """Delivered orders over 8 days, the last 3 "after"; only merchant prep moves."""
    day = rng.integers(0, 8, n)
    after = day >= 5
    prep = rng.gamma(4.0, 3.0, n) * np.where(after, prep_after, 1.0)
    wait = rng.gamma(2.0, 1.5, n)
    leg = rng.gamma(5.0, 3.0, n)
    promised = np.full(n, 40.0)
    late_min = prep + wait + leg - promised
    return pd.DataFrame(
        {
            "order_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(day * 24 + 18, "h"),
            "delivered": True,
            "after": after,
            "late_min": late_min,
            "late": late_min > 5.0,
            "store_id": rng.integers(0, 20, n).astype(str),
            "daypart": "dinner",
            "hour": 18,
            "busy_share": rng.uniform(0.3, 0.7, n),
            "batched": 0.0,
            "prep_min": prep,
            "dasher_wait_min": wait,
            "promised_min": promised,
            "item_count": rng.integers(1, 10, n),
            "distance_mi": rng.uniform(0.5, 4.0, n),
        }
    )


def test_only_the_moved_drivers_counterfactual_explains_the_change():
    frame = _orders(np.random.default_rng(0), 20_000, prep_after=1.3)
    impacts = {m.mechanism: m for m in late_impacts(frame, n_bootstrap=30)}
    assert impacts["prep_time_drift"].ci_low > 0.03
    for other in ("batching_policy", "dasher_shortage", "eta_model_bias"):
        assert abs(impacts[other].late_rate_change) < 0.01, other


def test_normal_variance_is_as_sure_as_the_best_supported_mechanism_is_not():
    assert normal_variance.confidence([0.2, np.nan, 0.7]) == pytest.approx(0.3)
    assert normal_variance.confidence([]) == 1.0
