"""What the engineers' feedback says about the agent: pure computation, no I/O.

Two kinds of label come back from the people who act on incidents (the store keeps them,
``cxagent.store.feedback``):

- an incident is a **true or a false positive** (``Incident.false_positive``): detection
  precision, TP / (TP + FP), with a Wilson score interval, overall and by week of detection;
- a ranked cause is **confirmed or wrong** (optionally naming the actual cause): top-1 cause
  accuracy (the first-ranked cause confirmed), the calibration table (shown confidence in
  bins against the confirmed rate, with counts and Wilson intervals), the Brier score, and
  the same by week of detection.

The confirmed causes also recalibrate the shipped confidence model (``rca/confidence.json``):
``p' = sigmoid(a + b * logit(p))`` with ``(a, b)`` the maximum a posteriori fit under a
Gaussian prior centred on the identity (``a = 0, b = 1``, standard deviation ``PRIOR_SD``
each), so a handful of labels barely moves it and many labels dominate. Formulas and the
choice of prior: docs/feedback.md.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxagent import hypotheses
from cxagent.stats.proportions import wilson_interval

# the causes an investigation ranks (``hypotheses.CAUSES`` and ``NORMAL``), and what an
# engineer may name as the actual cause besides them
CAUSES = (*hypotheses.CAUSES, hypotheses.NORMAL)
ACTUAL_CAUSES = (*CAUSES, "other")
VERDICTS = ("confirmed", "wrong")
NORMAL = hypotheses.NORMAL

PRIOR_SD = 0.3  # of a and of b around the identity; see docs/feedback.md
BINS = 5  # equal-width confidence bins of the calibration table
EPS = 1e-4  # confidences are clipped to [EPS, 1 - EPS] before the logit


@dataclass(frozen=True)
class IncidentLabel:
    """An incident labelled a true or a false positive."""

    incident_id: str
    detected_at: dt.datetime
    false_positive: bool


@dataclass(frozen=True)
class CauseLabel:
    """The latest verdict on one ranked cause of one incident, with what the agent showed:
    the cause's rank (1 = first), its confidence, and the shipped model's confidence before
    any recalibration (the same number when none was applied); None when the investigation
    was not stored."""

    incident_id: str
    detected_at: dt.datetime
    cause: str
    verdict: str
    actual_cause: str | None = None
    rank: int | None = None
    confidence: float | None = None
    model_confidence: float | None = None

    @property
    def confirmed(self) -> bool:
        return self.verdict == "confirmed"


def week_of(t: dt.datetime | dt.date) -> str:
    """The ISO date of the Monday starting ``t``'s week."""
    day = t.date() if isinstance(t, dt.datetime) else t
    return (day - dt.timedelta(days=day.weekday())).isoformat()


def _proportion(successes: int, n: int) -> dict[str, Any]:
    interval = wilson_interval(successes, n)
    return {
        "n": n,
        "successes": successes,
        "rate": successes / n if n else None,
        "interval": list(interval) if interval else None,
    }


# --- detection precision -------------------------------------------------------------------------


def detection_precision(labels: Iterable[IncidentLabel]) -> dict[str, Any]:
    """Precision of detection from the labelled incidents: overall and by week of detection,
    each with its Wilson 95% interval."""
    rows = list(labels)

    def summary(group: Sequence[IncidentLabel]) -> dict[str, Any]:
        tp = sum(not r.false_positive for r in group)
        p = _proportion(tp, len(group))
        return {
            "labelled": len(group),
            "true_positives": tp,
            "false_positives": len(group) - tp,
            "precision": p["rate"],
            "interval": p["interval"],
        }

    weeks: dict[str, list[IncidentLabel]] = defaultdict(list)
    for r in rows:
        weeks[week_of(r.detected_at)].append(r)
    return {
        **summary(rows),
        "by_week": [{"week": w, **summary(weeks[w])} for w in sorted(weeks)],
    }


# --- cause accuracy and calibration --------------------------------------------------------------


def brier_score(confidences: Sequence[float], outcomes: Sequence[bool]) -> float | None:
    """Mean squared difference between the confidence shown and the outcome (1 confirmed,
    0 wrong); None without labels. 0 is perfect; always saying 0.5 scores 0.25."""
    if not confidences:
        return None
    p = np.asarray(confidences, dtype=float)
    y = np.asarray(outcomes, dtype=float)
    return float(np.mean((p - y) ** 2))


