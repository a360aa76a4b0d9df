"""Benchmark: the analytics stages on DuckDB and on local Spark, wall time and peak memory.

    python benchmarks/engines.py --data DIR [--engines duckdb,spark] [--spark-master local[2]]

Each engine runs in its own process (so one engine's memory and caches never help the other);
the stages, each timed on its own:

1. ``connect``: open the engine (for Spark: start the session, the JVM);
2. ``cube``: order facts of the days detection reads (history + monitored days) -> leaves ->
   the slice cube summed over daypart windows on the engine; only it comes back, as Arrow;
3. ``windows``: that cube to the dense slice x window arrays detection reads (NumPy);
4. ``detect``: calibrate, detect and group into incidents (NumPy, engine-free);
5. ``investigate``: root-cause analysis of the first incident (its slice's orders and the
   diff-in-diff panels are read on the engine; models and bootstrap in Python).

Peak memory is the largest resident set of the process tree (Python plus, for Spark, its
JVM), sampled every 0.2 s. ``--hourly-cube`` also times the hourly cube of every day (what
the workbench's trend charts read; before issue 8's windows stage, detection read it too).
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _tree_rss_mb(root_pid: int) -> float:
    """Resident memory of ``root_pid`` and its descendants (from /proc), in MB."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree) / 1e6


class PeakMemory:
    """Samples the process tree's resident memory in a thread; ``peak`` since ``reset``."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s, self.peak = every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))

    def reset(self) -> None:
        self.peak = _tree_rss_mb(os.getpid())

    def stop(self) -> None:
        self._stop.set()


def run_engine(data: Path, engine: str, master: str | None, hourly: bool) -> dict[str, Any]:
    """All stages on one engine, in this process."""
    from cxagent.engine.connection import connect
    from cxagent.engine.cube import build_cube, build_window_cube
    from cxagent.incidents.config import DetectConfig
    from cxagent.incidents.hierarchy import Hierarchy
    from cxagent.incidents.pipeline import run_detection, store_info
    from cxagent.incidents.windows import windows_from_cube
    from cxagent.rca.investigate import investigate_report

    memory = PeakMemory()
    stages: dict[str, dict[str, float]] = {}
    out: dict[str, Any] = {}

    def stage(name: str, fn: Any) -> Any:
        memory.reset()
        start = time.perf_counter()
        value = fn()
        stages[name] = {
            "seconds": round(time.perf_counter() - start, 2),
            "peak_mb": round(max(memory.peak, _tree_rss_mb(os.getpid())), 0),
        }
        print(json.dumps({engine: {name: stages[name]}}), file=sys.stderr, flush=True)
        return value

    con = stage("connect", lambda: connect(data, engine=engine, spark_master=master))
    config = DetectConfig()
    days = config.history_days + config.monitor_days + 2  # what `cxagent detect` reads
    cube = stage("cube", lambda: build_window_cube(con, days=days))

    def windows() -> Any:
        win = windows_from_cube(cube)
        return win, Hierarchy(win.slices, store_info(con, cube.implied_by_store))

    win, hier = stage("windows", windows)
    _, reports = stage("detect", lambda: run_detection(win, hier, config))
    out["incidents"] = [r.draft.slice for r in reports]
    if reports:
        found = stage("investigate", lambda: investigate_report(con, reports[0], n_bootstrap=50))
        out["first_incident_causes"] = [c.cause for c in found.causes]
    if hourly:
        out["hourly_cube_rows"] = stage("hourly_cube", lambda: build_cube(con)).table.num_rows
    memory.stop()
    out["cube_rows"] = cube.table.num_rows
    out["slices"] = len(win.slices)
    out["stages"] = stages
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--engines", default="duckdb,spark")
    ap.add_argument("--spark-master", default=None, help="default local[2]")
    ap.add_argument("--hourly-cube", action="store_true", help="also time the hourly cube")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.one:
        result = run_engine(args.data, args.one, args.spark_master, args.hourly_cube)
        print(json.dumps(result, default=str))
        return
    truth = args.data / "truth.json"  # generated data say how many rows they hold
    rows = json.loads(truth.read_text()).get("rows") if truth.exists() else None
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/engines.py", *sys.argv[1:]]),
        "data": {"dir": str(args.data), "rows": rows},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--data", str(args.data), "--one", engine]
        if args.spark_master:
            cmd += ["--spark-master", args.spark_master]
        if args.hourly_cube:
            cmd.append("--hourly-cube")
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
        result[engine] = json.loads(done.stdout.strip().splitlines()[-1])
        result[engine]["process_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
