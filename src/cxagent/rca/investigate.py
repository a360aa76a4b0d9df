"""Root-cause investigation of detected incidents: evidence per hypothesis, ranked causes.

For each incident the slice under investigation is the incident's slice, narrowed to the
daypart of its first top slice when that slice only adds a daypart (SF + grocery -> its
dinner). Its orders from ``baseline_days`` before the incident window to the window's end are
read (``orders.order_frame``) and every hypothesis gets evidence from the data:

- impact: the late-rate change the mechanism explains (``timeline.late_impacts``, with a
  day-bootstrap interval) and the CX points that is, through the on-time component; for
  inventory_drop, the change of the bad-item-line rate through item accuracy;
- driver: the mechanism's own quantity before and after (batched share, prep minutes, courier
  wait of unbatched orders, promised minutes, bad item lines);
- change log: a logged change in scope shortly before the regression whose wording matches
  (``changelog.match_changes``), and for ETA bias a new ETA model version in the orders.

A hypothesis whose impact interval lies above zero is a cause; the others are ruled out with
the reason; one whose fields the data lacks is "not testable". With no cause standing, the
answer is normal_variance: monitor, no action needed.

``confidence`` is the probability that a listed cause is right, from a logistic model of its
features (impact z-score, share of the change, rank, a fitting logged change) fitted on the
scenario benchmark (``benchmarks/rca_calibrate.py``, shipped as ``confidence.json``); without
that file it falls back to the day-bootstrap share of replicates with a positive impact, and
the JSON says ``confidence_calibrated: false``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pandas as pd

from cxagent.engine.connection import Engine, connect
from cxagent.errors import CXAgentError
from cxagent.hypotheses import CAUSES, NORMAL, REGISTRY, normal_variance
from cxagent.incidents import windows
from cxagent.incidents.effects import slopes
from cxagent.incidents.feed import IncidentReport
from cxagent.incidents.pipeline import detect_incidents
from cxagent.rca.alignment import MOVED, driver_steps, onset_steps
from cxagent.rca.changelog import ChangeMatch, match_changes
from cxagent.rca.contrast import SliceContrast, slice_contrast
from cxagent.rca.feedback import Recalibration
from cxagent.rca.orders import check_slice, order_frame
from cxagent.rca.shift import ShiftAttribution, attribute_shift
from cxagent.rca.timeline import late_impacts
from cxagent.rca.timing import LaggedCorrelation, hourly_anomalies, lagged_correlations
from cxagent.store.repository import IncidentDraft

# per-order features the lateness model may use, and the hypothesis each one speaks for
SHAP_FEATURES: dict[str, str | None] = {
    feature: name for name, h in REGISTRY.items() for feature in h.shap_features
} | {"distance_mi": None, "item_count": None, "hour": None}


@dataclass
class Cause:
    cause: str
    confidence: float
    impact: float  # CX points the slice lost to it (positive = lost)
    impact_ci: tuple[float, float]
    evidence: list[str] = field(default_factory=list)
    change: ChangeMatch | None = None
    features: dict[str, float] = field(default_factory=dict)  # what confidence is computed from
    model_confidence: float | None = None  # the shipped model's, when recalibrated after it

    def as_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "confidence": round(self.confidence, 3),
            "impact": round(-self.impact, 2),
            "impact_interval": [round(-self.impact_ci[1], 2), round(-self.impact_ci[0], 2)],
            "evidence": self.evidence,
            "change_id": self.change.change_id if self.change else None,
            "features": {k: round(v, 4) for k, v in self.features.items()},
        } | (
            {"model_confidence": round(self.model_confidence, 3)}
            if self.model_confidence is not None
            else {}
        )


@dataclass
class Investigation:
    report: IncidentReport
    slice: dict[str, Any]
    causes: list[Cause]
    ruled_out: list[dict[str, str]]
    not_testable: list[str]
    narrative: str
    contrast: SliceContrast | None = None
    shift: ShiftAttribution | None = None
    timing: dict[str, LaggedCorrelation] = field(default_factory=dict)
    frame: pd.DataFrame | None = field(default=None, repr=False)  # the slice's orders
    recalibration: Recalibration | None = None  # applied after the shipped model, if any

    def as_dict(self) -> dict[str, Any]:
        d = self.report.as_dict()
        d["investigated_slice"] = self.slice
        d["contrast"] = _contrast_dict(self.contrast)
        d["shift_attribution"] = _shift_dict(self.shift)
        d["timing"] = {
            cause: {
                "correlation": round(t.correlation, 4),
                "lag_hours": t.lag_hours,
                "hours": t.hours,
            }
            for cause, t in self.timing.items()
        }
        d["causes"] = [c.as_dict() for c in self.causes]
        d["ruled_out"] = self.ruled_out
        d["not_testable"] = self.not_testable
        d["narrative"] = self.narrative
        d["confidence_calibrated"] = load_confidence_model() is not None
        if self.recalibration is not None:  # only with engineers' feedback in the store
            d["confidence_recalibration"] = self.recalibration.as_dict()
        return d


def investigation_slice(report: IncidentReport) -> dict[str, Any]:
    """The incident's slice, or its first top slice when that only adds a daypart."""
    base = dict(report.draft.slice)
    if report.draft.top_slices:
        top = report.draft.top_slices[0]["slice"]
        if set(top) - set(base) == {"daypart"} and all(top.get(k) == v for k, v in base.items()):
            return dict(top)
    return base