def calibration_table(
    confidences: Sequence[float], outcomes: Sequence[bool], bins: int = BINS
) -> list[dict[str, Any]]:
    """Shown confidence in ``bins`` equal-width bins against the confirmed rate: each bin's
    range, count, mean confidence, confirmed count and rate with its Wilson interval (every
    bin listed, empty ones with n = 0)."""
    p = np.asarray(confidences, dtype=float)
    y = np.asarray(outcomes, dtype=bool)
    which = np.minimum((p * bins).astype(int), bins - 1) if len(p) else np.array([], dtype=int)
    table = []
    for k in range(bins):
        inside = which == k
        n = int(inside.sum())
        confirmed = int(y[inside].sum())
        prop = _proportion(confirmed, n)
        table.append(
            {
                "bin": [k / bins, (k + 1) / bins],
                "n": n,
                "mean_confidence": float(p[inside].mean()) if n else None,
                "confirmed": confirmed,
                "confirmed_rate": prop["rate"],
                "interval": prop["interval"],
            }
        )
    return table


def expected_calibration_error(table: Sequence[dict[str, Any]]) -> float | None:
    """Count-weighted mean of |mean confidence - confirmed rate| over the bins."""
    total = sum(row["n"] for row in table)
    if not total:
        return None
    return float(
        sum(
            row["n"] * abs(row["mean_confidence"] - row["confirmed_rate"])
            for row in table
            if row["n"]
        )
        / total
    )


def _cause_summary(group: Sequence[CauseLabel], bins: int) -> dict[str, Any]:
    confirmed = sum(r.confirmed for r in group)
    top = [r for r in group if r.rank == 1]
    top_ok = sum(r.confirmed for r in top)
    shown = [r for r in group if r.confidence is not None]
    confidences = [float(r.confidence) for r in shown if r.confidence is not None]
    outcomes = [r.confirmed for r in shown]
    return {
        "labelled": len(group),
        "confirmed": confirmed,
        "wrong": len(group) - confirmed,
        "confirmed_rate": confirmed / len(group) if group else None,
        "top1": {
            "incidents": len(top),
            "correct": top_ok,
            "accuracy": top_ok / len(top) if top else None,
            "interval": list(iv) if (iv := wilson_interval(top_ok, len(top))) else None,
        },
        "with_confidence": len(shown),
        "brier": brier_score(confidences, outcomes),
        "calibration": calibration_table(confidences, outcomes, bins),
    }


def cause_accuracy(labels: Iterable[CauseLabel], bins: int = BINS) -> dict[str, Any]:
    """Top-1 accuracy (the first-ranked cause confirmed, over incidents whose first cause is
    labelled), the calibration table and Brier score of the shown confidence, what the
    wrong ones actually were; overall and by week of detection."""
    rows = list(labels)
    overall = _cause_summary(rows, bins)
    overall["ece"] = expected_calibration_error(overall["calibration"])
    overall["actual_causes"] = dict(
        Counter(r.actual_cause for r in rows if not r.confirmed and r.actual_cause).most_common()
    )
    weeks: dict[str, list[CauseLabel]] = defaultdict(list)
    for r in rows:
        weeks[week_of(r.detected_at)].append(r)
    by_week = []
    for w in sorted(weeks):
        s = _cause_summary(weeks[w], bins)
        by_week.append(
            {
                "week": w,
                "labelled": s["labelled"],
                "confirmed": s["confirmed"],
                "top1_incidents": s["top1"]["incidents"],
                "top1_correct": s["top1"]["correct"],
                "top1_accuracy": s["top1"]["accuracy"],
                "brier": s["brier"],
            }
        )
    overall["by_week"] = by_week
    return overall


# --- recalibration -------------------------------------------------------------------------------


def logit(p: float | np.ndarray) -> Any:
    q = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(q / (1 - q))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free
    return out


@dataclass(frozen=True)
class Recalibration:
    """``p' = sigmoid(a + b logit(p))`` applied after the shipped confidence model, fitted on
    ``n`` labelled causes (the identity when n = 0); ``a_sd``, ``b_sd`` are the posterior
    standard deviations (Laplace approximation)."""

    a: float = 0.0
    b: float = 1.0
    n: int = 0
    prior_sd: float = PRIOR_SD
    a_sd: float = PRIOR_SD
    b_sd: float = PRIOR_SD

    @property
    def identity(self) -> bool:
        return self.a == 0.0 and self.b == 1.0

    def apply(self, p: float) -> float:
        """The recalibrated confidence of a shipped confidence ``p``."""
        if self.identity:
            return float(p)
        return float(_sigmoid(np.asarray(self.a + self.b * logit(p))))

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": round(self.a, 4),
            "b": round(self.b, 4),
            "n": self.n,
            "prior_sd": self.prior_sd,
            "a_sd": round(self.a_sd, 4),
            "b_sd": round(self.b_sd, 4),
        }


