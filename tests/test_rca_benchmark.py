"""The root-cause benchmark's own bookkeeping: which incident is about which planted cause."""

from __future__ import annotations

import datetime as dt
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests.conftest import load_module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_module("rca_scenarios")


def incident(slice_: dict[str, Any], end: dt.datetime) -> Any:
    draft = SimpleNamespace(slice=slice_, window_end=end)
    return SimpleNamespace(report=SimpleNamespace(draft=draft))


STORES = {
    1000: {"region": "SF", "category": "grocery"},
    1030: {"region": "LA", "category": "retail"},
}
CAUSE = {"cause": "batching_policy", "scope": {"region": "SF"}, "start": "2024-03-28T00:00:00"}
AFTER = dt.datetime(2024, 3, 29)


@pytest.mark.parametrize(
    ("slice_", "end", "about"),
    [
        ({"region": "SF", "daypart": "dinner"}, AFTER, True),
        ({"category": "grocery"}, AFTER, True),  # the scope's region is not fixed: may cover it
        ({"region": "LA"}, AFTER, False),
        ({"store_id": 1000, "basket_size": "small"}, AFTER, True),  # an SF store
        ({"store_id": 1030, "basket_size": "small"}, AFTER, False),  # an LA store
        ({"region": "SF"}, dt.datetime(2024, 3, 27), False),  # over before the cause began
    ],
)
def test_an_incident_is_about_a_cause_inside_its_scope_and_days(
    bench: ModuleType, slice_: dict[str, Any], end: dt.datetime, about: bool
) -> None:
    assert bench._relevant(incident(slice_, end), CAUSE, STORES) is about


def test_the_change_log_holds_the_asked_for_do_nothing_changes(bench: ModuleType) -> None:
    assert bench.scenario_spec(1000, 6000)["background_changes"] == bench.BACKGROUND_CHANGES
    assert bench.scenario_spec(1000, 6000, 7)["background_changes"] == 7
    # the rest of the scenario is the seed's, whatever the log holds
    a, b = bench.scenario_spec(1000, 6000), bench.scenario_spec(1000, 6000, 7)
    assert a["interventions"] == b["interventions"]
