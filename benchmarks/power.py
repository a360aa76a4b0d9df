"""Benchmark: experiment design figures, against statsmodels and against simulated experiments.

    python benchmarks/power.py [--data demo-data] [--seeds 30]

1. Sample sizes of ``cxagent.experiments.design`` against statsmodels' ``NormalIndPower`` on
   a grid of rates, effects, alphas, powers and allocation ratios (target: within 1%).
2. The demo's experiment plan (the top recommendation for the SF grocery incident) simulated
   in the scenario engine over ``--seeds`` assignment seeds, its 50% phase only, for its
   planned duration: how often the plan's go criterion (always-valid lower bound > 0) is met
   with the real fix (the plan promises at least its stated power at the expected effect) and
   with an A/A treatment (no fix: the false go rate, at most alpha / 2 for a one-sided read of
   a two-sided 95% interval), and how often the fixed-horizon interval read daily would have
   excluded zero in the A/A runs (the peeking problem the sequence avoids).

Prints JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import DEMO_SPEC, load_spec, parse_spec
from cxagent.engine.connection import connect
from cxagent.experiments.design import sample_size_means, sample_size_proportions
from cxagent.experiments.monitor import monitor
from cxagent.experiments.simulate import simulate_experiment
from cxagent.incidents import detect_incidents
from cxagent.rca.investigate import investigate_report
from cxagent.recommend.in_engine import engine_fix
from cxagent.recommend.planning import plan_for
from cxagent.recommend.recommend import recommend


def statsmodels_grid() -> dict[str, Any]:
    solver = NormalIndPower()
    worst = 0.0
    cases = 0
    for p, mde, alpha, power, ratio in itertools.product(
        (0.05, 0.2, 0.5, 0.8), (0.01, 0.03, -0.02), (0.05, 0.01), (0.8, 0.9), (1.0, 0.25)
    ):
        if not 0 < p + mde < 1:
            continue
        ours = sample_size_proportions(p, mde, alpha=alpha, power=power, ratio=ratio)
        h = proportion_effectsize(p + mde, p)
        theirs = solver.solve_power(effect_size=abs(h), alpha=alpha, power=power, ratio=ratio)
        worst = max(worst, abs(ours - theirs) / theirs)
        cases += 1
    for sd, mde, ratio in itertools.product((10.0, 30.0, 56.0), (1.0, 5.0), (1.0, 0.5)):
        ours = sample_size_means(sd, mde, ratio=ratio)
        theirs = solver.solve_power(effect_size=mde / sd, alpha=0.05, power=0.8, ratio=ratio)
        worst = max(worst, abs(ours - theirs) / theirs)
        cases += 1
    return {"cases": cases, "max_relative_difference": round(worst, 5)}


def demo_plan(data: Path) -> tuple[Any, Any, Any]:
    if not (data / "truth.json").exists():
        generate(load_spec(DEMO_SPEC), data, workers=2)
    truth = json.loads((data / "truth.json").read_text())
    engine = connect(data)
    report = [r for r in detect_incidents(data) if r.draft.slice.get("region") == "SF"][0]
    inv = investigate_report(engine, report)
    recs = recommend(engine, inv)
    spec = parse_spec(truth["spec"])
    fix = engine_fix(recs.top.action, truth, spec.end_time)
    return spec, plan_for(recs.frame, recs.top, incident_id=report.incident_id), fix


def simulated(spec: Any, plan: Any, fix: Any, seeds: int) -> dict[str, Any]:
    experiment = plan.phases[1]  # the powered 50% phase
    days = experiment.min_days
    longer = spec.model_copy(update={"days": spec.days + days + 1})
    out: dict[str, Any] = {"phase": experiment.name, "days": days}
    for label, aa in (("fix", False), ("aa", True)):
        goes, peeks, effects = [], [], []
        for seed in range(seeds):
            data = simulate_experiment(
                longer,
                fix,
                spec.end_time,
                phases=[(experiment.treated_share, days)],
                unit="region_x_window",
                window_hours=plan.context.window_hours,
                burn_in_minutes=plan.context.burn_in_minutes,
                seed=seed,
                aa=aa,
            )
            # the monitor reads phase 0 of the data as the plan's first phase: give it a plan
            # whose only phase is the experiment
            report = monitor(_only_experiment(plan), data)
            looks = report.phases[0].looks
            last = looks[-1].primary
            goes.append(last.always_valid.lower > 0)
            peeks.append(
                any(not (lk.primary.fixed.lower <= 0 <= lk.primary.fixed.upper) for lk in looks)
            )
            effects.append(last.estimate)
            print(
                json.dumps(
                    {"arm": label, "seed": seed, "go": goes[-1], "effect": round(last.estimate, 3)}
                ),
                file=sys.stderr,
                flush=True,
            )
        out[label] = {
            "runs": seeds,
            "go_rate": round(float(np.mean(goes)), 3),
            "fixed_interval_read_daily_excludes_zero": round(float(np.mean(peeks)), 3),
            "mean_effect": round(float(np.mean(effects)), 3),
        }
    out["planned_power_at_expected"] = round(plan.sequence_power_at_expected, 4)
    out["expected_effect"] = plan.primary.expected_effect
    return out


def _only_experiment(plan: Any) -> Any:
    return dataclasses.replace(plan, phases=(plan.phases[1],))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("demo-data"))
    ap.add_argument("--seeds", type=int, default=30)
    args = ap.parse_args()
    t = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "power", "statsmodels": statsmodels_grid()}
    spec, plan, fix = demo_plan(args.data)
    result["demo_plan"] = {
        "unit": plan.unit.unit,
        "mde": plan.mde,
        "experiment_days": plan.experiment_days,
        "design_effect": round(plan.power.design_effect, 3),
        "cuped_factor": round(plan.power.cuped_factor, 4),
    }
    result["simulated"] = simulated(spec, plan, fix, args.seeds)
    result["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
