"""Root-cause investigation: timeline counterfactuals on planted mechanisms, the demo story,
and what the data cannot test."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.config import validate_config
from cxagent.engine.connection import connect
from cxagent.hypotheses import MECHANISMS
from cxagent.incidents.feed import IncidentReport
from cxagent.metrics.definitions import DEFAULT_COMPONENTS, using_components
from cxagent.rca.investigate import (
    CAUSES,
    CONFIDENCE_FILE,
    investigate_report,
    load_confidence_model,
    model_features,
    requested_report,
)
from cxagent.rca.timeline import late_impacts
from cxagent.store.repository import IncidentDraft

T0 = pd.Timestamp("2024-03-15")


def orders(prep_after: float = 1.0, batched_after: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Synthetic delivered orders over 20 days whose lateness is their timeline: prep + wait +
    leg - promise; after T0 prep is scaled by ``prep_after`` and the batched share changes."""
    rng = np.random.default_rng(seed)
    n = 20_000
    t = pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.uniform(0, 20 * 86400, n), unit="s")
    after = np.asarray(t >= T0)
    store = rng.integers(0, 8, n)
    prep = 15 * np.exp(0.3 * rng.standard_normal(n)) * np.where(after, prep_after, 1.0)
    batched = rng.uniform(size=n) < np.where(after, batched_after, 0.1)
    wait = 3 * np.exp(0.4 * rng.standard_normal(n)) + np.where(batched, 8.0, 0.0)
    distance = rng.uniform(0.5, 5, n)
    leg = distance * 4 + np.where(batched, 4.0, 0.0) + rng.normal(0, 2, n)
    promised = 15 + 3 + distance * 4 + 6 + rng.normal(0, 3, n)
    late_min = prep + wait + leg - promised
    return pd.DataFrame(
        {
            "order_time": t,
            "after": after,
            "delivered": True,
            "late": late_min > 5,
            "late_min": late_min,
            "store_id": store,
            "daypart": "dinner",
            "hour": pd.DatetimeIndex(t).hour,
            "item_count": 5,
            "prep_min": prep,
            "dasher_wait_min": wait,
            "batched": batched.astype(float),
            "promised_min": promised,
            "distance_mi": distance,
        }
    )


def test_a_prep_drift_is_credited_to_prep_and_nothing_else() -> None:
    impacts = {m.mechanism: m for m in late_impacts(orders(prep_after=1.3), n_bootstrap=40)}
    prep = impacts["prep_time_drift"]
    assert prep.ci_low > 0.05 and prep.p_positive == 1.0
    for other in ("batching_policy", "dasher_shortage", "eta_model_bias"):
        assert impacts[other].ci_low < 0.01 < prep.ci_low, other


def test_more_batching_is_credited_to_batching() -> None:
    found = late_impacts(orders(batched_after=0.4), n_bootstrap=40)
    assert found[0].mechanism == "batching_policy" and found[0].ci_low > 0.03
    assert {m.mechanism: m for m in found}["prep_time_drift"].ci_low < 0.01


def test_no_change_leaves_every_interval_around_zero() -> None:
    for m in late_impacts(orders(), n_bootstrap=40):
        assert m.ci_low < 0.01 and abs(m.late_rate_change) < 0.02, m


