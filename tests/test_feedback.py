"""Feedback on incidents and causes: the store, the report's maths, the recalibration of the
confidence, the hook into investigations and the ``cxagent feedback`` commands."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.rca import feedback as maths
from cxagent.rca.feedback import (
    CauseLabel,
    IncidentLabel,
    Recalibration,
    brier_score,
    calibration_table,
    cause_accuracy,
    detection_precision,
    fit_recalibration,
    logit,
    recalibrate,
    wilson_interval,
)
from cxagent.store.db import session_factory
from cxagent.store.feedback import (
    ContradictoryFeedbackError,
    InvalidFeedbackError,
    UnknownCauseError,
    cause_feedback,
    cause_labels,
    incident_labels,
    label_incident,
    report,
    set_cause_feedback,
    stored_recalibration,
)
from cxagent.store.repository import (
    IncidentDraft,
    NotFoundError,
    get_incident,
    save_analysis,
    upsert_incident,
)
from cxagent.web import schemas

MONDAY = dt.datetime(2024, 1, 1)


def draft(detected_at: dt.datetime = MONDAY, region: str = "SF") -> IncidentDraft:
    return IncidentDraft(
        metric="cx_score",
        slice={"region": region, "category": "grocery"},
        window_start=detected_at - dt.timedelta(hours=3),
        window_end=detected_at,
        detected_at=detected_at,
        severity="high",
        baseline=75.0,
        current=62.0,
        delta=-13.0,
        affected_orders=900,
        p_value=1e-8,
        q_value=1e-6,
        detector="ewma",
    )


def investigated(factory: sessionmaker[Session], causes: list[dict[str, Any]], **kw: Any) -> str:
    """An incident with a stored investigation ranking ``causes`` (in that order)."""
    inc, _ = upsert_incident(factory, draft(**kw))
    payload = {"investigation": {"causes": causes, "narrative": "..."}}
    save_analysis(factory, "incident", payload, incident_id=inc.id)
    return inc.id


SF_CAUSES = [
    {"cause": "batching_policy", "confidence": 0.979, "features": {"z": 4.86, "logged": 1.0}},
    {"cause": "prep_time_drift", "confidence": 0.806, "features": {"z": 1.68, "logged": 0.0}},
]


# --- the maths ---------------------------------------------------------------------------------


def test_the_vocabulary_is_the_investigations() -> None:
    from cxagent.hypotheses import CAUSES, NORMAL

    assert set(maths.CAUSES) == {*CAUSES, NORMAL}
    assert (*maths.CAUSES, "other") == maths.ACTUAL_CAUSES
    # the API's literals (spelled out for the type checker) are the same words
    assert get_args(schemas.Cause) == maths.CAUSES
    assert get_args(schemas.ActualCause) == maths.ACTUAL_CAUSES
    assert get_args(schemas.Verdict) == maths.VERDICTS


def test_wilson_interval_matches_the_textbook() -> None:
    lo, hi = wilson_interval(8, 10) or (0, 0)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Newcombe (1998), 8/10
    lo, hi = wilson_interval(0, 5) or (1, 1)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=1e-4)
    lo, hi = wilson_interval(5, 5) or (0, 0)
    assert hi == 1.0 and lo == pytest.approx(0.5655, abs=1e-4)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_detection_precision_overall_and_by_week() -> None:
    week2 = MONDAY + dt.timedelta(days=9)  # a Wednesday of the next week
    labels = [
        IncidentLabel("a", MONDAY, False),
        IncidentLabel("b", MONDAY + dt.timedelta(days=6, hours=23), True),  # Sunday: week 1
        IncidentLabel("c", week2, False),
        IncidentLabel("d", week2, False),
        IncidentLabel("e", week2, False),
    ]
    found = detection_precision(labels)
    assert (found["labelled"], found["true_positives"], found["false_positives"]) == (5, 4, 1)
    assert found["precision"] == pytest.approx(0.8)
    assert found["interval"] == pytest.approx(list(wilson_interval(4, 5) or ()))
    weeks = {w["week"]: w for w in found["by_week"]}
    assert list(weeks) == ["2024-01-01", "2024-01-08"]
    assert weeks["2024-01-01"]["precision"] == 0.5 and weeks["2024-01-08"]["precision"] == 1.0
    empty = detection_precision([])
    assert empty["precision"] is None and empty["interval"] is None and empty["by_week"] == []


def label(
    incident: str, cause: str, verdict: str, rank: int | None, p: float | None, **kw: Any
) -> CauseLabel:
    return CauseLabel(incident, kw.pop("at", MONDAY), cause, verdict, rank=rank, confidence=p, **kw)


def test_cause_accuracy_top1_brier_and_calibration_by_hand() -> None:
    week2 = MONDAY + dt.timedelta(days=7)
    labels = [
        label("a", "batching_policy", "confirmed", 1, 0.95),
        label("a", "prep_time_drift", "wrong", 2, 0.55, actual_cause="dasher_shortage"),
        label("b", "inventory_drop", "wrong", 1, 0.65, at=week2, actual_cause="other"),
        label("c", "prep_time_drift", "confirmed", 1, 0.85, at=week2),
        label("d", "dasher_shortage", "confirmed", None, None, at=week2),  # not stored
    ]
    found = cause_accuracy(labels)
    assert (found["labelled"], found["confirmed"], found["wrong"]) == (5, 3, 2)
    assert found["top1"]["incidents"] == 3 and found["top1"]["correct"] == 2
    assert found["top1"]["accuracy"] == pytest.approx(2 / 3)
    brier = (0.05**2 + 0.55**2 + 0.65**2 + 0.15**2) / 4
    assert found["with_confidence"] == 4 and found["brier"] == pytest.approx(brier)
    bins = {tuple(b["bin"]): b for b in found["calibration"]}
    assert [b["n"] for b in found["calibration"]] == [0, 0, 1, 1, 2]
    top = bins[(0.8, 1.0)]
    assert top["mean_confidence"] == pytest.approx(0.9) and top["confirmed_rate"] == 1.0
    assert top["interval"] == pytest.approx(list(wilson_interval(2, 2) or ()))
    assert bins[(0.0, 0.2)]["confirmed_rate"] is None and bins[(0.0, 0.2)]["interval"] is None
    ece = (1 * 0.55 + 1 * 0.65 + 2 * 0.1) / 4
    assert found["ece"] == pytest.approx(ece)
    assert found["actual_causes"] == {"dasher_shortage": 1, "other": 1}
    weeks = {w["week"]: w for w in found["by_week"]}
    assert weeks["2024-01-01"]["top1_accuracy"] == 1.0
    assert weeks["2024-01-08"]["top1_accuracy"] == 0.5 and weeks["2024-01-08"]["labelled"] == 3
    assert weeks["2024-01-08"]["brier"] == pytest.approx((0.65**2 + 0.15**2) / 2)


def test_calibration_edges_and_an_empty_table() -> None:
    table = calibration_table([0.0, 0.2, 0.999, 1.0], [False, True, True, True], bins=5)
    assert [row["n"] for row in table] == [1, 1, 0, 0, 2]  # 0.2 opens its bin; 1.0 is the last
    assert [row["n"] for row in calibration_table([], [])] == [0] * maths.BINS
    assert brier_score([], []) is None


# --- the recalibration --------------------------------------------------------------------------


def test_with_no_labels_the_recalibration_is_the_identity() -> None:
    fit = fit_recalibration([], [])
    assert fit == Recalibration() and fit.identity and fit.n == 0
    for p in (0.01, 0.3, 0.979):
        assert fit.apply(p) == p
    assert recalibrate([label("a", "normal_variance", "wrong", 1, 0.3)]).n == 0  # not the model's


def draw(rng: np.random.Generator, n: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Shown confidences skewed high, and outcomes from the miscalibration (a, b)."""
    p = rng.beta(4, 2, n)
    y = rng.random(n) < 1 / (1 + np.exp(-(a + b * logit(p))))
    return p, y


