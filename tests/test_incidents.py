"""Detection pipeline on generated scenarios with planted causes: detected in scope and in
time, no high-severity incident without a cause, re-runs update, incremental equals batch."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cxagent.incidents as incidents
from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import parse_spec
from cxagent.engine.connection import connect
from cxagent.engine.cube import build_cube, build_window_cube
from cxagent.errors import SpecError
from cxagent.incidents import (
    DetectConfig,
    IncidentReport,
    detect_incidents,
    load_state,
    load_windows,
    run_detection,
    save_state,
)
from cxagent.incidents.calibrate import fit_rate_calibration, trimmed_tau2
from cxagent.incidents.hierarchy import Hierarchy
from cxagent.incidents.windows import (
    WindowSeries,
    to_windows,
    window_end,
    window_ids,
    window_start,
    windows_from_cube,
)
from cxagent.metrics.series import SliceSeries, build_series
from cxagent.store.db import session_factory
from cxagent.store.repository import list_incidents

CAUSES_START = dt.datetime(2024, 3, 28)  # day 24 of 28: three days to detect in
PLANTED = [
    {
        "cause": "batching_policy",
        "start": "2024-03-28T00:00",
        "scope": {"region": "SF", "category": "grocery"},
    },
    {"cause": "eta_model_bias", "start": "2024-03-28T00:00", "scope": {"region": "NYC"}},
    {
        "cause": "inventory_drop",
        "start": "2024-03-28T00:00",
        "scope": {"region": "LA", "category": "convenience"},
    },
]


def scenario(root: Path, seed: int, interventions: list[dict[str, Any]]) -> Path:
    spec = {
        "name": "incidents",
        "seed": seed,
        "start": "2024-03-04",
        "days": 28,
        "orders_per_day": 6000,
        "regions": ["SF", "NYC", "LA"],
        "background_changes": 1,
        "interventions": interventions,
    }
    generate(parse_spec(spec), root, workers=2)
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WindowSeries, Hierarchy]:
    root = scenario(tmp_path_factory.mktemp("planted") / "data", 5, PLANTED)
    win, hier = load_windows(root)
    return root, win, hier


@pytest.fixture(scope="module")
def planted_feed(planted: tuple[Path, WindowSeries, Hierarchy]) -> list[IncidentReport]:
    _, win, hier = planted
    return run_detection(win, hier, DetectConfig())[1]


def find(feed: list[IncidentReport], scope: dict[str, Any]) -> IncidentReport:
    hits = [r for r in feed if r.draft.slice == scope]
    assert hits, f"no incident on {scope}; feed: {[r.label for r in feed]}"
    return min(hits, key=lambda r: r.draft.detected_at)


def inside(slice_: dict[str, Any], scope: dict[str, Any], hier: Hierarchy) -> bool:
    expanded = hier.expand({k: v for k, v in slice_.items() if k != "daypart"})
    return all(expanded.get(k) == v for k, v in scope.items())


@pytest.mark.parametrize(
    ("days", "as_of"),
    [(None, None), (20, None), (None, np.datetime64("2024-03-20T17:00", "h"))],
)
def test_given_a_dataset_when_windows_are_summed_on_the_engine_then_they_equal_the_hourly_path(
    planted: tuple[Path, WindowSeries, Hierarchy], days: int | None, as_of: np.datetime64 | None
) -> None:
    root = planted[0]
    engine = connect(root)
    cube = build_window_cube(engine, days=days)
    assert cube is not None
    got = windows_from_cube(cube, as_of=as_of)
    hourly = build_cube(engine)
    if days is not None:
        hourly = hourly.last_days(days)
    want = to_windows(build_series(hourly, with_dayparts=False), as_of=as_of)
    assert (got.first, got.n_windows, got.as_of) == (want.first, want.n_windows, want.as_of)
    assert got.missing == want.missing
    assert got.slices == want.slices  # same rows in the same order
    for field in want.stats:
        np.testing.assert_allclose(got.stats[field], want.stats[field], rtol=1e-9)
    if days is not None:  # the cut is made before summing: only those days' windows exist
        assert got.n_windows <= 4 * days


def test_children_are_the_slices_one_dimension_inside(
    planted: tuple[Path, WindowSeries, Hierarchy],
) -> None:
    _, win, hier = planted
    exp = hier.expanded
    for i, e in enumerate(exp):  # the definition, checked by brute force
        want = [j for j, f in enumerate(exp) if len(f) == len(e) + 1 and e < f]
        assert hier.children(i) == want
    sf = hier.find({"region": "SF"})
    assert sf is not None and hier.find({"region": "SF", "category": "grocery"}) in hier.children(
        sf
    )


def test_public_api_is_complete() -> None:
    public = {n for n in dir(incidents) if not n.startswith("_")}
    modules = {"calibrate", "config", "contrast", "detection", "effects", "episodes", "feed"}
    modules |= {"grouping", "hierarchy", "localization", "null", "pipeline", "ranking"}
    modules |= {"state", "windows", "drivers"}
    assert public - modules == set(incidents.__all__)


def test_given_hours_when_mapped_to_windows_then_late_night_runs_past_midnight() -> None:
    hours = np.array(["2024-01-03T04", "2024-01-03T05", "2024-01-03T16", "2024-01-03T23"])
    ids = window_ids(hours.astype("datetime64[h]"))
    assert list(ids % 28) == [7, 8, 10, 11]  # Tue late night, Wed breakfast, dinner, late night
    assert str(window_start(ids[:1])[0]) == "2024-01-02T21"
    assert str(window_end(ids[:1])[0]) == "2024-01-03T05"


def test_given_data_starting_at_midnight_when_windowed_then_no_window_is_partly_seen() -> None:
    hours = np.arange("2024-03-04T00", "2024-03-06T00", dtype="datetime64[h]")
    series = SliceSeries(
        slices=[{}],
        hours=hours.astype("datetime64[us]"),
        stats={"orders": np.ones((1, hours.size))},
    )
    win = to_windows(series)
    # the late night of Mar 3 (21:00-05:00) is only seen from midnight: it is left out;
    # so is the late night of Mar 5, which the data has not finished
    assert win.starts[0] == np.datetime64("2024-03-04T05")
    assert win.ends[-1] == np.datetime64("2024-03-05T21")
    assert win.stats["orders"].tolist() == [[6.0, 5.0, 5.0, 8.0, 6.0, 5.0, 5.0]]


def test_given_known_overdispersion_when_estimated_then_tau2_is_recovered() -> None:
    rng = np.random.default_rng(0)
    n, p, tau = 2000.0, 0.1, 0.2
    rate = p * np.exp(tau * rng.standard_normal((3, 400)) - tau**2 / 2)
    s = rng.binomial(int(n), np.clip(rate, 0, 1)).astype(float)
    m = np.full_like(s, n * p)
    tau2 = trimmed_tau2(s - m, m * (1 - p), m, 0.1)
    assert np.allclose(np.sqrt(tau2), tau, rtol=0.2)


@pytest.mark.parametrize("link", ["shift", "ratio"])
def test_given_market_shocks_when_calibrated_then_the_link_that_generated_them_is_chosen(
    link: str,
) -> None:
    """A market of two slices with base late rates 4% and 12%; the market's shock per
    window either adds the same points to both (shift) or multiplies both (ratio)."""
    rng = np.random.default_rng(1)
    t, n = 112, 4000.0
    shock = rng.normal(0.0, 0.03, t)
    base = np.array([0.04, 0.12])
    if link == "shift":
        rates = np.clip(base[:, None] + shock[None, :], 0.001, 0.999)
    else:
        rates = base[:, None] * np.exp(shock[None, :] / 0.06)
    slices = rng.binomial(int(n), rates).astype(float)
    s = np.vstack([slices.sum(axis=0), slices])  # row 0: the market
    trials = np.full_like(s, n)
    trials[0] = 2 * n
    cal = fit_rate_calibration(s, trials, first_id=0, markets=np.array([-1, 0, 0]))
    assert cal.link_power[1:].tolist() == [1.0 if link == "shift" else 0.0] * 2


@pytest.mark.parametrize(
    "scope",
    [
        {"region": "SF", "category": "grocery"},
        {"region": "NYC"},
        {"region": "LA", "category": "convenience"},
    ],
)
def test_given_planted_cause_when_detecting_then_incident_in_scope_within_two_days(
    planted: tuple[Path, WindowSeries, Hierarchy],
    planted_feed: list[IncidentReport],
    scope: dict[str, Any],
) -> None:
    _, _, hier = planted
    report = find(planted_feed, scope)
    draft = report.draft
    assert CAUSES_START < draft.detected_at <= CAUSES_START + dt.timedelta(days=2)
    assert draft.severity in ("high", "medium") and draft.delta < -2.0
    assert draft.top_slices and inside(draft.top_slices[0]["slice"], scope, hier)


def test_given_planted_causes_when_detecting_then_no_incident_outside_them(
    planted: tuple[Path, WindowSeries, Hierarchy], planted_feed: list[IncidentReport]
) -> None:
    _, _, hier = planted
    scopes = [p["scope"] for p in PLANTED]
    stray = [
        r.label for r in planted_feed if not any(inside(r.draft.slice, s, hier) for s in scopes)
    ]
    assert stray == []


def test_given_no_intervention_when_detecting_then_no_high_severity_incident(
    tmp_path: Path,
) -> None:
    root = scenario(tmp_path / "null", 6, [])
    win, hier = load_windows(root)
    # 28 days: the last 13 monitored, the first 15 calibrate (14 would be one window short:
    # the night before the first day is only partly seen and left out)
    feed = run_detection(win, hier, DetectConfig(monitor_days=13))[1]
    assert [r.label for r in feed if r.draft.severity == "high"] == []


def test_given_same_data_when_detection_reruns_then_incidents_are_updated_not_duplicated(
    planted: tuple[Path, WindowSeries, Hierarchy], tmp_path: Path
) -> None:
    root, _, _ = planted
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = detect_incidents(root, store_url=url)
    again = detect_incidents(root, store_url=url)
    assert all(r.created for r in first) and not any(r.created for r in again)
    assert [r.incident_id for r in again] == [r.incident_id for r in first]
    assert len(list_incidents(session_factory(url))) == len(first)


def test_given_saved_state_when_new_windows_arrive_then_incremental_equals_batch(
    planted: tuple[Path, WindowSeries, Hierarchy], tmp_path: Path
) -> None:
    _, win, hier = planted
    config = DetectConfig(monitor_from=dt.datetime(2024, 3, 24, 5))
    cut = win.n_windows - 9  # the last two days and a dinner arrive later
    state, _ = run_detection(win.columns(0, cut), hier, config)
    save_state(state, tmp_path / "state.pkl")
    restored = load_state(tmp_path / "state.pkl", config)
    assert restored is not None
    later, incremental = run_detection(win, hier, config, state=restored)
    batch_state, batch = run_detection(win, hier, config)
    assert later.results is not None and batch_state.results is not None
    for a, b in zip(later.results.arrays(), batch_state.results.arrays(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r.draft for r in incremental] == [r.draft for r in batch]


@pytest.mark.slow
def test_given_demo_when_detecting_then_sf_grocery_is_flagged_with_dinner_first(
    demo_dataset: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = demo_dataset
    feed = detect_incidents(root, store_url=f"sqlite:///{tmp_path / 'store.db'}")
    report = find(feed, {"region": "SF", "category": "grocery"})
    assert report.draft.severity == "high"
    # "by Jan 4 morning at the latest" (issue 3): the breakfast window ends at 11:00
    assert report.draft.detected_at <= dt.datetime(2024, 1, 4, 11)
    assert report.draft.top_slices[0]["slice"] == {
        "region": "SF",
        "category": "grocery",
        "daypart": "dinner",
    }
    assert find(feed, {"region": "CHI", "category": "convenience"}).draft.detected_at < dt.datetime(
        2024, 1, 4
    )


def test_an_incremental_run_survives_a_new_slice_appearing(demo_dataset: tuple[Path, dict]) -> None:
    """The state was fitted without a store; the next run's data has it (rows move)."""
    from cxagent.incidents import DetectConfig, run_detection, start_state

    win, hier = load_windows(demo_dataset[0])
    config = DetectConfig()
    without = [s for s in win.slices if s.get("store_id") != 1000]
    fitted = start_state(
        win.align(without), Hierarchy(without, hier.store_info).market_rows(), config
    )
    state, reports = run_detection(win, hier, config, state=fitted)
    assert state.slices == without
    assert reports, "the planted regressions are found"
    for r in reports:  # labels come from the hierarchy: they must describe the same slice
        assert r.draft.slice.get("store_id") != 1000
        assert all(f"{k}={v}" in r.label for k, v in r.draft.slice.items()), (
            r.label,
            r.draft.slice,
        )


