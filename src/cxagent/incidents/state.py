"""Incremental detection: fitted state, advanced over new windows only, saved between runs.

``start_state`` calibrates on the history before the first monitored window and fits the
detectors; ``advance`` feeds them only the windows completed since the last run and appends
their results, so history is never recomputed and an incremental run ends where a batch run
over the same windows does. The state is a pickle next to the dataset (it holds numpy
arrays and the detectors' own state); a state whose slices or settings no longer match is
refused, so a stale file never mixes with new data silently. Slices are the fitted ones: a
slice that appears later is picked up when the state is refitted.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxagent.errors import CXAgentError
from cxagent.incidents.config import DetectConfig
from cxagent.incidents.detection import ColumnResults, MetricModel, fit_models, run_models
from cxagent.incidents.windows import WindowSeries, window_ids

STATE_VERSION = 1


@dataclass
class DetectionState:
    """Fitted models and the results of every processed window."""

    slices: list[dict]
    config: DetectConfig
    models: dict[str, MetricModel]
    monitor_first: int  # window id of the first monitored window
    results: ColumnResults | None = None
    version: int = STATE_VERSION

    @property
    def next_id(self) -> int:
        """Window id of the next window to process."""
        return self.monitor_first + (0 if self.results is None else self.results.n_windows)


def monitor_start(win: WindowSeries, config: DetectConfig) -> int:
    """Window id of the first monitored window."""
    if config.monitor_from is not None:
        first = int(window_ids(np.array([np.datetime64(config.monitor_from, "h")]))[0])
        return first
    return win.first + win.n_windows - 4 * config.monitor_days


def start_state(win: WindowSeries, markets: list[int], config: DetectConfig) -> DetectionState:
    """Calibrate and fit on the history before the monitored windows."""
    first = monitor_start(win, config)
    hist_first = max(win.first, first - 4 * config.history_days)
    n_hist = first - hist_first
    if n_hist < 4 * config.min_history_days:
        raise CXAgentError(
            f"detection needs at least {config.min_history_days} days of history before the "
            f"monitored windows; this dataset has {max(n_hist, 0) / 4:.1f}"
        )
    hist = win.columns(hist_first - win.first, first - win.first)
    models = fit_models(hist.stats, hist.first, np.asarray(markets, dtype=np.int64), config)
    return DetectionState(
        slices=list(win.slices), config=config, models=models, monitor_first=first
    )


def advance(state: DetectionState, win: WindowSeries) -> DetectionState:
    """Process the windows of ``win`` not seen yet (rows are aligned to the state's slices)."""
    win = win.align(state.slices)
    start = state.next_id
    stop = win.first + win.n_windows
    if stop <= start:
        return state
    if start < win.first:
        raise CXAgentError("the data no longer covers the windows the detection state needs")
    new = win.columns(start - win.first)
    res = run_models(state.models, new.stats, new.first, win.stats, win.first, state.config)
    state.results = res if state.results is None else state.results.extend(res)
    return state


def save_state(state: DetectionState, path: Path | str) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_state(path: Path | str, config: DetectConfig) -> DetectionState | None:
    """The saved state, or None when there is none; a state for other settings is refused."""
    path = Path(path)
    if not path.exists():
        return None
    with path.open("rb") as fh:
        state = pickle.load(fh)
    if not isinstance(state, DetectionState) or state.version != STATE_VERSION:
        raise CXAgentError(f"{path}: not a detection state of this version; delete it to refit")
    if state.config != config:
        raise CXAgentError(f"{path}: saved for other detection settings; delete it to refit")
    return state