def fit_recalibration(
    confidences: Sequence[float],
    outcomes: Sequence[bool],
    *,
    prior_sd: float = PRIOR_SD,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> Recalibration:
    """MAP fit of ``y ~ Bernoulli(sigmoid(a + b logit(p)))`` with independent Gaussian priors
    ``a ~ N(0, prior_sd²)``, ``b ~ N(1, prior_sd²)``, by Newton's method with step halving
    (the log posterior is strictly concave, so the maximum is unique). No labels: the
    identity."""
    if len(confidences) != len(outcomes):
        raise ValueError("confidences and outcomes must have the same length")
    if prior_sd <= 0:
        raise ValueError("prior_sd must be positive")
    n = len(confidences)
    if n == 0:
        return Recalibration(prior_sd=prior_sd, a_sd=prior_sd, b_sd=prior_sd)
    x = np.column_stack([np.ones(n), logit(np.asarray(confidences, dtype=float))])
    y = np.asarray(outcomes, dtype=float)
    centre = np.array([0.0, 1.0])
    precision = 1.0 / prior_sd**2

    def objective(theta: np.ndarray) -> float:
        eta = x @ theta
        loglik = float(y @ eta - np.logaddexp(0.0, eta).sum())
        return loglik - 0.5 * precision * float((theta - centre) @ (theta - centre))

    theta = centre.copy()
    current = objective(theta)
    for _ in range(max_iter):
        mu = _sigmoid(x @ theta)
        grad = x.T @ (y - mu) - precision * (theta - centre)
        hess = (x * (mu * (1 - mu))[:, None]).T @ x + precision * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while True:
            proposal = theta + scale * step
            value = objective(proposal)
            if value >= current or scale < 1e-6:
                break
            scale /= 2
        theta, previous, current = proposal, current, value
        if np.max(np.abs(scale * step)) < tol or abs(current - previous) < tol:
            break
    mu = _sigmoid(x @ theta)
    hess = (x * (mu * (1 - mu))[:, None]).T @ x + precision * np.eye(2)
    cov = np.linalg.inv(hess)
    return Recalibration(
        a=float(theta[0]),
        b=float(theta[1]),
        n=n,
        prior_sd=prior_sd,
        a_sd=float(math.sqrt(cov[0, 0])),
        b_sd=float(math.sqrt(cov[1, 1])),
    )


def recalibration_labels(labels: Iterable[CauseLabel]) -> tuple[list[float], list[bool]]:
    """What the recalibration learns from: the shipped model's confidence of each labelled
    cause and whether it was confirmed. normal_variance is left out (its confidence is not
    the model's but one minus the best mechanism's bootstrap support), and so are causes
    without a stored confidence."""
    pairs = [
        (float(r.model_confidence), r.confirmed)
        for r in labels
        if r.cause != NORMAL and r.model_confidence is not None
    ]
    return [p for p, _ in pairs], [y for _, y in pairs]


def recalibrate(labels: Iterable[CauseLabel], *, prior_sd: float = PRIOR_SD) -> Recalibration:
    """The recalibration the labels support (the identity without usable labels)."""
    confidences, outcomes = recalibration_labels(labels)
    return fit_recalibration(confidences, outcomes, prior_sd=prior_sd)


# --- the report ----------------------------------------------------------------------------------


def feedback_report(
    incidents: Iterable[IncidentLabel],
    causes: Iterable[CauseLabel],
    *,
    bins: int = BINS,
    prior_sd: float = PRIOR_SD,
) -> dict[str, Any]:
    """Detection precision, cause accuracy and calibration, and the recalibration, as plain
    JSON-able data."""
    cause_rows = list(causes)
    return {
        "detection": detection_precision(incidents),
        "causes": cause_accuracy(cause_rows, bins),
        "recalibration": recalibrate(cause_rows, prior_sd=prior_sd).as_dict(),
    }
