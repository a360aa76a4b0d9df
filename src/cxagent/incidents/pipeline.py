"""The detection pipeline: dataset -> cube -> daypart windows -> alarms -> incidents -> store.

``detect_incidents(data_dir)`` is what ``cxagent detect`` runs. Batch by default: calibrate on
the history, replay the last ``monitor_days`` window by window (so ``detected_at`` is when a
live run would have raised it) and upsert the incidents. With ``state_path`` it is
incremental: the first run saves the fitted state, later runs process only the windows
completed since. Re-running over overlapping data updates the same incidents (the store
merges a metric + slice whose windows overlap), it never duplicates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cxagent.engine.connection import Engine, connect
from cxagent.engine.cube import build_window_cube
from cxagent.engine.drivers import build_driver_windows
from cxagent.errors import CXAgentError
from cxagent.incidents.config import DetectConfig
from cxagent.incidents.drivers import DriverWindows, driver_findings
from cxagent.incidents.effects import Effects
from cxagent.incidents.episodes import episodes
from cxagent.incidents.feed import IncidentReport, build_report
from cxagent.incidents.grouping import Grouper
from cxagent.incidents.hierarchy import Hierarchy
from cxagent.incidents.ranking import TopSlicesFn, top_slices
from cxagent.incidents.state import DetectionState, advance, load_state, save_state, start_state
from cxagent.incidents.windows import WindowSeries, daypart_of_window, windows_from_cube
from cxagent.store.db import default_url, session_factory
from cxagent.store.models import SEVERITIES
from cxagent.store.repository import upsert_incident


def store_info(engine: Engine, implied: frozenset[str]) -> dict[Any, dict[str, Any]]:
    """store_id -> region and category, for the dimensions a store implies in this data."""
    if not implied or not engine.has("stores"):
        return {}
    rows = engine.table("stores").select("store_id", "region", "category").to_pyarrow()
    out: dict[Any, dict[str, Any]] = {}
    for r in rows.to_pylist():
        out[r["store_id"]] = {k: r[k] for k in ("region", "category") if k in implied}
    return out


def _engine(data: Path | str | Engine) -> Engine:
    return data if isinstance(data, Engine) else connect(data)


def load_windows(
    data: Path | str | Engine, *, as_of: np.datetime64 | None = None, days: int | None = None
) -> tuple[WindowSeries, Hierarchy]:
    """Daypart windows of every slice of the dataset (a folder, or an engine already
    connected to it; of its last ``days`` days when given), and their hierarchy. The windows
    are summed on the engine: only slice x window sums come back, never the orders or the
    hourly cube."""
    engine = _engine(data)
    cube = build_window_cube(engine, days=days)
    if cube is None:
        raise CXAgentError(f"{engine.root}: the dataset has no orders to detect on")
    win = windows_from_cube(cube, as_of=as_of)
    return win, Hierarchy(win.slices, store_info(engine, cube.implied_by_store))


def load_drivers(
    data: Path | str | Engine, win: WindowSeries, *, days: int | None = None
) -> DriverWindows | None:
    """The driver sums of ``win``'s windows (``cxagent.engine.drivers``), for the driver
    checks; None when the dataset has no deliveries."""
    table = build_driver_windows(_engine(data), days=days)
    return None if table is None else DriverWindows.from_table(table, win.first, win.n_windows)


def run_detection(
    win: WindowSeries,
    hier: Hierarchy,
    config: DetectConfig,
    *,
    state: DetectionState | None = None,
    top_fn: TopSlicesFn | None = None,
    drivers: DriverWindows | None = None,
) -> tuple[DetectionState, list[IncidentReport]]:
    """Pure computation: fit (unless ``state``), process new windows, group into reports.
    The driver checks run when ``drivers`` is given (``load_drivers``) and
    ``config.driver_checks`` is on; ``detect_on`` loads both."""
    if state is None:
        state = start_state(win, hier.market_rows(), config)
    if win.slices != state.slices:  # a slice came or went since the state was fitted
        win = win.align(state.slices)
        hier = Hierarchy(state.slices, hier.store_info)
    state = advance(state, win)
    if state.results is None:
        return state, []
    effects = Effects.compute(state.models, win.stats, win.first, win.missing)
    first_pos = state.results.first - win.first
    hist = np.arange(max(first_pos - 4 * config.history_days, 0), first_pos)
    grouper = Grouper(effects, state.models, hier, config, daypart_of_window(win.ids))
    found = grouper.findings(state.results, first_pos)
    if drivers is not None and config.driver_checks:
        if (drivers.first, drivers.n_windows) != (win.first, win.n_windows):
            raise CXAgentError("driver windows must be the window series' windows")
        found += driver_findings(
            drivers,
            win.stats,
            hier,
            first_pos,
            driver_z=config.driver_z,
            outcome_z=config.driver_outcome_z,
            supply_z=config.supply_driver_z,
            min_trials=config.min_trials,
            min_excess=config.min_excess,
            history=4 * config.history_days,
        )
    top = int(np.argmax(win.stats["orders"].sum(axis=1)))  # all orders (the widest slice)
    day_orders = 4.0 * float(win.stats["orders"][top, hist].mean()) if hist.size else 1.0
    top_fn = top_fn or _default_top_fn()
    reports = [
        build_report(ep, grouper, win.first, top_fn, config, day_orders)
        for ep in episodes(found, hier, grouper)
    ]
    rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    reports.sort(key=lambda r: (rank[r.draft.severity], -r.impact))
    return state, reports


def detect_on(
    data_dir: Path | str,
    config: DetectConfig,
    *,
    days: int | None,
    as_of: np.datetime64 | None = None,
    state: DetectionState | None = None,
    top_fn: TopSlicesFn | None = None,
) -> tuple[WindowSeries, DetectionState, list[IncidentReport]]:
    """Load the windows of the data's last ``days`` days (and their drivers when the driver
    checks are on) and run detection on them: what ``detect``, ``watch`` and the alerts
    preview share."""
    engine = connect(data_dir)  # one connection for the windows and the drivers
    win, hier = load_windows(engine, as_of=as_of, days=days)
    drivers = load_drivers(engine, win, days=days) if config.driver_checks else None
    state, reports = run_detection(win, hier, config, state=state, top_fn=top_fn, drivers=drivers)
    return win, state, reports


def detect_incidents(
    data_dir: Path | str,
    *,
    store_url: str | None = None,
    config: DetectConfig | None = None,
    state_path: Path | str | None = None,
    as_of: np.datetime64 | None = None,
    top_fn: TopSlicesFn | None = None,
) -> list[IncidentReport]:
    """Detect incidents in the dataset at ``data_dir``, upsert them into the store
    (``store_url``, default: ``cxagent.db`` next to the data or ``$CXAGENT_DB_URL``) and
    return the feed, most severe first."""
    config = config or DetectConfig()
    state = load_state(state_path, config) if state_path is not None else None
    # a batch run needs its history and monitored days only; an incremental one, everything
    # since its state (kept simple: all data)
    days = (
        None
        if state is not None or as_of is not None
        else config.history_days + config.monitor_days + 2
    )
    _, state, reports = detect_on(
        data_dir, config, days=days, as_of=as_of, state=state, top_fn=top_fn
    )
    if state_path is not None:
        save_state(state, state_path)
    factory = session_factory(store_url or default_url(data_dir))
    for report in reports:
        incident, created = upsert_incident(factory, report.draft)
        report.incident_id, report.created = incident.id, created
    return reports


def _default_top_fn() -> TopSlicesFn:
    """``localize`` then the concentration ranking; the ranking alone without ``localize``."""
    try:
        import cxagent.localize  # noqa: F401
    except ImportError:
        return top_slices
    from cxagent.incidents.localization import combined_top_slices

    return combined_top_slices


def as_table(reports: list[IncidentReport]) -> list[Mapping[str, Any]]:
    """Rows for ``cxagent detect``: one per incident, in feed order."""
    rows: list[Mapping[str, Any]] = []
    for r in reports:
        d = r.draft
        first = d.top_slices[0]["label"] if d.top_slices else ""
        rows.append(
            {
                "id": r.incident_id or "",
                "severity": d.severity,
                "slice": r.label,
                "detected_at": d.detected_at.strftime("%Y-%m-%d %H:%M"),
                "window": f"{d.window_start:%m-%d %H:%M} - {d.window_end:%m-%d %H:%M}",
                "cx_score": f"{d.baseline:.1f} -> {d.current:.1f} ({d.delta:+.1f})",
                "orders": d.affected_orders,
                "components": ", ".join(r.components),
                "top_slice": first,
                "q_value": f"{d.q_value:.1e}",
            }
        )
    return rows