@pytest.mark.slow
def test_on_the_demo_batching_ranks_first_and_prep_second(
    demo_dataset: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = demo_dataset
    db = f"sqlite:///{tmp_path / 'cx.db'}"
    result = CliRunner().invoke(app, ["investigate", "--data", str(root), "--json", "--db", db])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["incidents"]
    sf = next(i for i in found if i["slice"] == {"region": "SF", "category": "grocery"})
    assert sf["investigated_slice"]["daypart"] == "dinner"
    assert [c["cause"] for c in sf["causes"]][:2] == ["batching_policy", "prep_time_drift"]
    assert sf["causes"][0]["change_id"] == "chg-001" and sf["causes"][0]["impact"] < -2
    assert {r["cause"] for r in sf["ruled_out"]} >= {"dasher_shortage", "eta_model_bias"}
    chi = next(i for i in found if i["slice"] == {"region": "CHI", "category": "convenience"})
    assert chi["causes"][0]["cause"] == "inventory_drop"
    assert "Most likely cause: batching_policy" in sf["narrative"]
    # the contrast with comparable slices and the SHAP attribution back the timeline
    assert sf["contrast"]["comparison"].startswith("grocery in the other regions")
    batched = sf["contrast"]["drivers"]["batching_policy"]
    assert batched["effect"] > 0.03 and batched["p_value"] < 0.01
    assert any(e.startswith("diff-in-diff against") for e in sf["causes"][0]["evidence"])
    # the logged batching change moved the batched share when it took effect
    assert sf["causes"][0]["features"]["change_step"] > 3
    assert any("batched share moved with it" in e for e in sf["causes"][0]["evidence"])
    shap = {f["feature"]: f["contribution"] for f in sf["shift_attribution"]["features"]}
    assert shap["batched"] > 0.01 and sf["shift_attribution"]["model_auc"] > 0.7


@pytest.mark.slow
def test_cx_weights_set_the_impacts_of_causes_and_the_defaults_change_nothing(
    demo_dataset: tuple[Path, dict[str, Any]],
) -> None:
    engine = connect(demo_dataset[0])
    where = {"region": "SF", "category": "grocery", "daypart": "dinner"}

    def run() -> tuple[IncidentDraft, list[tuple[str, float, tuple[float, float]]]]:
        report = requested_report(engine, where, dt.datetime(2024, 1, 3))
        found = investigate_report(engine, report, n_bootstrap=20)
        # a requested report has no p-values: NaN, which never equals itself
        draft = dataclasses.replace(report.draft, p_value=0.0, q_value=0.0)
        return draft, [(c.cause, c.impact, c.impact_ci) for c in found.causes]

    draft, causes = run()
    assert [c for c, _, _ in causes][:2] == ["batching_policy", "prep_time_drift"]
    # the default weights, as copies (equal values, other objects): the very same figures
    with using_components(tuple(dataclasses.replace(c) for c in DEFAULT_COMPONENTS)):
        assert run() == (draft, causes)

    weights = {c.name: 0.0 for c in DEFAULT_COMPONENTS} | {"on_time": 1.0}
    with validate_config({"metrics": {"cx_weights": weights}}).activated():
        weighted_draft, weighted = run()
    # the slice's CX Score is now its on-time score, which fell further
    assert weighted_draft.delta < draft.delta - 5
    # and a cause's impact is its late-rate change at 200 points per unit (not 0.3 x 200)
    assert [c for c, _, _ in weighted] == [c for c, _, _ in causes]
    for (name, impact, ci), (_, points, interval) in zip(causes, weighted, strict=True):
        assert name in MECHANISMS
        assert points == pytest.approx(impact / 0.3) and interval == pytest.approx(
            (ci[0] / 0.3, ci[1] / 0.3)
        )


def test_without_courier_data_the_courier_hypotheses_are_not_testable(
    small_dataset: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    manifest = json.loads((data / "dataset.json").read_text())
    manifest["missing_columns"] = {"deliveries": ["batched_flag", "dasher_wait_s"]}
    (data / "dataset.json").write_text(json.dumps(manifest))
    start = dt.datetime(2024, 3, 7)
    draft = IncidentDraft(
        metric="cx_score",
        slice={"region": "SF"},
        window_start=start,
        window_end=start + dt.timedelta(days=1),
        detected_at=start + dt.timedelta(hours=16),
        severity="low",
        baseline=80.0,
        current=78.0,
        delta=-2.0,
        affected_orders=100,
        p_value=0.01,
        q_value=0.05,
        detector="ewma",
    )
    report = IncidentReport(draft=draft, components={}, label="region=SF", impact=0.1)
    found = investigate_report(connect(data), report, baseline_days=3, n_bootstrap=20)
    assert set(found.not_testable) == {"batching_policy", "dasher_shortage"}
    tested = {c.cause for c in found.causes} | {r["cause"] for r in found.ruled_out}
    assert "prep_time_drift" in tested and "batching_policy" not in tested


def test_the_confidence_model_is_a_logistic_map_of_the_causes_features(tmp_path: Path) -> None:
    spec = {"features": ["z", "logged"], "coef": [-1.0, 0.5, 2.0]}
    path = tmp_path / "confidence.json"
    path.write_text(json.dumps(spec))
    model = load_confidence_model(path)
    assert model is not None
    assert model({"z": 2.0, "logged": 1.0}) == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert model({}) == pytest.approx(1 / (1 + np.exp(1.0)))  # absent features count as 0
    assert load_confidence_model(tmp_path / "none.json") is None


@pytest.mark.parametrize(
    ("pooled", "value", "per_cause"),
    [("recovered_days", 2.0, "recovered"), ("onset_step", 4.0, "onset")],
)
def test_a_pooled_feature_may_weigh_differently_per_cause(
    tmp_path: Path, pooled: str, value: float, per_cause: str
) -> None:
    spec = {"features": [f"{per_cause}_dasher_shortage"], "coef": [1.0, -1.0]}
    path = tmp_path / "confidence.json"
    path.write_text(json.dumps(spec))
    model = load_confidence_model(path)
    assert model is not None
    courier = {pooled: value, "is_dasher_shortage": 1.0}
    batching = {pooled: value, "is_batching_policy": 1.0}
    assert model(courier) == pytest.approx(1 / (1 + np.exp(value - 1.0)))  # 1 - value
    assert model(batching) == pytest.approx(1 / (1 + np.exp(-1.0)))  # not this cause's term
    assert model_features(courier)[f"{per_cause}_batching_policy"] == 0.0
    assert model_features(batching)[f"{per_cause}_batching_policy"] == value


@pytest.mark.parametrize(
    ("logged", "change_step", "still"),
    [(1.0, 0.0, 1.0), (1.0, 1.5, 1.0), (1.0, 2.0, 0.0), (1.0, 6.0, 0.0), (0.0, 0.0, 0.0)],
)
def test_a_logged_change_its_driver_did_not_move_at_is_marked(
    logged: float, change_step: float, still: float
) -> None:
    """The confidence may weigh a matched change apart when the driver stayed put at it."""
    features = {"logged": logged, "change_step": change_step, "is_dasher_shortage": 1.0}
    assert model_features(features)["logged_still"] == still


def test_the_shipped_confidence_model_uses_features_investigate_computes() -> None:
    spec = json.loads(CONFIDENCE_FILE.read_text())
    produced = {"z", "share", "points", "logged", "support", "first", "rel_points", "n_causes"}
    produced |= {"after_days", "recovered_days", "did_t", "has_did", "shap_share", "late_did_t"}
    produced |= {f"is_{cause}" for cause in CAUSES} | {"lag_corr", "change_step", "onset_step"}
    produced |= {f"{k}_{cause}" for k in ("recovered", "onset") for cause in CAUSES} | {
        "logged_still"
    }  # model_features
    assert set(spec["features"]) <= produced
    assert len(spec["coef"]) == len(spec["features"]) + 1
    assert spec["fitted_on"]["seeds"][1] < 2000  # evaluation seeds (2000+) stay unseen
