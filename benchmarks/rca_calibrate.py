"""Fit the root-cause confidence on one scenario suite (evaluate it on another).

    python benchmarks/rca_scenarios.py --first-seed 1000 --scenarios 360 \
        --background-changes 7 --out train.json
    python benchmarks/rca_calibrate.py train.json          # writes src/cxagent/rca/confidence.json
    python benchmarks/rca_scenarios.py --first-seed 2000    # reports ECE on unseen seeds

The training range's change logs hold seven changes that did nothing (one of each kind the
generator knows: a courier-app release, a store-hours sync from merchants and a substitution
picker among them), so that a logged change matching a cause is seen to be there by chance
too; with the benchmark's default three only the courier-app release matches a hypothesis.

Every cause ``investigate`` listed in the training suite is one example: its features (see
``FEATURE_SETS``) and whether it was a planted cause of what its incident is about. A
logistic regression with a small ridge penalty (so that a feature that separates the
examples perfectly does not run off to infinity) maps features to the probability of being
right: that is the confidence ``investigate`` shows (Platt-style calibration; Platt 1999,
Niculescu-Mizil and Caruana 2005).

Which feature set and penalty: chosen by 5-fold cross-validation on the training suite alone,
folds by scenario (a scenario's causes share its data), on the log loss of the held-out
causes; the cross-validated ECE is printed beside it. The evaluation suite is never looked at.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import statsmodels.api as sm

from cxagent.hypotheses import CAUSES
from cxagent.rca.investigate import CONFIDENCE_FILE, model_features

BASE = ("z", "share", "first", "rel_points", "logged", "n_causes", "after_days")
EVIDENCE = ("did_t", "has_did", "shap_share", "late_did_t")
PRIORS = tuple(f"is_{c}" for c in CAUSES)
RECOVERY = ("recovered_days",)
ALIGNMENT = ("change_step",)  # did the driver step at the logged change (rca.alignment)
ONSET = ("onset_step",)  # did the driver step where the regression starts (rca.alignment)
RECOVERY_BY_CAUSE = tuple(f"recovered_{c}" for c in CAUSES)  # investigate.model_features
ONSET_BY_CAUSE = tuple(f"onset_{c}" for c in CAUSES)  # investigate.model_features
STILL = ("logged_still",)  # a logged change its driver did not move at (model_features)
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "timeline": BASE,
    "timeline+contrast+shap": BASE + EVIDENCE,
    "timeline+contrast+shap+cause": BASE + EVIDENCE + PRIORS,
    "timeline+contrast+shap+cause+recovery": BASE + EVIDENCE + PRIORS + RECOVERY,
    "timeline+contrast+shap+cause+recovery+alignment": BASE
    + EVIDENCE
    + PRIORS
    + RECOVERY
    + ALIGNMENT,
    "timeline+contrast+shap+cause+onset": BASE + EVIDENCE + PRIORS + ONSET,
    "timeline+contrast+shap+cause+recovery+onset": BASE + EVIDENCE + PRIORS + RECOVERY + ONSET,
    "timeline+contrast+shap+cause+recovery_by_cause": BASE + EVIDENCE + PRIORS + RECOVERY_BY_CAUSE,
    "timeline+contrast+shap+cause+recovery_by_cause+onset": BASE
    + EVIDENCE
    + PRIORS
    + RECOVERY_BY_CAUSE
    + ONSET,
    "timeline+contrast+shap+cause+recovery+alignment+onset": BASE
    + EVIDENCE
    + PRIORS
    + RECOVERY
    + ALIGNMENT
    + ONSET,
    "timeline+contrast+shap+cause+recovery+onset_by_cause": BASE
    + EVIDENCE
    + PRIORS
    + RECOVERY
    + ONSET_BY_CAUSE,
    "timeline+contrast+shap+cause+recovery+alignment+onset_by_cause": BASE
    + EVIDENCE
    + PRIORS
    + RECOVERY
    + ALIGNMENT
    + ONSET_BY_CAUSE,
    "timeline+contrast+shap+cause+recovery+alignment+still+onset_by_cause": BASE
    + EVIDENCE
    + PRIORS
    + RECOVERY
    + ALIGNMENT
    + STILL
    + ONSET_BY_CAUSE,
}
RIDGES = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03)
FOLDS = 5


def _examples(suite: dict[str, Any]) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    feats, labels, groups = [], [], []
    for r in suite["rows"]:
        for p in r["predictions"]:
            f = dict(p["features"])
            f |= {f"is_{c}": float(p["cause"] == c) for c in CAUSES}
            feats.append(model_features(f))
            labels.append(float(p["label"]))
            groups.append(r["seed"])
    return feats, np.array(labels), np.array(groups)


def _matrix(feats: list[dict[str, float]], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[1.0, *(f.get(n, 0.0) for n in names)] for f in feats])


def _fit(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    model = sm.GLM(y, x, family=sm.families.Binomial())
    penalty = np.r_[0.0, np.full(x.shape[1] - 1, ridge)]  # the intercept is not penalised
    return np.asarray(model.fit_regularized(alpha=penalty, L1_wt=0.0).params, dtype=float)


def _prob(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x @ coef)))


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(
        sum(abs(p[idx == b].mean() - y[idx == b].mean()) * np.mean(idx == b) for b in set(idx))
    )


def cross_validate(
    feats: list[dict[str, float]], y: np.ndarray, groups: np.ndarray
) -> list[dict[str, Any]]:
    """Held-out log loss and ECE of every feature set and penalty, folds by scenario."""
    seeds = np.unique(groups)
    fold_of = dict(
        zip(seeds, np.random.default_rng(0).permutation(len(seeds)) % FOLDS, strict=True)
    )
    fold = np.array([fold_of[g] for g in groups])
    out = []
    for name, names in FEATURE_SETS.items():
        x = _matrix(feats, names)
        for ridge in RIDGES:
            p = np.empty(len(y))
            for k in range(FOLDS):
                test = fold == k
                p[test] = _prob(x[test], _fit(x[~test], y[~test], ridge))
            p = np.clip(p, 1e-6, 1 - 1e-6)
            loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            out.append({"features": name, "ridge": ridge, "log_loss": loss, "ece": _ece(p, y)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="JSON written by rca_scenarios.py --out")
    parser.add_argument("--out", type=Path, default=CONFIDENCE_FILE)
    args = parser.parse_args()
    suite = json.loads(args.suite.read_text())
    feats, y, groups = _examples(suite)
    if len(y) < 30 or len(set(y)) < 2:
        raise SystemExit(f"{args.suite}: too few labelled causes to calibrate ({len(y)})")
    scores = cross_validate(feats, y, groups)
    best = min(scores, key=lambda s: s["log_loss"])
    names = FEATURE_SETS[best["features"]]
    x = _matrix(feats, names)
    coef = _fit(x, y, best["ridge"])
    prob = _prob(x, coef)
    spec = {
        "features": list(names),
        "coef": [round(float(c), 6) for c in coef],
        "fitted_on": {
            "suite": suite["benchmark"],
            "seeds": suite["seeds"],
            "orders_per_day": suite["orders_per_day"],
            "causes": len(y),
            "positives": int(y.sum()),
            "date": dt.date.today().isoformat(),
        },
        "chosen_by_cross_validation": best,
        "cross_validation": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in scores
        ],
        "in_sample_brier": round(float(np.mean((prob - y) ** 2)), 4),
        "in_sample_ece": round(_ece(prob, y), 4),
    }
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(spec, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(spec, indent=2))


if __name__ == "__main__":
    main()
