"""Hourly slice series to daypart windows: four columns a day, in one absolute grid.

A window is one daypart of one "service day": breakfast 05-10, lunch 11-15, dinner 16-20 and
late_night 21-04, which runs past midnight into the next calendar date (see
``cxagent.data.cohorts``). Shifting a timestamp back by five hours puts every hour of a
window on the same service day, so a window's absolute id is
``4 * (service days since Monday 1970-01-05) + daypart``: ids never change when data is
appended (incremental runs line up with batch runs), and ``id % 28`` is the window of the
week (weekday x daypart), the period of the calendar pattern. Statistics are sums of the
hours in the window, so every rate is still sum(numerator) / sum(denominator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from cxagent.data.cohorts import DAYPART_OF_HOUR, DAYPARTS
from cxagent.engine.cube import SUM_FIELDS, WindowCube
from cxagent.metrics.series import SliceSeries, level_rows, slice_keys

WEEK: Final = 7 * len(DAYPARTS)  # windows per week: the period of the calendar pattern
EPOCH: Final = np.datetime64("1970-01-05T00:00", "h")  # a Monday
WINDOW_START_H: Final = np.array([5, 11, 16, 21])  # hour of day each daypart begins
WINDOW_END_H: Final = np.array([11, 16, 21, 29])  # late night ends at 05:00 next day
HOUR: Final = np.timedelta64(1, "h")


def window_ids(hours: np.ndarray) -> np.ndarray:
    """Absolute window id of each hourly timestamp."""
    since = (np.asarray(hours).astype("datetime64[h]") - EPOCH).astype(np.int64)  # hours
    day = (since - 5) // 24  # the service day starts at 05:00
    hod = since % 24
    return 4 * day + DAYPART_OF_HOUR[hod].astype(np.int64)


def window_start(ids: np.ndarray) -> np.ndarray:
    """Start timestamp (datetime64[h]) of each window id."""
    ids = np.asarray(ids, dtype=np.int64)
    return EPOCH + (24 * (ids // 4) + WINDOW_START_H[ids % 4]) * HOUR


def window_end(ids: np.ndarray) -> np.ndarray:
    """End timestamp (exclusive) of each window id."""
    ids = np.asarray(ids, dtype=np.int64)
    return EPOCH + (24 * (ids // 4) + WINDOW_END_H[ids % 4]) * HOUR


def daypart_of_window(ids: np.ndarray) -> np.ndarray:
    """Index into ``DAYPARTS`` of each window id."""
    return np.asarray(ids, dtype=np.int64) % 4


@dataclass
class WindowSeries:
    """Summed statistics per slice (rows) and daypart window (columns ``first..first+T-1``).

    Only windows that began with the data and ended by ``as_of`` are kept, so a window is
    never seen half-full.
    """

    slices: list[dict[str, Any]]
    first: int
    stats: dict[str, np.ndarray]
    as_of: np.datetime64
    missing: frozenset[str] = frozenset()  # statistics the data lacks (zeros in ``stats``)

    @property
    def n_windows(self) -> int:
        return int(next(iter(self.stats.values())).shape[1])

    @property
    def ids(self) -> np.ndarray:
        return self.first + np.arange(self.n_windows, dtype=np.int64)

    @property
    def starts(self) -> np.ndarray:
        return window_start(self.ids)

    @property
    def ends(self) -> np.ndarray:
        return window_end(self.ids)

    def columns(self, start: int, stop: int | None = None) -> WindowSeries:
        """The windows ``start:stop`` (positions, not ids)."""
        return WindowSeries(
            slices=self.slices,
            first=self.first + start,
            stats={k: v[:, start:stop] for k, v in self.stats.items()},
            as_of=self.as_of,
            missing=self.missing,
        )

    def column_of(self, window_id: int) -> int:
        return int(window_id - self.first)

    def align(self, slices: list[dict[str, Any]]) -> WindowSeries:
        """Rows reordered to ``slices``: a slice without data gets zeros, others are dropped
        (a store that opened after the detection state was fitted waits for the next fit)."""
        if slices == self.slices:
            return self
        pos = {
            tuple(sorted((k, str(v)) for k, v in s.items())): i for i, s in enumerate(self.slices)
        }
        idx = np.array(
            [pos.get(tuple(sorted((k, str(v)) for k, v in s.items())), -1) for s in slices]
        )
        stats = {}
        for k, v in self.stats.items():
            out = np.zeros((len(slices), v.shape[1]))
            out[idx >= 0] = v[idx[idx >= 0]]
            stats[k] = out
        return WindowSeries(list(slices), self.first, stats, self.as_of, self.missing)


def to_windows(
    series: SliceSeries,
    *,
    as_of: np.datetime64 | None = None,
    keep_dayparts: bool = False,
) -> WindowSeries:
    """Sum hourly statistics into daypart windows that ended by ``as_of`` (default: one hour
    after the last hour with data). Daypart slices are dropped unless ``keep_dayparts``: on
    the window grid a daypart slice is its parent's columns of that daypart, nothing new."""
    hours = np.asarray(series.hours).astype("datetime64[h]")
    if hours.size == 0:
        raise ValueError("the series has no hours")
    first, n_win, cutoff = window_grid(hours.min(), hours.max(), as_of)
    ids = window_ids(hours)
    rows = [i for i, s in enumerate(series.slices) if keep_dayparts or "daypart" not in s]
    assign = np.zeros((hours.size, max(n_win, 1)))
    ok = (ids >= first) & (ids - first < n_win)
    assign[np.flatnonzero(ok), (ids - first)[ok]] = 1.0
    stats = {k: (v[rows] @ assign)[:, :n_win] for k, v in series.stats.items()}
    return WindowSeries([series.slices[i] for i in rows], first, stats, cutoff, series.missing)