def test_many_labels_from_a_known_miscalibration_recover_it() -> None:
    rng = np.random.default_rng(7)
    p, y = draw(rng, 20_000, a=-0.8, b=0.6)  # overconfident: 0.9 shown is about 0.64 true
    fit = fit_recalibration(list(p), list(y))
    assert fit.n == 20_000
    assert fit.a == pytest.approx(-0.8, abs=0.08) and fit.b == pytest.approx(0.6, abs=0.06)
    assert abs(fit.a + 0.8) < 4 * fit.a_sd + 0.02 and fit.a_sd < 0.05
    truth = 1 / (1 + np.exp(-(-0.8 + 0.6 * logit(0.9))))
    assert fit.apply(0.9) == pytest.approx(truth, abs=0.02)
    # labels from a calibrated model leave it at the identity
    p, y = draw(rng, 20_000, a=0.0, b=1.0)
    calibrated = fit_recalibration(list(p), list(y))
    assert abs(calibrated.a) < 0.08 and abs(calibrated.b - 1) < 0.08


def test_a_few_labels_move_it_little_and_more_labels_move_it_further() -> None:
    rng = np.random.default_rng(11)
    grid = np.linspace(0.05, 0.95, 19)
    truth = Recalibration(a=-0.8, b=0.6)
    assert max(abs(truth.apply(q) - q) for q in grid) > 0.2  # what all the labels say
    gaps = []
    for n in (5, 50, 2000):
        fits = [fit_recalibration(*map(list, draw(rng, n, -0.8, 0.6))) for _ in range(30)]
        gaps.append(np.median([abs(f.b - 0.6) + abs(f.a + 0.8) for f in fits]))
        if n == 5:  # a handful: the shown confidences barely change
            moved = [max(abs(f.apply(q) - q) for q in grid) for f in fits]
            assert np.median(moved) < 0.05 and max(moved) < 0.15
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.15
    # five straight misses at 0.9 (a 1-in-100,000 run if it were calibrated) bring 0.9
    # down, but keep it well above even odds
    extreme = fit_recalibration([0.9] * 5, [False] * 5)
    assert 0.55 < extreme.apply(0.9) < 0.85


