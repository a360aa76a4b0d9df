"""Benchmark: Numenta Anomaly Benchmark v1.1, standard profile, on the 35 NAB files.

    python benchmarks/nab.py --data ../shared/bench/cpd/nab [--method bocpd-trend]

Scoring as ../shared/bench/README.md defines it (Lavin and Ahmad, "Evaluating real-time
anomaly detection algorithms: the Numenta Anomaly Benchmark", IEEE ICMLA 2015), written from
that definition: the first 15% of a file (at most 750 rows) is probationary and not scored;
a detection inside a labelled window earns ``A_TP * sigma(-(right - i + 1) / width) /
sigma(-1)`` with ``sigma(x) = 2 / (1 + exp(5 x)) - 1`` and only a window's best (earliest)
detection counts; a window without one costs ``A_FN``; a detection outside every window
costs ``A_FP * sigma(d)``, ``d`` its distance past the previous window's right edge over that
window's width minus one (3, i.e. -1 after scaling, when no window precedes it). The corpus
score is normalised so that detecting nothing scores 0 and a detection at every window's left
edge scores 100.

NAB is an online benchmark: each detector is fitted on the probationary rows and then sees
one row at a time (``update`` never looks ahead). A detection is the first row of each alarm
episode, an alarm being a p-value at or below ``ALPHA`` = 0.001 (the z-score and EWMA
default); one fixed configuration per method, nothing tuned. Prints JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cxagent.detect import MeanObs, get_detector

ALPHA = 0.001
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "bocpd-trend": ("bocpd", {"trend": True}),  # the TCPD recommendation, online truncation
    "bocpd-level": ("bocpd", {}),
    "zscore": ("zscore", {}),
    "ewma": ("ewma", {}),
}
Window = tuple[int, int]  # first and last row, inclusive


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: 0.987 at a window's left edge (-1), 0 at its right edge (0)."""
    return -1.0 if position >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_length(n_rows: int) -> float:
    return min(math.floor(0.15 * n_rows), 0.15 * 5000)


def score_file(
    detections: list[int], windows: list[Window], n_rows: int, cost: dict[str, float]
) -> tuple[float, int]:
    """Raw score of one file and its number of scored windows (any row after probation)."""
    probation = probation_length(n_rows)
    scored = [w for w in windows if w[1] >= probation]
    credit = {w: -cost["fnWeight"] for w in scored}
    false_positives = 0.0
    for i in sorted(set(detections)):
        if i < probation:
            continue
        inside = [w for w in scored if w[0] <= i <= w[1]]
        if inside:
            left, right = inside[0]
            reward = scaled_sigmoid(-(right - i + 1) / (right - left + 1)) / scaled_sigmoid(-1.0)
            credit[inside[0]] = max(credit[inside[0]], reward * cost["tpWeight"])
            continue
        before = [w for w in windows if w[1] < i]
        distance = 3.0
        if before:
            left, right = before[-1]
            distance = abs(right - i) / (right - left)
        false_positives += scaled_sigmoid(distance) * cost["fpWeight"]
    return sum(credit.values()) + false_positives, len(scored)


def normalised(raw: float, n_windows: int, cost: dict[str, float]) -> float:
    """100 (raw - null) / (perfect - null): null misses every window, perfect hits each edge."""
    null, perfect = -cost["fnWeight"] * n_windows, cost["tpWeight"] * n_windows
    return 100.0 * (raw - null) / (perfect - null)


def load_file(path: Path) -> tuple[list[datetime], np.ndarray]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in rows]
    return stamps, np.array([float(r["value"]) for r in rows])


def detect(method: str, values: np.ndarray) -> list[int]:
    """Onsets of alarm episodes, fitting on the probationary rows and updating row by row."""
    name, params = METHODS[method]
    history = int(probation_length(values.size))
    detector = get_detector(name, **params).fit(MeanObs(values[:history]))
    step = detector.update(MeanObs(values[history:]))
    alarm = step.p_value[0] <= ALPHA
    onset = alarm & ~np.concatenate([[False], alarm[:-1]])
    return [history + int(i) for i in np.flatnonzero(onset)]


def evaluate(method: str, data: Path, profile: str) -> dict[str, Any]:
    cost = json.loads((data / "config" / "profiles.json").read_text())[profile]["CostMatrix"]
    windows = json.loads((data / "labels" / "combined_windows.json").read_text())
    per_file: dict[str, dict[str, Any]] = {}
    total_raw, total_windows = 0.0, 0
    for key in sorted(windows):
        stamps, values = load_file(data / "data" / key)
        row = {stamp: i for i, stamp in enumerate(stamps)}
        limits = [
            (row[datetime.fromisoformat(a)], row[datetime.fromisoformat(b)])
            for a, b in windows[key]
        ]
        detections = detect(method, values)
        raw, n_windows = score_file(detections, limits, values.size, cost)
        total_raw, total_windows = total_raw + raw, total_windows + n_windows
        per_file[key] = {"raw": round(raw, 3), "windows": n_windows, "detections": len(detections)}
    return {
        "score": round(normalised(total_raw, total_windows, cost), 1),
        "windows": total_windows,
        "per_file": per_file,
    }


def published(data: Path, profile: str) -> dict[str, float]:
    with (data / "published_scores_dev.csv").open() as fh:
        return {r["detector"]: float(r[profile]) for r in csv.DictReader(fh) if r[profile]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the nab folder")
    parser.add_argument("--method", default="bocpd-trend", choices=sorted(METHODS))
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--no-compare", action="store_true", help="skip the other methods")
    args = parser.parse_args()
    started = time.perf_counter()
    result = evaluate(args.method, args.data, args.profile)
    report: dict[str, Any] = {
        "dataset": "nab",
        "profile": args.profile,
        "method": args.method,
        "config": {"detector": METHODS[args.method][0], **METHODS[args.method][1], "alpha": ALPHA},
        **result,
        "published": published(args.data, args.profile),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if not args.no_compare:
        report["compared_methods"] = {
            m: evaluate(m, args.data, args.profile)["score"] for m in METHODS if m != args.method
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