CONFIDENCE_FILE = Path(__file__).with_name("confidence.json")


def model_features(features: dict[str, float]) -> dict[str, float]:
    """What the confidence model may read: a cause's features and, per cause, the days since
    the regression ended (``recovered_<cause>``: a policy or model change lasts until it is
    rolled back, a supply shock or a prep swing may pass on its own) and its driver's step
    at the regression's start (``onset_<cause>``: the drivers differ in how cleanly they
    step - couriers on shift barely move from day to day, the batched share swings with
    load), and whether a matched logged change left its driver where it was
    (``logged_still``)."""
    recovered = features.get("recovered_days", 0.0)
    onset = features.get("onset_step", 0.0)
    # a logged change whose driver did not move when it took effect (``logged_still``): every
    # change log holds changes that did nothing, so such a match is weak evidence
    still = features.get("logged", 0.0) * float(features.get("change_step", 0.0) < MOVED)
    per_cause = {"logged_still": still}
    for c in CAUSES:
        is_c = features.get(f"is_{c}", 0.0)
        per_cause[f"recovered_{c}"] = recovered * is_c
        per_cause[f"onset_{c}"] = onset * is_c
    return features | per_cause


@functools.cache
def load_confidence_model(
    path: Path = CONFIDENCE_FILE,
) -> Callable[[dict[str, float]], float] | None:
    """The calibrated confidence: a logistic model of "this cause is a planted one" on the
    cause's features, fitted on the scenario benchmark (``benchmarks/rca_calibrate.py``);
    None until one is fitted. Read once per process and path."""
    if not path.exists():
        return None
    spec = json.loads(path.read_text())
    names, coef = spec["features"], np.asarray(spec["coef"], dtype=float)

    def confidence(features: dict[str, float]) -> float:
        inputs = model_features(features)
        x = np.array([1.0, *(inputs.get(n, 0.0) for n in names)])
        return float(1.0 / (1.0 + np.exp(-float(x @ coef))))

    return confidence


def _shift(frame: pd.DataFrame, missing: set[str], seed: int) -> ShiftAttribution | None:
    """TreeSHAP attribution of the late rate's change to the orders' features, or None when
    the slice is too small or has no lateness to explain."""
    delivered = frame[frame["delivered"]]
    usable = [f for f in SHAP_FEATURES if f not in missing and delivered[f].notna().any()]
    if not usable:
        return None
    try:
        return attribute_shift(
            delivered,
            outcome="late",
            features=usable,
            seed=seed,
            n_bootstrap=100,
            max_rows=30_000,
            max_explained=4_000,
        )
    except ValueError:  # too few orders in a period, or lateness constant
        return None