def test_recalibration_learns_from_the_shipped_models_confidence() -> None:
    labels = [
        label("a", "batching_policy", "wrong", 1, 0.7, model_confidence=0.95),
        label("b", "prep_time_drift", "confirmed", 1, 0.5, model_confidence=None),
        label("c", "normal_variance", "confirmed", 1, 0.4, model_confidence=0.4),
    ]
    assert maths.recalibration_labels(labels) == ([0.95], [False])


# --- the store ---------------------------------------------------------------------------------


def test_cause_verdicts_keep_what_was_shown_and_the_latest_wins(
    factory: sessionmaker[Session],
) -> None:
    inc = investigated(factory, SF_CAUSES)
    first = set_cause_feedback(
        factory, inc, cause="prep_time_drift", verdict="confirmed", actor="ana", note="prep up"
    )
    assert (first["rank"], first["confidence"], first["model_confidence"]) == (2, 0.806, 0.806)
    assert first["features"] == {"z": 1.68, "logged": 0.0} and first["actor"] == "ana"
    set_cause_feedback(
        factory,
        inc,
        cause="prep_time_drift",
        verdict="wrong",
        actual_cause="dasher_shortage",
        actor="bo",
    )
    set_cause_feedback(factory, inc, cause="batching_policy", verdict="confirmed", actor="bo")
    latest = cause_feedback(factory, inc)
    assert list(latest) == ["batching_policy", "prep_time_drift"]  # by rank
    prep = latest["prep_time_drift"]
    assert (prep["verdict"], prep["actual_cause"], prep["actor"]) == (
        "wrong",
        "dasher_shortage",
        "bo",
    )
    assert prep["note"] is None and len(cause_labels(factory)) == 2
    trail = [e for e in get_incident(factory, inc).events if e.action == "cause_feedback"]
    assert [(e.actor, e.detail["cause"]) for e in trail] == [
        ("ana", "prep_time_drift"),
        ("bo", "prep_time_drift"),
        ("bo", "batching_policy"),
    ]
    assert trail[0].detail["from"] is None and trail[0].note == "prep up"
    assert trail[1].detail["from"] == {"verdict": "confirmed", "actual_cause": None}
    assert trail[1].detail["to"] == {"verdict": "wrong", "actual_cause": "dasher_shortage"}
    assert get_incident(factory, inc).version == 1  # the incident row itself is untouched


def test_a_recalibrated_investigation_keeps_the_models_confidence(
    factory: sessionmaker[Session],
) -> None:
    causes = [{"cause": "batching_policy", "confidence": 0.6, "model_confidence": 0.9}]
    inc = investigated(factory, causes)
    stored = set_cause_feedback(factory, inc, cause="batching_policy", verdict="wrong", actor="x")
    assert (stored["confidence"], stored["model_confidence"]) == (0.6, 0.9)


