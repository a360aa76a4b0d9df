"""Findings (a focus alarmed at one window) and episodes (one incident each).

A focus's findings form one episode while each one's regression starts at most a day (four
windows) after the previous alarm (the store merges incident windows the same way). Nested foci are folded into the
enclosing one (as members, later its top slices) unless the inner one is ``distinct``, a
regression of its own: then both are incidents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cxagent.incidents.hierarchy import Hierarchy

EPISODE_GAP = 4  # windows: alarms at most a day apart belong to one episode
Distinct = Callable[[int, int, np.ndarray], bool]  # (inner, outer, window positions)


@dataclass
class Finding:
    """A focus slice alarmed at one window (positions are columns of the window series)."""

    focus: int
    column: int
    start: int
    primary: str
    components: set[str] = field(default_factory=set)
    p_value: float = 1.0
    q_value: float = 1.0
    members: set[int] = field(default_factory=set)
    driver: str | None = None  # the hypothesis whose driver led it (``drivers``), if any

    @property
    def cols(self) -> np.ndarray:
        return np.arange(self.start, self.column + 1)


class Judge(Protocol):
    """The tests ``episodes`` needs (``grouping.Grouper`` provides them)."""

    def distinct(self, inner: int, outer: int, cols: np.ndarray) -> bool: ...

    def explained(self, focus: int, primary: str, cols: np.ndarray, others: list[int]) -> bool: ...

    def intensity(self, focus: int, cols: np.ndarray) -> float: ...


def merge_inner(found: list[Finding], hier: Hierarchy, distinct: Distinct) -> list[Finding]:
    """Fold each finding inside another one's focus into it, unless it is distinct."""
    out: list[Finding] = []
    for f in sorted(found, key=lambda f: len(hier.expanded[f.focus])):
        cols = np.arange(f.start, f.column + 1)
        outer = next(
            (
                g
                for g in out
                if hier.contains(g.focus, f.focus) and not distinct(f.focus, g.focus, cols)
            ),
            None,
        )
        if outer is None:
            out.append(f)
            continue
        outer.members |= f.members | {f.focus}
        outer.components |= f.components
        outer.p_value = min(outer.p_value, f.p_value)
        outer.q_value = min(outer.q_value, f.q_value)
    return out


def _runs(findings: list[Finding]) -> list[list[Finding]]:
    by_focus: dict[int, list[Finding]] = {}
    for f in sorted(findings, key=lambda f: (f.focus, f.column)):
        by_focus.setdefault(f.focus, []).append(f)
    runs: list[list[Finding]] = []
    for items in by_focus.values():
        current = [items[0]]
        for f in items[1:]:
            if f.start - current[-1].column > EPISODE_GAP:  # as the store merges windows
                runs.append(current)
                current = []
            current.append(f)
        runs.append(current)
    return runs


def episodes(findings: list[Finding], hier: Hierarchy, judge: Judge) -> list[list[Finding]]:
    """Findings grouped by focus and split where alarms are more than a day apart. Runs that
    overlap in time are then folded together: an inner run into the outer one unless it is
    distinct, and (broadest first, as in ``grouping``) a run the others explain into the
    first of them it meets."""
    runs = sorted(_runs(findings), key=lambda r: len(hier.expanded[r[0].focus]))
    out: list[list[Finding]] = []
    for run in runs:
        cols = _cols(run)
        outer = next(
            (
                o
                for o in out
                if _overlap(o, run)
                and hier.contains(o[0].focus, run[0].focus)
                and not judge.distinct(run[0].focus, o[0].focus, cols)
            ),
            None,
        )
        if outer is None:
            out.append(run)
        else:
            _absorb(outer, run)
    for run in sorted(
        out, key=lambda r: (hier.dims(r[0].focus), judge.intensity(r[0].focus, _cols(r)))
    ):
        others = [o for o in out if o is not run and _overlap(o, run)]
        if _driver_led(run):
            # it stands on its driver's shift, which the outcome-only test of ``explained``
            # does not see: only other driver-led runs (a narrower cell the shift is in) can
            # explain it away
            others = [o for o in others if _driver_led(o)]
        focus, primary = run[0].focus, run[0].primary
        if others and judge.explained(focus, primary, _cols(run), [o[0].focus for o in others]):
            host = next((o for o in others if hier.meet(o[0].focus, focus) is not None), None)
            if host is not None:
                _absorb(host, run)
                out.remove(run)
    return out


def _driver_led(run: list[Finding]) -> bool:
    """A driver check raised some of its findings."""
    return any(f.driver for f in run)


def _cols(run: list[Finding]) -> np.ndarray:
    return np.arange(min(f.start for f in run), run[-1].column + 1)


def _overlap(a: list[Finding], b: list[Finding]) -> bool:
    return a[0].column - EPISODE_GAP <= b[-1].column and b[0].column <= a[-1].column + EPISODE_GAP


def _absorb(host: list[Finding], run: list[Finding]) -> None:
    host[0].members |= {run[0].focus}.union(*(f.members for f in run))
