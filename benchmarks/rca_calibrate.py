"""Fit the root-cause confidence on one scenario suite (evaluate it on another).

    python benchmarks/rca_scenarios.py --first-seed 1000 --out train.json
    python benchmarks/rca_calibrate.py train.json          # writes src/cxagent/rca/confidence.json
    python benchmarks/rca_scenarios.py --first-seed 2000    # reports ECE on unseen seeds

Every cause ``investigate`` listed in the training suite is one example: its features (impact
z-score, share of the late-rate change it explains, first or not, impact relative to the
first, a logged change that fits, how many causes stand, how many days the regression has
lasted) and whether it was a planted cause
of what its incident is about. A logistic regression with a small ridge penalty (so that a
feature that separates the examples perfectly does not run off to infinity) maps features to
the probability of being right: that is the confidence ``investigate`` shows (Platt-style
calibration; Platt 1999, Niculescu-Mizil and Caruana 2005).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import statsmodels.api as sm

from cxagent.rca.investigate import CONFIDENCE_FILE

FEATURES = ("z", "share", "first", "rel_points", "logged", "n_causes", "after_days")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="JSON written by rca_scenarios.py --out")
    parser.add_argument("--out", type=Path, default=CONFIDENCE_FILE)
    parser.add_argument("--ridge", type=float, default=0.01, help="L2 penalty per example")
    args = parser.parse_args()
    suite = json.loads(args.suite.read_text())
    preds = [p for r in suite["rows"] for p in r["predictions"]]
    if len(preds) < 30 or len({p["label"] for p in preds}) < 2:
        raise SystemExit(f"{args.suite}: too few labelled causes to calibrate ({len(preds)})")
    x = np.array([[1.0, *(p["features"].get(f, 0.0) for f in FEATURES)] for p in preds])
    y = np.array([float(p["label"]) for p in preds])
    model = sm.GLM(y, x, family=sm.families.Binomial())
    penalty = np.r_[0.0, np.full(len(FEATURES), args.ridge)]  # the intercept is not penalised
    fit = model.fit_regularized(alpha=penalty, L1_wt=0.0)
    coef = np.asarray(fit.params, dtype=float)
    prob = 1.0 / (1.0 + np.exp(-(x @ coef)))
    spec = {
        "features": list(FEATURES),
        "coef": [round(float(c), 6) for c in coef],
        "fitted_on": {
            "suite": suite["benchmark"],
            "seeds": suite["seeds"],
            "orders_per_day": suite["orders_per_day"],
            "causes": len(preds),
            "positives": int(y.sum()),
            "date": dt.date.today().isoformat(),
        },
        "in_sample_brier": round(float(np.mean((prob - y) ** 2)), 4),
    }
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(spec, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(spec, indent=2))


if __name__ == "__main__":
    main()