def test_bad_cause_verdicts_are_refused_naming_the_field(factory: sessionmaker[Session]) -> None:
    inc = investigated(factory, SF_CAUSES)
    with pytest.raises(UnknownCauseError, match="ranked: batching_policy, prep_time_drift"):
        set_cause_feedback(factory, inc, cause="eta_model_bias", verdict="wrong", actor="x")
    with pytest.raises(NotFoundError, match="no incident 'inc-nope'"):
        set_cause_feedback(factory, "inc-nope", cause="batching_policy", verdict="wrong", actor="x")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"cause": "weather"}, InvalidFeedbackError, "cause"),
        ({"verdict": "maybe"}, InvalidFeedbackError, "verdict"),
        ({"actual_cause": "aliens"}, InvalidFeedbackError, "actual_cause"),
        ({"actual_cause": "batching_policy"}, ContradictoryFeedbackError, "actual_cause"),
        ({"verdict": "confirmed", "actual_cause": "other"}, ContradictoryFeedbackError, "actual"),
    ]
    for change, error, field in cases:
        args = {"cause": "batching_policy", "verdict": "wrong", **change}
        with pytest.raises(error) as caught:
            set_cause_feedback(factory, inc, actor="x", **args)
        assert getattr(caught.value, "field", "").startswith(field), change
    assert cause_feedback(factory, inc) == {}
    assert [e.action for e in get_incident(factory, inc).events] == ["created"]


def test_without_a_stored_investigation_any_cause_can_be_labelled(
    factory: sessionmaker[Session],
) -> None:
    inc, _ = upsert_incident(factory, draft())
    stored = set_cause_feedback(
        factory, inc.id, cause="dasher_shortage", verdict="confirmed", actor="x"
    )
    assert stored["rank"] is None and stored["confidence"] is None and stored["features"] is None
    assert stored_recalibration(factory) is None  # nothing the model showed to learn from


def test_the_report_and_the_recalibration_from_the_store(factory: sessionmaker[Session]) -> None:
    assert stored_recalibration(factory) is None
    empty = report(factory)
    assert empty["detection"]["labelled"] == 0 and empty["causes"]["labelled"] == 0
    assert empty["recalibration"]["n"] == 0 and empty["recalibration"]["b"] == 1.0
    a = investigated(factory, SF_CAUSES)
    b = investigated(
        factory,
        [{"cause": "inventory_drop", "confidence": 0.63}],
        detected_at=MONDAY + dt.timedelta(days=8),
        region="CHI",
    )
    label_incident(factory, a, false_positive=False, actor="x")
    label_incident(factory, b, false_positive=True, actor="x")
    set_cause_feedback(factory, a, cause="batching_policy", verdict="confirmed", actor="x")
    set_cause_feedback(factory, a, cause="prep_time_drift", verdict="confirmed", actor="x")
    set_cause_feedback(
        factory,
        b,
        cause="inventory_drop",
        verdict="wrong",
        actual_cause="normal_variance",
        actor="x",
    )
    assert [(i.incident_id, i.false_positive) for i in incident_labels(factory)] == [
        (a, False),
        (b, True),
    ]
    found = report(factory)
    assert found["detection"]["precision"] == 0.5
    assert [w["week"] for w in found["detection"]["by_week"]] == ["2024-01-01", "2024-01-08"]
    causes = found["causes"]
    assert causes["top1"]["incidents"] == 2 and causes["top1"]["accuracy"] == 0.5
    assert causes["brier"] == pytest.approx((0.021**2 + 0.194**2 + 0.63**2) / 3)
    assert causes["actual_causes"] == {"normal_variance": 1}
    fit = stored_recalibration(factory)
    assert fit is not None and fit.n == 3
    assert found["recalibration"] == fit.as_dict()
    assert abs(fit.a) < 0.3 and abs(fit.b - 1) < 0.3  # three labels: near the identity
    json.dumps(found)  # plain JSON


def test_a_missing_sqlite_store_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none' / 'cx.db'}"
    assert stored_recalibration(url) is None and not (tmp_path / "none").exists()
    assert stored_recalibration(None) is None


# --- the hook into investigations ---------------------------------------------------------------

BATCHED_SF = [{"cause": "batching_policy", "start": "2024-03-06T00:00", "scope": {"region": "SF"}}]


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import make_dataset

    out, _ = make_dataset(tmp_path_factory.mktemp("batched"), interventions=BATCHED_SF)
    return out


def test_investigations_apply_the_recalibration_after_the_shipped_model(batched: Path) -> None:
    from cxagent.engine.connection import connect
    from cxagent.rca.investigate import investigate_report, load_confidence_model, requested_report

    engine = connect(batched)
    report_ = requested_report(engine, {"region": "SF"}, dt.datetime(2024, 3, 6), baseline_days=2)
    plain = investigate_report(engine, report_, baseline_days=2, n_bootstrap=20)
    model = load_confidence_model()
    assert model is not None and plain.causes and plain.causes[0].cause == "batching_policy"
    d = plain.as_dict()
    assert "confidence_recalibration" not in d  # no feedback: the output is unchanged
    assert all("model_confidence" not in c for c in d["causes"])
    fit = Recalibration(a=-1.0, b=0.5, n=40)
    recal = investigate_report(engine, report_, baseline_days=2, n_bootstrap=20, recalibration=fit)
    for before, after in zip(plain.causes, recal.causes, strict=True):
        assert after.model_confidence == pytest.approx(before.confidence)
        assert after.model_confidence == pytest.approx(model(after.features))
        assert after.confidence == pytest.approx(fit.apply(before.confidence))
    d = recal.as_dict()
    assert d["confidence_recalibration"] == fit.as_dict()
    assert d["causes"][0]["model_confidence"] == round(plain.causes[0].confidence, 3)


