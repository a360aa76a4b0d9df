"""Benchmark: multi-dimensional root-cause localisation on the public RCA cases.

    python benchmarks/localization.py --data ../shared/bench/rca/B0 [--limit N]
    python benchmarks/localization.py --data ../shared/bench/rca/RS

The layout is detected: a B0-like DIR holds setting folders with ``injection_info.csv`` and
``<timestamp>.csv.gz`` cases (or DIR is one such folder); an RS-like DIR holds ``*.csv``
cases and ``anomaly.yaml``. B0 is an additive measure (``real``, ``predict`` per leaf). RS is
a ratio (``value`` / ``cnt`` per leaf and minute); as in the reference pipelines, the
forecast of a leaf is the mean of its ``value`` and ``cnt`` over the 4 minutes before the
anomalous one, and only leaves present in that minute are scored.

One fixed configuration (``LocalizeConfig()``) for every case. ``--direction auto`` searches
in the KPI's regression direction: drops for B0 (a volume) and rises for RS (a stall rate);
``both`` searches both. Scoring: exact-match micro-F1 (``cxagent.localize.scoring``).
Seconds per case time ``localize`` only (not reading files or building the forecast).

Prints JSON: {"dataset", "layout", "direction", "settings": {NAME: {"f1", "precision",
"recall", "top1", "cases", "mean_seconds", "tp", "fp", "fn"}}, "overall": {...}}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

from cxagent.localize import LocalizationResult, localize
from cxagent.localize.result import Direction
from cxagent.localize.scoring import CaseScore, canonical, parse_elements, score_case, summarize

Case = tuple[pd.DataFrame, list[str], set[str]]


def b0_settings(root: Path) -> list[Path]:
    if (root / "injection_info.csv").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "injection_info.csv").is_file())


def b0_cases(setting: Path, limit: int | None) -> Iterator[Case]:
    info = pd.read_csv(setting / "injection_info.csv", dtype={"timestamp": str})
    if limit is not None:
        info = info.head(limit)
    for row in info.itertuples(index=False):
        path = setting / f"{row.timestamp}.csv.gz"
        if not path.is_file():
            path = setting / f"{row.timestamp}.csv"
        head = pd.read_csv(path, nrows=0).columns
        dims = [c for c in head if c not in ("real", "predict")]
        frame = pd.read_csv(path, dtype={d: str for d in dims})
        yield frame, dims, parse_elements(str(row.set))


def rs_leaves(path: Path, minute: int, history: int = 4) -> tuple[pd.DataFrame, list[str]]:
    """Leaves of the anomalous minute with the reference forecast: the mean of each leaf's
    ``value`` and ``cnt`` over the previous ``history`` minutes (0 without history)."""
    head = pd.read_csv(path, nrows=0).columns
    dims = [c for c in head if c not in ("min", "value", "cnt")]
    raw = pd.read_csv(path, dtype={d: str for d in dims})
    now = raw[raw["min"] == minute].groupby(dims, as_index=False)[["value", "cnt"]].sum()
    past = raw[raw["min"].isin([minute - 60 * i for i in range(1, history + 1)])]
    forecast = past.groupby(dims, as_index=False)[["value", "cnt"]].mean()
    forecast = forecast.rename(columns={"value": "predict", "cnt": "predict_den"})
    leaves = now.rename(columns={"value": "real", "cnt": "real_den"})
    leaves = leaves.merge(forecast, on=dims, how="left")
    return leaves.fillna({"predict": 0.0, "predict_den": 0.0}), dims


def rs_cases(root: Path, limit: int | None) -> Iterator[Case]:
    labels = yaml.safe_load((root / "anomaly.yaml").read_text(encoding="utf-8"))
    for label in labels[:limit]:
        path = root / f"{label['data']}.csv"
        if not path.is_file():
            raise SystemExit(f"{root / 'anomaly.yaml'}: case file not found: {path}")
        causes = label["cause"] if isinstance(label["cause"], list) else [label["cause"]]
        leaves, dims = rs_leaves(path, int(label["timestamp"]))
        yield leaves, dims, {canonical({str(k): str(v) for k, v in c.items()}) for c in causes}


def run(cases: Iterator[Case], *, kind: str, direction: Direction) -> tuple[list[CaseScore], float]:
    scores, seconds = [], 0.0
    for frame, dims, truth in cases:
        started = time.perf_counter()
        if kind == "ratio":
            result: LocalizationResult = localize(
                frame,
                dims,
                kind="ratio",
                real_den="real_den",
                predict_den="predict_den",
                direction=direction,
            )
        else:
            result = localize(frame, dims, kind="additive", direction=direction)
        seconds += time.perf_counter() - started
        scores.append(score_case([s.label for s in result.slices], truth))
    return scores, seconds


def report(scores: list[CaseScore], seconds: float) -> dict[str, float | int]:
    out = summarize(scores)
    out["mean_seconds"] = seconds / len(scores) if scores else 0.0
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a B0-like or RS-like folder")
    parser.add_argument("--limit", type=int, default=None, help="first N cases per setting")
    parser.add_argument("--direction", choices=["auto", "drop", "rise", "both"], default="auto")
    args = parser.parse_args()
    root: Path = args.data
    if not root.is_dir():
        raise SystemExit(f"--data {root}: not a directory")

    settings: dict[str, dict[str, float | int]] = {}
    all_scores: list[CaseScore] = []
    total_seconds = 0.0
    if b0_settings(root):
        layout = "b0"
        direction: Direction = "drop" if args.direction == "auto" else args.direction
        for setting in b0_settings(root):
            scores, seconds = run(
                b0_cases(setting, args.limit), kind="additive", direction=direction
            )
            settings[setting.name] = report(scores, seconds)
            all_scores += scores
            total_seconds += seconds
    elif (root / "anomaly.yaml").is_file():
        layout = "rs"
        direction = "rise" if args.direction == "auto" else args.direction
        all_scores, total_seconds = run(
            rs_cases(root, args.limit), kind="ratio", direction=direction
        )
        settings[root.name] = report(all_scores, total_seconds)
    else:
        raise SystemExit(
            f"--data {root}: neither setting folders with injection_info.csv "
            "nor anomaly.yaml with case CSVs"
        )
    summary = {
        "dataset": root.resolve().name,
        "layout": layout,
        "direction": direction,
        "settings": settings,
        "overall": report(all_scores, total_seconds),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
