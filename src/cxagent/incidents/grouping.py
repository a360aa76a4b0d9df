"""From alarms (slice x component x window) to incidents: what the regression is about.

For every window, each alarmed slice is resolved to a *focus*, the slice the regression is
about, by rules built on the tests of ``effects`` (``excess_p``) and ``contrast``:

1. Descent: the focus moves from a slice to its child with the largest CX loss while that
   child is concentrated (at least half the loss, and 1.5 x its share of orders) and worse
   than its siblings: an alarm on SF is about SF + grocery when grocery carries it; it stays
   on SF + grocery when the loss is spread across basket sizes or stores.
2. Market shock: a focus inside a market (region) is dropped unless it got significantly
   worse than the rest of its market in the same windows. A whole market's bad day is the
   market's alarm to raise, judged against the market's own, heavier-tailed, history.
3. Explaining away: from the broadest focus of a window on (fewest dimensions, then least
   CX loss per order), a focus is dropped when what lies outside the parts of it that the
   other foci cover (their union, by inclusion-exclusion) is not significantly worse:
   SF + medium baskets next to SF + grocery, or medium baskets everywhere next to NYC and
   LA convenience. When the parts are foci nested inside it, they must be concentrated, so
   a big chunk (medium baskets) never stands in for its parent.
4. Remaining foci inside another focus of the window join it (as members), unless they are
   ``distinct``: concentrated and worse than the rest of it (SF + grocery inside grocery).

All tests are at ``config.residual_alpha``; they only filter alarms that already passed the
FDR. ``episodes`` turns the findings into incidents.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from cxagent.incidents.config import DetectConfig
from cxagent.incidents.contrast import contrast_p
from cxagent.incidents.detection import COMPONENTS, ColumnResults, MetricModel
from cxagent.incidents.effects import Effects, excess_p
from cxagent.incidents.episodes import EPISODE_GAP, Finding, merge_inner
from cxagent.incidents.hierarchy import Hierarchy

SHARE = 0.5  # a child must carry at least this share of its parent's CX loss ...
LIFT = 1.5  # ... and this multiple of its share of orders, for the focus to move to it
MAX_PARTS = 6  # at most this many other foci explain one (2^6 intersections)


@dataclass
class Grouper:
    """Resolves alarms to foci (positions index the windows of ``effects``)."""

    effects: Effects
    models: dict[str, MetricModel]
    hier: Hierarchy
    config: DetectConfig
    dayparts: np.ndarray  # daypart index of each window position

    def __post_init__(self) -> None:
        self.loss = self.effects.loss_matrix()

    def _scale(self, comp: str, row: int) -> float:
        model = self.models[comp]
        cls = model.null.classes(model.shock[row : row + 1])[0]
        return float(model.null.scale[cls])

    def _contrast_p(self, child: int, parent: int, cols: np.ndarray) -> float:
        """Child worse than the rest of parent, on the component where the child lost most."""
        comp = max(COMPONENTS, key=self.effects.sums([child], cols).loss)
        market = self.hier.market(child)
        same = market is not None and (parent == market or self.hier.market(parent) == market)
        return contrast_p(
            self.effects,
            self.models[comp],
            child,
            parent,
            cols,
            dayparts=self.dayparts,
            same_market=same,
        )

    def _market_explains(self, row: int, market: int, cols: np.ndarray) -> bool:
        """``row`` did not get significantly worse than the rest of its market."""
        return self._contrast_p(row, market, cols) > self.config.residual_alpha

    def _concentrated(self, inner: int, outer: int, cols: np.ndarray) -> bool:
        """``inner`` carries at least SHARE of ``outer``'s CX loss and LIFT x its orders share."""
        loss = self.loss[[outer, inner]][:, cols].sum(axis=1)
        orders = self.effects.stats["orders"][[outer, inner]][:, cols].sum(axis=1)
        if loss[0] <= 0 or loss[1] < SHARE * loss[0] or orders[1] <= 0:
            return False
        return bool((loss[1] / loss[0]) / (orders[1] / max(orders[0], 1.0)) >= LIFT)

    def focus(self, row: int, cols: np.ndarray) -> int | None:
        """The slice alarm ``row`` is about, or None when its market explains it."""
        loss = self.loss[:, cols].sum(axis=1)
        here = row
        while kids := self.hier.children(here):
            best = max(kids, key=lambda k: loss[k])
            if not self._concentrated(best, here, cols):
                break
            if self._contrast_p(best, here, cols) > self.config.residual_alpha:
                break
            here = best
        market = self.hier.market(here)
        if market is not None and self._market_explains(here, market, cols):
            return None
        return here

    def _start(self, k: int, row: int, earliest: int, pos: int) -> int:
        """Start of the regression: the s in [earliest, pos] maximising the standardised
        excess of windows s..pos (the likelihood-ratio estimate of a step's start), against
        the expectation the detector tested (a market's bad day is not a start)."""
        comp = COMPONENTS[k]
        seg = slice(earliest, pos + 1)
        expected, variance = self.effects.tested[comp]
        ex = (self.effects.observed[comp] - expected)[row, seg][::-1]
        var = variance[row, seg][::-1]
        stat = np.cumsum(ex) / np.sqrt(np.maximum(np.cumsum(var), 1e-12))
        return pos - int(np.argmax(stat))

    def findings(self, res: ColumnResults, first_pos: int) -> list[Finding]:
        """Findings of every window with alarms; ``first_pos`` is res column 0's position."""
        out: list[Finding] = []
        win_first = res.first - first_pos
        for j in range(res.n_windows):
            pos = first_pos + j
            by_focus: dict[int, Finding] = {}
            for i in np.flatnonzero(res.alarm[:, :, j].any(axis=0)):
                comps = [k for k in range(len(COMPONENTS)) if res.alarm[k, i, j]]
                starts = []
                for k in comps:
                    cs = int(res.change_start[k, i, j])
                    earliest = pos if cs < 0 else int(np.clip(cs - win_first - EPISODE_GAP, 0, pos))
                    starts.append(self._start(k, int(i), earliest, pos))
                start = min(starts)
                cols = np.arange(start, pos + 1)
                totals = self.effects.sums([int(i)], cols)
                primary = max((COMPONENTS[k] for k in comps), key=totals.loss)
                f = self.focus(int(i), cols)
                if f is None:
                    continue
                found = by_focus.setdefault(f, Finding(f, pos, start, primary))
                found.start = min(found.start, start)
                found.components |= {COMPONENTS[k] for k in comps}
                found.members.add(int(i))
                # the evidence shown is the focus's own test in this window when it has one
                # (the alarm may have been raised on a parent the focus descended from)
                row = f if all(np.isfinite(res.q[k, f, j]) for k in comps) else int(i)
                found.p_value = min(found.p_value, *(float(res.p[k, row, j]) for k in comps))
                found.q_value = min(found.q_value, *(float(res.q[k, row, j]) for k in comps))
            out.extend(self._explain_away(list(by_focus.values())))
        return out

    def _union(self, parts: list[int]) -> tuple[list[int], list[float]] | None:
        """Rows and signs whose weighted sum is the union of slices ``parts`` (inclusion-
        exclusion over their intersections); None when an intersection is not a series."""
        weight: dict[int, float] = {}
        for k in range(1, len(parts) + 1):
            for subset in itertools.combinations(parts, k):
                empty, row = self.hier.meet_all(list(subset))
                if empty:
                    continue
                if row is None:
                    return None
                weight[row] = weight.get(row, 0.0) + (-1.0) ** (k + 1)
        rows = [r for r, w in weight.items() if w != 0]
        return rows, [weight[r] for r in rows]

    def explained(self, focus: int, primary: str, cols: np.ndarray, others: list[int]) -> bool:
        """``focus`` adds nothing to the foci ``others``: what lies outside the parts of it
        they cover is not significantly worse. When those parts are foci inside it they must
        also be concentrated (half the loss, 1.5 x the orders share), so a big chunk (medium
        baskets) never stands in for its parent."""
        parts: list[int] = []
        for g in others:
            inter = self.hier.meet(focus, g)
            if inter is not None and inter != focus and inter not in parts:
                parts.append(inter)
        parts = [p for p in parts if not any(q != p and self.hier.contains(q, p) for q in parts)]
        union = self._union(parts[:MAX_PARTS]) if parts else None
        if union is None:
            return False
        rows, signs = union
        rest = self.effects.sums([focus, *rows], cols, sign=[1.0] + [-s for s in signs])
        if excess_p(rest, primary, self._scale(primary, focus)) <= self.config.residual_alpha:
            return False
        if not all(p in others for p in parts):
            return True  # overlapping foci (SF + medium baskets next to SF + grocery)
        covered = self.effects.sums(rows, cols, sign=signs)
        whole = self.effects.sums([focus], cols)
        share = covered.loss() / max(whole.loss(), 1e-12)
        lift = share / max(covered.orders / max(whole.orders, 1.0), 1e-12)
        return bool(whole.loss() > 0 and share >= SHARE and lift >= LIFT)

    def distinct(self, inner: int, outer: int, cols: np.ndarray) -> bool:
        """``inner`` is a regression of its own within ``outer``: concentrated, and worse
        than the rest of ``outer``. Otherwise it is part of ``outer``'s regression."""
        if not self._concentrated(inner, outer, cols):
            return False
        return self._contrast_p(inner, outer, cols) <= self.config.residual_alpha

    def intensity(self, focus: int, cols: np.ndarray) -> float:
        """CX loss per order of ``focus`` over ``cols``."""
        orders = self.effects.stats["orders"][focus, cols].sum()
        return float(self.loss[focus, cols].sum() / max(orders, 1.0))

    def _explain_away(self, found: list[Finding]) -> list[Finding]:
        """From the broadest focus (fewest dimensions, then least intense) on, drop those the
        other remaining foci explain; then fold inner foci into outer ones."""
        kept = list(found)
        for f in sorted(
            found, key=lambda f: (self.hier.dims(f.focus), self.intensity(f.focus, f.cols))
        ):
            others = [g.focus for g in kept if g is not f]
            if self.explained(f.focus, f.primary, f.cols, others):
                kept.remove(f)
        return merge_inner(kept, self.hier, self.distinct)
