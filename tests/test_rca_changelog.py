"""Change-log matching: scope, timing, and hypotheses read from free wording."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from cxagent.errors import CXAgentError
from cxagent.rca.changelog import hypotheses_of, match_changes

START = dt.datetime(2024, 1, 3, 16)


def event(change_id: str, name: str, started: str, **scope: list[Any]) -> dict[str, Any]:
    return {
        "change_id": change_id,
        "kind": "policy",
        "name": name,
        "description": "",
        "started_at": pd.Timestamp(started),
        "scope_regions": scope.get("regions", []),
        "scope_categories": scope.get("categories", []),
        "scope_dayparts": scope.get("dayparts", []),
        "scope_stores": scope.get("stores", []),
    }


def test_changes_in_scope_and_before_the_regression_are_candidates_nearest_first() -> None:
    events = pd.DataFrame(
        [
            event("far", "Batching threshold raised", "2023-12-01"),  # too long before
            event("other", "batching_policy", "2024-01-03", categories=["retail"]),
            event("late", "eta_model v8", "2024-01-04"),  # after the regression started
            event("near", "Courier incentive cut", "2024-01-03 12:00", regions=["SF", "LA"]),
            event("hit", "batching_policy", "2024-01-03", categories=["grocery"]),
        ]
    )
    found = match_changes(events, {"region": "SF", "category": "grocery"}, START)
    assert [m.change_id for m in found] == ["near", "hit", "late", "other"]
    assert [m.candidate for m in found] == [True, True, False, False]
    assert found[1].hypotheses == ("batching_policy",) and found[1].lead_hours == 16.0
    assert found[0].hypotheses == ("dasher_shortage",)


def test_a_change_inside_the_window_the_regression_starts_in_is_a_candidate() -> None:
    # the regression is first seen in the window 21:00-05:00; a change at midnight is inside
    # it, one at 06:00 is after the regression was seen
    start = dt.datetime(2024, 1, 3, 21)
    events = pd.DataFrame(
        [
            event("midnight", "Courier incentive cut", "2024-01-04 00:00"),
            event("morning", "batching_policy", "2024-01-04 06:00"),
        ]
    )
    found = match_changes(events, {}, start, first_window_end=dt.datetime(2024, 1, 4, 5))
    assert {m.change_id: m.candidate for m in found} == {"midnight": True, "morning": False}
    assert found[0].lead_hours == -3.0
    # without the window's end the regression's start is the bound
    assert not any(m.candidate for m in match_changes(events, {}, start))


@pytest.mark.parametrize(
    ("name", "description", "expected"),
    [
        ("batching_policy", "max orders per trip 2 -> 4", ("batching_policy",)),
        ("eta_model", "ETA model eta-v7 -> eta-v8", ("eta_model_bias",)),
        ("inventory_sync", "Catalogue in-stock sync", ("inventory_drop",)),
        ("merchant_operations", "Prep tablets rolled out", ("prep_time_drift",)),
        ("checkout_ui", "Checkout page layout A/B test.", ()),
    ],
)
def test_hypotheses_are_read_from_the_wording(
    name: str, description: str, expected: tuple[str, ...]
) -> None:
    assert hypotheses_of(name, description) == expected


def test_a_change_log_without_scope_columns_is_refused() -> None:
    events = pd.DataFrame([event("x", "batching", "2024-01-03")]).drop(columns="scope_stores")
    with pytest.raises(CXAgentError, match="scope_stores"):
        match_changes(events, {}, START)