def _shap_by_cause(shift: ShiftAttribution | None) -> dict[str, tuple[float, float, float]]:
    """Per hypothesis: SHAP contribution to the late rate's change (summed over its
    features) with its interval's bounds (summed too, so conservative), in rate points."""
    out: dict[str, tuple[float, float, float]] = {}
    if shift is None:
        return out
    for fs in shift.features:
        cause = SHAP_FEATURES.get(fs.feature)
        if cause is None:
            continue
        c, lo, hi = out.get(cause, (0.0, 0.0, 0.0))
        out[cause] = (c + fs.contribution, lo + fs.ci_low, hi + fs.ci_high)
    return out


def _shap_line(
    cause: str, shap: dict[str, tuple[float, float, float]], shift: ShiftAttribution
) -> str:
    c, lo, hi = shap[cause]
    names = ", ".join(f for f, h in SHAP_FEATURES.items() if h == cause)
    return (
        f"SHAP shift attribution ({names}): {c:+.1%} of the {shift.predicted_change:+.1%} "
        f"predicted late-rate change (90% interval {lo:+.1%} to {hi:+.1%}; "
        f"model AUC {shift.model_auc:.2f}; associational)"
    )


def investigate_report(
    engine: Engine,
    report: IncidentReport,
    *,
    baseline_days: int = 14,
    n_bootstrap: int = 100,
    seed: int = 0,
    data_end: dt.datetime | None = None,
    change_log: pd.DataFrame | None = None,
    recalibration: Recalibration | None = None,
) -> Investigation:
    """Evidence and ranked causes for one detected incident. ``data_end`` (``_data_end``)
    and ``change_log`` (``_change_log``) are the same for every incident of a dataset:
    read here unless given. ``recalibration`` (``store.feedback.stored_recalibration``: the
    engineers' confirmed and wrong causes) is applied after the shipped confidence model;
    None leaves the model's confidence as it is."""
    draft = report.draft
    where = investigation_slice(report)
    start = draft.window_start - dt.timedelta(days=baseline_days)
    if data_end is None:
        data_end = _data_end(engine)
    if change_log is None:
        change_log = _change_log(engine)
    frame = order_frame(engine, where, start, draft.window_end, outcomes=True)
    frame["after"] = frame["order_time"] >= draft.window_start
    missing = set(frame.attrs.get("missing", []))
    impacts = {
        m.mechanism: m
        for m in late_impacts(frame, missing=missing, n_bootstrap=n_bootstrap, seed=seed)
    }
    for name, hypothesis in REGISTRY.items():
        if hypothesis.own_impact is not None:  # an outcome other than lateness
            impacts[name] = hypothesis.own_impact(frame, n_bootstrap, seed)
    untestable = {name for name in CAUSES if not impacts[name].testable}
    contrast = slice_contrast(
        engine, where, draft.window_start, start, draft.window_end, missing=untestable
    )
    shift = _shift(frame, missing, seed)
    shap = _shap_by_cause(shift)
    hourly = hourly_anomalies(frame, missing=untestable)
    timing = lagged_correlations(hourly)
    per_rate = slopes()  # CX points per unit of the late rate, of the item-issue rate
    slope = {
        name: per_rate["on_time" if h.outcome == "late" else "item_accuracy"]
        for name, h in REGISTRY.items()
    }
    changes = (
        match_changes(
            change_log, where, draft.window_start, first_window_end=_first_window_end(draft)
        )
        if engine.has("change_events")
        else []
    )
    steps = driver_steps(hourly, changes)
    onsets = onset_steps(hourly, draft.window_start)
    delivered = frame[frame["delivered"]]
    periods = (delivered[~delivered["after"]], delivered[delivered["after"]])
    causes, ruled_out, not_testable = [], [], []
    for name in CAUSES:
        imp = impacts[name]
        if not imp.testable:
            not_testable.append(name)
            continue
        driver = REGISTRY[name].driver_line(*periods)
        did = contrast.drivers.get(name) if contrast else None
        if not (imp.ci_low > 0):
            reason = (
                f"its effect is within noise: {imp.late_rate_change:+.1%} "
                f"(90% interval {imp.ci_low:+.1%} to {imp.ci_high:+.1%})"
                + (f"; {driver}" if driver else "")
            )
            ruled_out.append({"cause": name, "reason": reason})
            continue
        step = steps.get(name)  # the change whose driver moved most, when one was tested
        change = (
            step.change
            if step
            else next((c for c in changes if c.candidate and name in c.hypotheses), None)
        )
        evidence = [
            f"undoing it removes {imp.late_rate_change:.1%} of late rate (90% interval "
            f"{imp.ci_low:.1%} to {imp.ci_high:.1%})"
            if REGISTRY[name].outcome == "late"
            else f"bad item lines up {imp.late_rate_change:.2%} (90% interval "
            f"{imp.ci_low:.2%} to {imp.ci_high:.2%})"
        ]
        if driver:
            evidence.append(driver)
        if did and contrast:
            evidence.append(did.describe(contrast.comparison))
        if shift is not None and name in shap:
            evidence.append(_shap_line(name, shap, shift))
        if name in timing:
            evidence.append(timing[name].describe())
        if change:
            evidence.append(
                f"logged change {change.change_id} '{change.name}' in scope, "
                + (
                    f"{change.lead_hours:.0f} h before the regression"
                    if change.lead_hours >= 0
                    else f"{-change.lead_hours:.0f} h into the window the regression starts in"
                )
            )
        if step:
            evidence.append(step.describe())
        if name in onsets:
            evidence.append(onsets[name].describe())
        points = slope[name] * imp.late_rate_change
        ci = (slope[name] * imp.ci_low, slope[name] * imp.ci_high)
        se = max((imp.ci_high - imp.ci_low) / 3.29, 1e-9)  # a 90% interval spans 3.29 sd
        share = imp.share if np.isfinite(imp.share) else 1.0
        shap_share = (
            shap[name][0] / shift.predicted_change
            if shift is not None and name in shap and shift.predicted_change > 0
            else 0.0
        )
        feats = {
            "z": float(min(imp.late_rate_change / se, 20.0)),
            "share": float(np.clip(share, -1.0, 2.0)),
            "points": float(points),
            "logged": float(change is not None),
            "support": float(imp.p_positive),
            "did_t": float(np.clip(did.t, -10.0, 10.0)) if did else 0.0,
            "has_did": float(did is not None),
            "shap_share": float(np.clip(shap_share, -1.0, 2.0)),
            "lag_corr": timing[name].correlation if name in timing else 0.0,
            # did its driver step when the logged change took effect (0: no change to test)
            "change_step": step.score if step else 0.0,
            # did its driver step where the regression starts, against its steps at earlier
            # times (0: too little history)
            "onset_step": onsets[name].score if name in onsets else 0.0,
        }
        feats |= {f"is_{other}": float(other == name) for other in CAUSES}  # per-cause priors
        causes.append(Cause(name, imp.p_positive, points, ci, evidence, change, feats))
    causes.sort(key=lambda c: -c.impact)
    late_did = contrast.drivers.get("late") if contrast else None
    for rank, c in enumerate(causes):
        c.features["first"] = float(rank == 0)
        c.features["rel_points"] = c.impact / max(causes[0].impact, 1e-9)
        c.features["n_causes"] = float(len(causes))
        # how long the regression has lasted: a planted change persists, a bad evening passes
        c.features["after_days"] = (draft.window_end - draft.window_start).total_seconds() / 86400
        # and whether it is over: days from its last window to the end of the data (a
        # regression that recovered on its own is more often a passing shock)
        c.features["recovered_days"] = max((data_end - draft.window_end).total_seconds(), 0) / 86400
        # whether the slice got worse than comparable slices at all
        c.features["late_did_t"] = float(np.clip(late_did.t, -10.0, 10.0)) if late_did else 0.0
    confidence_model = load_confidence_model()
    if confidence_model is not None:
        for c in causes:
            c.confidence = confidence_model(c.features)
            if recalibration is not None:
                c.model_confidence = c.confidence
                c.confidence = recalibration.apply(c.confidence)
        causes.sort(key=lambda c: -c.confidence)  # most probable first
    narrative = _narrative(report, where, causes)

    def result(listed: list[Cause], text: str) -> Investigation:
        return Investigation(
            report,
            where,
            listed,
            ruled_out,
            not_testable,
            text,
            contrast=contrast,
            shift=shift,
            timing=timing,
            frame=frame,
            recalibration=recalibration if confidence_model is not None and causes else None,
        )

    if not causes and not ruled_out:
        narrative = (
            f"{_label(where)}: none of the hypotheses can be tested on this data "
            f"(it lacks the fields of {', '.join(not_testable)})."
        )
        return result([], narrative)
    if not causes:
        ruled = [r["cause"] for r in ruled_out]
        sure = normal_variance.confidence(impacts[c].p_positive for c in ruled)
        causes_out = [Cause(NORMAL, sure, 0.0, (0.0, 0.0), [normal_variance.evidence(ruled)])]
        return result(causes_out, narrative)
    return result(causes, narrative)