def window_grid(
    first_hour: np.datetime64, last_hour: np.datetime64, as_of: np.datetime64 | None = None
) -> tuple[int, int, np.datetime64]:
    """(first window id, number of windows, cutoff) of data from ``first_hour`` to
    ``last_hour``: the first window starts with the data (one that began before it is only
    partly seen) and the last ends by ``as_of`` (default: one hour after the last hour)."""
    stamp = last_hour + HOUR if as_of is None else as_of
    cutoff = np.datetime64(np.asarray(stamp).astype("datetime64[h]").item(), "h")
    first, last = (int(i) for i in window_ids(np.array([first_hour, last_hour])))
    if window_start(np.array([first]))[0] < first_hour:
        first += 1
    complete = window_end(np.arange(first, last + 1)) <= cutoff
    n_win = int(np.flatnonzero(complete)[-1]) + 1 if complete.any() else 0
    return first, n_win, cutoff


def windows_from_cube(cube: WindowCube, *, as_of: np.datetime64 | None = None) -> WindowSeries:
    """Every slice of a window cube (``cxagent.engine.cube.build_window_cube``) as a
    ``WindowSeries``: what ``to_windows(build_series(cube))`` gives from the hourly cube of
    the same data, without ever holding the hourly slice x hour arrays."""
    first, n_win, cutoff = window_grid(cube.first_hour, cube.last_hour, as_of)
    table = cube.table
    window = table.column("window").to_numpy().astype(np.int64)
    lo = int(window.min()) if len(window) else first
    span = (int(window.max()) - lo + 1) if len(window) else 1
    field_values = {
        f: np.nan_to_num(np.array(table.column(f).to_numpy(), dtype=float), copy=False)
        for f in SUM_FIELDS
    }
    keep = slice(first - lo, first - lo + n_win)
    slices: list[dict[str, Any]] = []
    blocks: dict[str, list[np.ndarray]] = {f: [] for f in SUM_FIELDS}
    for level, rows in level_rows(table).items():
        dims = [] if level == "all" else level.split("+")
        uniq, r = slice_keys(table, dims, rows)
        cell = r * span + (window[rows] - lo)
        size = len(uniq) * span
        mats = {
            f: np.bincount(cell, weights=v[rows], minlength=size).reshape(len(uniq), span)
            for f, v in field_values.items()
        }
        # a slice with orders anywhere in the data is kept, as build_series keeps it
        enough = mats["orders"].sum(axis=1) >= 1e-9
        slices.extend({d: uniq[i][j] for j, d in enumerate(dims)} for i in np.flatnonzero(enough))
        for f in SUM_FIELDS:
            blocks[f].append(mats[f][enough][:, keep])
    stats = {f: np.vstack(blocks[f]) for f in SUM_FIELDS}
    return WindowSeries(slices, first, stats, cutoff, cube.missing_fields)
