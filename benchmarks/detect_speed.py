"""Benchmark: detector speed on the product path (hourly slice rate series), with a sanity check.

    python benchmarks/detect_speed.py [--series 2500] [--columns 800] [--hours 24]

Seeded synthetic ``RateObs``: ``series`` slice series of ``columns`` hourly columns, trials
per hour from a log-normal volume per slice (a few orders to thousands) times a daily cycle,
beta-binomial rates (intra-hour correlation 0.002), and a planted 1.5x step in 10% of the
series in the last half. Per detector (registered defaults):

- ``scan_seconds``: ``scan`` over all columns (offline: the online pass plus change points);
- ``fit_seconds``: ``fit`` on all but the last ``hours`` columns; ``update_ms_per_hour``:
  then ``update`` one column at a time (the product's hourly run);
- sanity from the scan: share of planted series with a change point within 12 columns of
  the step, and share of the other series with any change point.

BOCPD also reports the largest posterior mass dropped by its run-length truncation. One
process; the machine's other jobs add noise, so re-run when in doubt. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np

from cxagent.detect import RateObs, get_detector


def synthetic(series: int, columns: int, seed: int) -> tuple[RateObs, np.ndarray]:
    """Rates with a planted step (the column, or -1) per series."""
    rng = np.random.default_rng(seed)
    volume = rng.lognormal(3.5, 1.3, size=(series, 1))
    daily = 1 + 0.6 * np.sin(2 * np.pi * (np.arange(columns) % 24) / 24)
    trials = rng.poisson(volume * daily[None, :])
    step = np.where(rng.random(series) < 0.1, rng.integers(columns // 2, columns - 24, series), -1)
    base = rng.uniform(0.03, 0.15, size=(series, 1))
    rate = base * np.where((step[:, None] >= 0) & (np.arange(columns) >= step[:, None]), 1.5, 1)
    k = (1 - 0.002) / 0.002  # beta-binomial: the hour's own rate varies
    rate = rng.beta(rate * k, (1 - rate) * k)
    successes = rng.binomial(trials, rate)
    return RateObs(successes.astype(float), trials.astype(float)), step


def run(name: str, obs: RateObs, step: np.ndarray, hours: int) -> dict[str, Any]:
    started = time.perf_counter()
    detector = get_detector(name)
    result = detector.scan(obs)
    scan_seconds = time.perf_counter() - started
    pruned = getattr(detector, "pruned_mass_", None)
    t = obs.shape[1]
    started = time.perf_counter()
    online = get_detector(name).fit(obs.columns(0, t - hours))
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for j in range(t - hours, t):
        online.update(obs.columns(j, j + 1))
    update_ms = 1000 * (time.perf_counter() - started) / hours
    planted = step >= 0
    found = np.array(
        [
            cps.size > 0 and bool(np.min(np.abs(cps - s)) <= 12)
            for cps, s in zip(result.change_points, step, strict=True)
        ]
    )
    any_point = np.array([cps.size > 0 for cps in result.change_points])
    report = {
        "scan_seconds": round(scan_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "update_ms_per_hour": round(update_ms, 1),
        "planted_found": round(float(np.mean(found[planted])), 3),
        "others_with_change_point": round(float(np.mean(any_point[~planted])), 3),
    }
    if pruned is not None:
        report["max_pruned_mass"] = round(float(np.max(pruned)), 4)
        report["median_pruned_mass"] = round(float(np.median(pruned)), 4)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2500)
    parser.add_argument("--columns", type=int, default=800)
    parser.add_argument("--hours", type=int, default=24, help="columns updated one at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detectors", nargs="+", default=["zscore", "ewma", "bocpd"])
    args = parser.parse_args()
    obs, step = synthetic(args.series, args.columns, args.seed)
    report: dict[str, Any] = {
        "data": {
            "series": args.series,
            "columns": args.columns,
            "kind": "RateObs",
            "planted": int(np.sum(step >= 0)),
            "median_trials_per_hour": float(np.median(obs.trials)),
            "seed": args.seed,
        },
        "detectors": {name: run(name, obs, step, args.hours) for name in args.detectors},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