def _change_log(engine: Engine) -> pd.DataFrame:
    """The logged changes (no rows when the dataset has no change log)."""
    if not engine.has("change_events"):
        return pd.DataFrame()
    return engine.con.to_pyarrow(engine.table("change_events")).to_pandas()


def _first_window_end(draft: IncidentDraft) -> dt.datetime:
    """End of the detection window the regression starts in: a change that took effect
    before it may have started the regression (windows are dayparts, up to eight hours)."""
    start = np.datetime64(draft.window_start.replace(tzinfo=None), "h")
    end = windows.window_end(windows.window_ids(np.array([start])))[0]
    return pd.Timestamp(end).to_pydatetime()


def _data_end(engine: Engine) -> dt.datetime:
    """The end of the last hour with orders."""
    o = engine.table("orders")
    last = engine.con.to_pyarrow(o.aggregate(last=o.order_time.max())).to_pylist()[0]["last"]
    return pd.Timestamp(last).floor("h").to_pydatetime() + dt.timedelta(hours=1)


def _contrast_dict(contrast: SliceContrast | None) -> dict[str, Any] | None:
    if contrast is None:
        return None
    return {
        "comparison": contrast.comparison,
        "skipped": contrast.skipped,
        "drivers": {
            name: {
                "measure": c.label,
                "effect": round(c.result.effect, 5),
                "ci": [round(c.result.ci_low, 5), round(c.result.ci_high, 5)],
                "p_value": c.result.p_value,
                "pretrend_p": c.result.pretrend_p,
                "placebo_p": c.result.placebo_p,
                "treated_stores": c.result.n_treated,
                "stores": c.result.n_units,
            }
            for name, c in contrast.drivers.items()
        },
    }