# --- the command line ---------------------------------------------------------------------------


def run(*args: str) -> Any:
    result = CliRunner().invoke(app, ["feedback", *args], env={"COLUMNS": "200"})
    return result


def test_feedback_commands_label_and_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cx.db'}"
    factory = session_factory(url)
    inc = investigated(factory, SF_CAUSES)
    r = run("incident", inc, "--true-positive", "--note", "real", "--db", url, "--actor", "ana")
    assert r.exit_code == 0, r.output
    assert "labelled a true positive" in r.output
    assert get_incident(factory, inc).false_positive is False
    r = run("cause", inc, "batching_policy", "--confirmed", "--db", url, "--actor", "ana")
    assert r.exit_code == 0, r.output
    assert "batching_policy (ranked 1, confidence 0.98) marked confirmed" in r.output
    r = run("cause", inc, "prep_time_drift", "--wrong", "--actual", "dasher_shortage", "--db", url)
    assert r.exit_code == 0 and "actually dasher_shortage" in r.output
    latest = cause_feedback(factory, inc)
    assert latest["prep_time_drift"]["actual_cause"] == "dasher_shortage"
    r = run("report", "--json", "--db", url)
    assert r.exit_code == 0, r.output
    found = json.loads(r.stdout)
    assert found["detection"]["precision"] == 1.0
    assert found["causes"]["top1"]["accuracy"] == 1.0 and found["recalibration"]["n"] == 2
    r = run("report", "--db", url)
    assert r.exit_code == 0, r.output
    for text in ("Detection precision", "Top-1 cause accuracy", "Calibration", "Recalibration"):
        assert text in r.output, text
    assert "n = 2 labelled causes" in r.output and "2024-01-01" in r.output


def test_feedback_commands_refuse_bad_requests_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cxagent.db'}"
    inc = investigated(session_factory(url), SF_CAUSES)
    cases = [
        (["incident", inc, "--db", url], "--true-positive or --false-positive"),
        (["incident", "inc-nope", "--false-positive", "--db", url], "no incident 'inc-nope'"),
        (["cause", inc, "batching_policy", "--db", url], "--confirmed or --wrong"),
        (["cause", inc, "weather", "--wrong", "--db", url], "cause must be one of"),
        (["cause", inc, "eta_model_bias", "--wrong", "--db", url], "not a ranked cause"),
        (
            ["cause", inc, "batching_policy", "--confirmed", "--actual", "other", "--db", url],
            "actual",
        ),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.exit_code == 2 and message in r.output, (args, r.output)
    r = CliRunner().invoke(app, ["feedback", "report"], env={"CXAGENT_DB_URL": ""})
    assert r.exit_code == 2 and "--db" in r.output
    r = run("report", "--data", str(tmp_path))  # DATA/cxagent.db is the store above
    assert r.exit_code == 0 and "of 0 labelled incidents" in r.output


def test_cxagent_investigate_recalibrates_with_the_stores_feedback(
    batched: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cx.db'}"
    factory = session_factory(url)
    causes = [{"cause": "batching_policy", "confidence": 0.9}]
    for k in range(3):  # three wrong at 0.9: confidence should come down, a little
        inc = investigated(factory, causes, region=f"R{k}")
        set_cause_feedback(factory, inc, cause="batching_policy", verdict="wrong", actor="x")
    args = ["investigate", "--data", str(batched), "--json", "--db", url, "--bootstrap", "20"]
    args += ["--slice", "region=SF", "--since", "2024-03-06T00:00:00"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (found,) = json.loads(result.stdout)["incidents"]
    fit = stored_recalibration(url)
    assert fit is not None and found["confidence_recalibration"] == fit.as_dict()
    top = found["causes"][0]
    assert top["cause"] == "batching_policy"
    assert top["confidence"] == pytest.approx(fit.apply(top["model_confidence"]), abs=2e-3)
    assert top["confidence"] < top["model_confidence"]
