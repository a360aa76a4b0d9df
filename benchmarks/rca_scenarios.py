"""Benchmark: root-cause analysis on generated scenarios whose causes are known.

    python benchmarks/rca_scenarios.py [--first-seed 1000] [--scenarios 60]
        [--orders-per-day 6000] [--background-changes 3] [--bootstrap 50] [--out FILE]
        [--work DIR]
    python benchmarks/rca_scenarios.py --merge PART.json ... [--out FILE]
    python benchmarks/rca_scenarios.py --rescore SUITE.json [--out FILE]

A suite of scenarios is drawn from seeds (so another seed range is another, unseen suite):
six in ten plant one cause (each of the five causes, at region, region + category or category
scope, magnitude 0.3 to 1.5, logged or not), two in ten plant two causes whose scopes
overlap, two in ten plant nothing (controls). Each scenario runs 28 days, the causes start
on day 24. For each, ``cxagent`` detects incidents and investigates them; an incident counts
for a planted cause when its slice agrees with the cause's scope (a store's slice by the
store's region and category) and its window overlaps the cause's days; a cause's top-1 is
read off its most severe such incident (a missed detection counts as wrong). A planted cause that cost its whole scope less than a CX point
(truth.json's exact counterfactual) left nothing to find: such scenarios are counted but not
scored. Every scenario's change log also holds ``--background-changes`` changes that did
nothing (an app release, a ranking model, a synced store-hours table, a substitution picker
...: the generator cycles through seven kinds, so with the default 3 only the courier app
release speaks to a hypothesis; with 7 or more each of courier supply, merchant prep and
inventory gets one that did nothing). Prints JSON:

- top-1 accuracy on single-cause scenarios (a missed detection counts as wrong);
- the share of two-cause scenarios with both causes among the top 2 of their incidents;
- expected calibration error (10 equal-width bins) of every listed cause's confidence against
  "it is a planted cause of what the incident is about", and of the top cause's alone; beside
  it, the ECE a perfectly calibrated model would show on the same confidences (median and
  95th percentile of simulated labels): on a suite's few hundred causes that floor is
  0.03-0.06;
- false-alarm rate on controls: any cause other than normal_variance above 0.5 confidence;
- 95% Wilson intervals of those three shares (suites are small: read them before a gain);
- seconds per scenario, and every scenario's row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import parse_spec
from cxagent.engine.connection import connect
from cxagent.incidents import detect_incidents
from cxagent.incidents.pipeline import store_info
from cxagent.rca.investigate import Investigation, investigate_report, load_confidence_model
from cxagent.stats.proportions import wilson_interval

CAUSES = (
    "batching_policy",
    "prep_time_drift",
    "dasher_shortage",
    "inventory_drop",
    "eta_model_bias",
)
REGIONS = ("SF", "NYC", "LA")
CATEGORIES = ("grocery", "convenience", "retail")
START = dt.date(2024, 3, 4)
DAYS, CAUSE_DAY = 28, 24
MAGNITUDES = (0.3, 0.5, 0.8, 1.0, 1.5)
MATERIAL_CX = -1.0  # a planted cause counts when it cost its whole scope at least a CX point


def _scope(cause: str, rng: np.random.Generator) -> dict[str, str]:
    region, category = str(rng.choice(REGIONS)), str(rng.choice(CATEGORIES))
    if cause == "dasher_shortage":  # the courier pool is regional
        return {"region": region}
    kind = int(rng.integers(3))
    return [{"region": region}, {"region": region, "category": category}, {"category": category}][
        kind
    ]


def _intervention(cause: str, scope: dict[str, str], rng: np.random.Generator) -> dict[str, Any]:
    start = dt.datetime.combine(START + dt.timedelta(days=CAUSE_DAY), dt.time())
    return {
        "cause": cause,
        "start": start.isoformat(),
        "scope": scope,
        "magnitude": float(rng.choice(MAGNITUDES)),
        "logged": bool(rng.random() < 0.5),
    }


BACKGROUND_CHANGES = 3


def scenario_spec(
    seed: int, orders_per_day: int, background_changes: int = BACKGROUND_CHANGES
) -> dict[str, Any]:
    """The scenario of ``seed``: its kind from the seed's last digit, the rest drawn."""
    rng = np.random.default_rng(seed)
    kind = seed % 10
    interventions = []
    if kind < 6:
        cause = CAUSES[(seed // 10 + kind) % len(CAUSES)]
        interventions.append(_intervention(cause, _scope(cause, rng), rng))
    elif kind < 8:
        first, second = rng.choice(len(CAUSES), size=2, replace=False)
        region = str(rng.choice(REGIONS))
        for c in (CAUSES[first], CAUSES[second]):
            scope = {"region": region}
            if c != "dasher_shortage" and rng.random() < 0.5:
                scope["category"] = str(rng.choice(CATEGORIES))
            interventions.append(_intervention(c, scope, rng))
    return {
        "name": f"rca-{seed}",
        "seed": seed,
        "start": START.isoformat(),
        "days": DAYS,
        "orders_per_day": orders_per_day,
        "regions": list(REGIONS),
        "background_changes": background_changes,
        "interventions": interventions,
    }


def _relevant(inv: Investigation, iv: dict[str, Any], stores: dict[Any, dict[str, Any]]) -> bool:
    """The incident's slice agrees with the cause's scope and its window overlaps the
    cause's days (from its start to the end of the data). A store's slice names no region
    or category: the store's own (``stores``: store id -> region, category) stand in."""
    draft = inv.report.draft
    where = {**stores.get(draft.slice.get("store_id"), {}), **draft.slice}
    agrees = all(where.get(k, v) == v for k, v in iv["scope"].items())
    return agrees and draft.window_end > dt.datetime.fromisoformat(iv["start"])


def run_scenario(
    seed: int,
    orders_per_day: int,
    bootstrap: int,
    work: Path,
    background_changes: int = BACKGROUND_CHANGES,
) -> dict[str, Any]:
    spec = scenario_spec(seed, orders_per_day, background_changes)
    parsed = parse_spec(spec)
    root = work / f"s{seed}"
    truth_file = root / "truth.json"
    truth = json.loads(truth_file.read_text()) if truth_file.exists() else {}
    if truth.get("spec") != json.loads(parsed.model_dump_json()):  # not kept from a run (--work)
        truth = generate(parsed, root, workers=2, overwrite=True)
    (work / f"s{seed}.db").unlink(missing_ok=True)
    t = time.perf_counter()
    reports = detect_incidents(root, store_url=f"sqlite:///{work / f's{seed}.db'}")
    engine = connect(root)
    found = [investigate_report(engine, r, n_bootstrap=bootstrap) for r in reports]
    seconds = time.perf_counter() - t
    stores = store_info(engine, frozenset({"region", "category"}))
    planted = spec["interventions"]
    effects = [iv["effect"]["scope"]["delta"]["cx_score"] for iv in truth["interventions"]]
    row: dict[str, Any] = {
        "seed": seed,
        "planted": [
            {k: iv[k] for k in ("cause", "scope", "magnitude", "logged")} for iv in planted
        ],
        "incidents": [
            {
                "slice": inv.slice,
                "window_start": inv.report.draft.window_start.isoformat(),
                "severity": inv.report.draft.severity,
                # which planted causes this incident is about
                "relevant": [_relevant(inv, iv, stores) for iv in planted],
                "causes": [
                    {
                        "cause": c.cause,
                        "confidence": round(c.confidence, 4),
                        "features": {k: round(v, 4) for k, v in c.features.items()},
                    }
                    for c in inv.causes
                ],
            }
            for inv in found
        ],
        "seconds": round(seconds, 2),
        "scope_cx_delta": [round(e, 2) for e in effects],
        "material": all(e <= MATERIAL_CX for e in effects),
    }
    return score_row(row)


def score_row(row: dict[str, Any]) -> dict[str, Any]:
    """Label every listed cause and score the scenario from its incidents' ranked causes."""
    planted = row["planted"]
    # every cause listed, labelled: is it a planted cause of an intervention the incident is
    # about (on a spurious incident nothing is)
    row["predictions"] = [
        {
            "cause": c["cause"],
            "confidence": c["confidence"],
            "label": any(
                rel and iv["cause"] == c["cause"]
                for rel, iv in zip(inc["relevant"], planted, strict=True)
            ),
            "features": c["features"],
        }
        for inc in row["incidents"]
        for c in inc["causes"]
        if c["cause"] != "normal_variance"
    ]
    for key in ("false_alarm", "top1", "correct", "confidence", "both_in_top2"):
        row.pop(key, None)
    if not planted:
        row["false_alarm"] = any(p["confidence"] > 0.5 for p in row["predictions"])
        return row
    per_cause = []
    for k in range(len(planted)):
        hits = [inc for inc in row["incidents"] if inc["relevant"][k] and inc["causes"]]
        hits.sort(key=lambda inc: inc["severity"] != "high")
        per_cause.append(hits)
    if len(planted) == 1:
        hits = per_cause[0]
        top = hits[0]["causes"][0] if hits else None
        row["top1"] = top["cause"] if top else None
        row["correct"] = bool(top and top["cause"] == planted[0]["cause"])
        row["confidence"] = top["confidence"] if top else None
    else:
        top2 = {c["cause"] for hits in per_cause for inc in hits for c in inc["causes"][:2]}
        row["both_in_top2"] = all(iv["cause"] in top2 for iv in planted)
    return row


def expected_calibration_error(conf: list[float], correct: list[bool], bins: int = 10) -> float:
    c, y = np.asarray(conf, dtype=float), np.asarray(correct, dtype=float)
    if c.size == 0:
        return float("nan")
    idx = np.minimum((c * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(c[idx == b].mean() - y[idx == b].mean()) * np.mean(idx == b)
            for b in range(bins)
            if np.any(idx == b)
        )
    )


def calibrated_ece(conf: list[float], draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """The ECE a perfectly calibrated model would show on these confidences (labels drawn
    as Bernoulli(confidence)): its median and 95th percentile. Binning noise alone makes
    ECE positive, and on a few hundred causes it is of the size of the 0.05 target."""
    c = np.asarray(conf, dtype=float)
    if c.size == 0:
        return {}
    rng = np.random.default_rng(seed)
    sims = [expected_calibration_error(list(c), list(rng.random(c.size) < c)) for _ in range(draws)]
    return {
        "median": round(float(np.median(sims)), 3),
        "p95": round(float(np.quantile(sims, 0.95)), 3),
    }


def summarise(
    rows: list[dict[str, Any]],
    seeds: list[int],
    orders_per_day: int,
    background_changes: int = BACKGROUND_CHANGES,
) -> dict[str, Any]:
    single = [r for r in rows if "correct" in r and r["material"]]
    pairs = [r for r in rows if "both_in_top2" in r and r["material"]]
    immaterial = [r for r in rows if r["planted"] and not r["material"]]
    controls = [r for r in rows if "false_alarm" in r]
    scored = [r for r in single if r["confidence"] is not None]
    preds = [p for r in rows for p in r["predictions"]]
    return {
        "benchmark": "rca_scenarios",
        "seeds": seeds,
        "orders_per_day": orders_per_day,
        "background_changes": background_changes,
        "days": DAYS,
        "scenarios": {
            "single": len(single),
            "pairs": len(pairs),
            "controls": len(controls),
            "immaterial_not_scored": len(immaterial),
        },
        "top1_accuracy": round(float(np.mean([r["correct"] for r in single])), 3)
        if single
        else None,
        "both_in_top2": round(float(np.mean([r["both_in_top2"] for r in pairs])), 3)
        if pairs
        else None,
        "ece_all_causes": round(
            expected_calibration_error(
                [p["confidence"] for p in preds], [p["label"] for p in preds]
            ),
            3,
        ),
        "ece_top_cause": round(
            expected_calibration_error(
                [r["confidence"] for r in scored], [r["correct"] for r in scored]
            ),
            3,
        ),
        "ece_all_causes_if_calibrated": calibrated_ece([p["confidence"] for p in preds]),
        "causes_listed": len(preds),
        "confidence_calibrated": load_confidence_model() is not None,
        "controls_without_false_alarm": round(
            1 - float(np.mean([r["false_alarm"] for r in controls])), 3
        )
        if controls
        else None,
        # 95% Wilson intervals of the three shares: a suite of 60 scenarios holds ~35 single
        # causes and 12 controls, so one scenario moves a share by 3 to 8 points
        "intervals_95": {
            name: [round(v, 3) for v in iv]
            for name, (k, n) in {
                "top1_accuracy": (sum(r["correct"] for r in single), len(single)),
                "both_in_top2": (sum(r["both_in_top2"] for r in pairs), len(pairs)),
                "controls_without_false_alarm": (
                    sum(not r["false_alarm"] for r in controls),
                    len(controls),
                ),
            }.items()
            if (iv := wilson_interval(k, n)) is not None
        },
        "mean_seconds_detect_and_investigate": round(
            float(np.mean([r["seconds"] for r in rows])), 2
        ),
        "rows": rows,
    }


def rescore(suite: dict[str, Any]) -> dict[str, Any]:
    """The suite's summary with every listed cause's confidence recomputed by the current
    confidence model from the features the run recorded, and each incident's causes ranked
    by it, as ``investigate`` ranks them (both are functions of the features alone, so this
    equals re-running the suite with the new model)."""
    model = load_confidence_model()
    if model is None:
        raise SystemExit("no confidence model to rescore with")
    for r in suite["rows"]:
        for inc in r["incidents"]:
            for c in inc["causes"]:
                if c["cause"] != "normal_variance":
                    c["confidence"] = round(model(c["features"]), 4)
            inc["causes"].sort(key=lambda c: -c["confidence"])
        score_row(r)
    return summarise(
        suite["rows"],
        suite["seeds"],
        suite["orders_per_day"],
        suite.get("background_changes", BACKGROUND_CHANGES),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--scenarios", type=int, default=60)
    parser.add_argument("--orders-per-day", type=int, default=6000)
    parser.add_argument(
        "--background-changes",
        type=int,
        default=BACKGROUND_CHANGES,
        help="do-nothing changes in each scenario's change log",
    )
    parser.add_argument("--bootstrap", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the generated scenarios in this folder and reuse those already there",
    )
    parser.add_argument(
        "--rescore",
        type=Path,
        default=None,
        help="a suite's JSON: recompute its confidences with the shipped model, no re-run",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="suites' JSON (parts of one seed range run side by side): one summary of their rows",
    )
    args = parser.parse_args()
    if args.merge is not None:
        parts = [json.loads(f.read_text()) for f in args.merge]
        rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["seed"])
        seeds = [rows[0]["seed"], rows[-1]["seed"]] if rows else []
        result = summarise(
            rows,
            seeds,
            parts[0]["orders_per_day"],
            parts[0].get("background_changes", BACKGROUND_CHANGES),
        )
    elif args.rescore is not None:
        result = rescore(json.loads(args.rescore.read_text()))
    else:
        rows = []
        with tempfile.TemporaryDirectory(prefix="cx-rca-") as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            for seed in range(args.first_seed, args.first_seed + args.scenarios):
                rows.append(
                    run_scenario(
                        seed, args.orders_per_day, args.bootstrap, work, args.background_changes
                    )
                )
                # progress, one row a scenario
                print(json.dumps(rows[-1]), flush=True, file=sys.stderr)
        seeds = [args.first_seed, args.first_seed + args.scenarios - 1]
        result = summarise(rows, seeds, args.orders_per_day, args.background_changes)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