def _shift_dict(shift: ShiftAttribution | None) -> dict[str, Any] | None:
    if shift is None:
        return None
    return {
        "outcome": shift.outcome,
        "observed_change": round(shift.observed_change, 5),
        "predicted_change": round(shift.predicted_change, 5),
        "model_auc": round(shift.model_auc, 4),
        "features": [
            {
                "feature": f.feature,
                "hypothesis": SHAP_FEATURES.get(f.feature),
                "contribution": round(f.contribution, 5),
                "interval": [round(f.ci_low, 5), round(f.ci_high, 5)],
            }
            for f in shift.features
        ],
    }


def _label(where: dict[str, Any]) -> str:
    return " + ".join(str(v) for v in where.values()) or "all orders"


def _narrative(report: IncidentReport, where: dict[str, Any], causes: list[Cause]) -> str:
    d = report.draft
    head = (  # the score the incident was raised on is its own slice's
        f"{_label(dict(d.slice))}: CX Score {d.baseline:.1f} -> {d.current:.1f} since "
        f"{d.window_start:%b %d %H:%M}."
    )
    if where != dict(d.slice):
        head += f" Investigated where it concentrates: {_label(where)}."
    if d.delta >= 0:
        head += " The score did not fall: nothing to explain."
        if not causes:
            return head
        rest = ", ".join(f"{c.cause} (about {c.impact:.1f} points)" for c in causes)
        return head + f" Mechanisms that still cost points: {rest}."
    if not causes:
        return head + " No hypothesis explains it beyond noise: monitor, no action needed."
    first = causes[0]
    text = f" Most likely cause: {first.cause} (about {first.impact:.1f} CX points; {first.evidence[0]}"
    text += f"; {first.evidence[1]})." if len(first.evidence) > 1 else ")."
    if first.change:
        text += f" It follows logged change {first.change.change_id} ({first.change.name})."
    if len(causes) > 1:
        rest = ", ".join(f"{c.cause} (about {c.impact:.1f} points)" for c in causes[1:])
        text += f" Secondary: {rest}."
    return head + text