def test_cx_weights_set_the_incidents_cx_scores_and_the_defaults_change_nothing(
    planted: tuple[Path, WindowSeries, Hierarchy], planted_feed: list[IncidentReport]
) -> None:
    from cxagent.config import validate_config
    from cxagent.metrics.definitions import DEFAULT_COMPONENTS, using_components

    _, win, hier = planted
    # the default weights, as copies (equal values, other objects): the very same feed
    with using_components(tuple(dataclasses.replace(c) for c in DEFAULT_COMPONENTS)):
        again = run_detection(win, hier, DetectConfig())[1]
    assert [r.draft for r in again] == [r.draft for r in planted_feed]
    assert [r.impact for r in again] == [r.impact for r in planted_feed]

    weights = {c.name: 0.0 for c in DEFAULT_COMPONENTS} | {"on_time": 1.0}
    config = validate_config({"metrics": {"cx_weights": weights}})
    with config.activated():
        weighted = run_detection(win, hier, DetectConfig())[1]
    # on time alone: an incident's CX Scores are on-time scores, 200 points per unit of late
    # rate, wherever its late rate moved
    late = [r for r in weighted if "late_rate" in r.components]
    assert late
    for r in late:
        rate = r.components["late_rate"]
        assert r.draft.current == pytest.approx(200 * (0.5 - rate["current"]), abs=0.02)
        assert r.draft.baseline == pytest.approx(200 * (0.5 - rate["baseline"]), abs=0.02)
        assert r.draft.delta == pytest.approx(-200 * rate["delta"], abs=0.03)
    default = {str(r.draft.slice): r.draft.delta for r in planted_feed}
    both = [r for r in weighted if str(r.draft.slice) in default]
    assert both and all(abs(r.draft.delta - default[str(r.draft.slice)]) > 1 for r in both)


def test_own_history_lam_slows_the_ewma_on_series_without_a_market_only() -> None:
    from cxagent.incidents.detection import _detector

    markets = np.array([-1, 0, -1, 2])  # markets and cross-market slices have no market
    slow = _detector(DetectConfig(own_history_lam=0.1), markets)
    np.testing.assert_array_equal(slow.lam, [0.1, 0.4, 0.1, 0.4])
    assert _detector(DetectConfig(), markets).lam == 0.4  # off: the detector's lam everywhere
    with pytest.raises(SpecError, match="own_history_lam"):
        DetectConfig(own_history_lam=1.5)
    with pytest.raises(SpecError, match="ewma detector only, not 'scan'"):
        DetectConfig(detector="scan", own_history_lam=0.1)