def requested_report(
    engine: Engine,
    where: dict[str, Any],
    since: dt.datetime,
    until: dt.datetime | None = None,
    *,
    baseline_days: int = 14,
) -> IncidentReport:
    """An incident the engineer names instead of detection: slice ``where`` since ``since``
    (to ``until``, default the end of the data), with its CX Score before and after, summed
    from the slice's order facts on the engine (no need for the whole cube)."""
    from cxagent.engine.facts import daypart_of, order_facts
    from cxagent.metrics.definitions import STAT_FIELDS, CXStats

    check_slice(where)
    f = order_facts(engine)
    cond = f.hour >= ibis.literal(since - dt.timedelta(days=baseline_days))
    if until is not None:
        cond &= f.hour < ibis.literal(until)
    for key, value in where.items():
        cond &= (daypart_of(f.hour) if key == "daypart" else f[key]) == ibis.literal(value)
    f = f.filter(cond)
    sums = f.group_by(after=f.hour >= ibis.literal(since)).aggregate(
        last=f.hour.max(), **{s: f[s].sum() for s in STAT_FIELDS}
    )
    parts = {bool(r["after"]): r for r in engine.con.to_pyarrow(sums).to_pylist()}
    if set(parts) != {False, True}:
        raise CXAgentError(
            f"since: {since} leaves no orders of {where} before or after it in this dataset"
        )
    end = until or parts[True]["last"] + dt.timedelta(hours=1)

    def score(part: dict[str, Any]) -> float:
        return CXStats(**{s: float(part[s] or 0.0) for s in STAT_FIELDS}).metrics()["cx_score"]

    before, after = parts[False], parts[True]
    was, now = score(before), score(after)
    label = " + ".join(f"{k}={v}" for k, v in where.items()) or "all"
    draft = IncidentDraft(
        metric="cx_score",
        slice=dict(where),
        window_start=since,
        window_end=end,
        detected_at=end,
        severity="low",
        baseline=round(was, 3),
        current=round(now, 3),
        delta=round(now - was, 3),
        affected_orders=int(after["orders"] or 0),
        p_value=float("nan"),
        q_value=float("nan"),
        detector="requested",
    )
    return IncidentReport(draft=draft, components={}, label=label, impact=0.0)


def investigate_reports(
    engine: Engine,
    reports: Iterable[IncidentReport],
    *,
    n_bootstrap: int = 100,
    recalibration: Recalibration | None = None,
) -> list[Investigation]:
    """Investigate each report (pass an iterable wrapped in a progress bar to show one); the
    end of the data and the change log are read once for all of them (with the first).
    ``recalibration``: see ``investigate_report``."""
    found: list[Investigation] = []
    shared: tuple[dt.datetime, pd.DataFrame] | None = None
    for report in reports:
        if shared is None:
            shared = (_data_end(engine), _change_log(engine))
        data_end, change_log = shared
        found.append(
            investigate_report(
                engine,
                report,
                n_bootstrap=n_bootstrap,
                data_end=data_end,
                change_log=change_log,
                recalibration=recalibration,
            )
        )
    return found


def investigate(
    data_dir: Path | str, *, store_url: str | None = None, n_bootstrap: int = 100
) -> list[Investigation]:
    """Detect incidents in the dataset, then investigate each one (confidences recalibrated
    by the store's cause feedback when it holds any)."""
    from cxagent.store.db import default_url
    from cxagent.store.feedback import stored_recalibration

    reports = detect_incidents(data_dir, store_url=store_url)
    recalibration = stored_recalibration(store_url or default_url(data_dir))
    return investigate_reports(
        connect(data_dir), reports, n_bootstrap=n_bootstrap, recalibration=recalibration
    )
