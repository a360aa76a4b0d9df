"""Top regressing slices inside an incident (the interim localisation).

Candidates are the incident's slice and every slice inside it, each over all of the
episode's windows and over each daypart's windows alone (so SF + grocery yields
SF + grocery + dinner). A candidate's score is its CX loss beyond its fair share: the points
x orders it lost minus what it would have lost if the incident's loss were spread over
orders evenly. A slice that is merely big (medium baskets, say) scores about zero; one where
the loss concentrates scores high; a slice inside one already listed is skipped unless its
loss is concentrated there too. Each candidate is also tested on its own (``excess_p`` on
the incident's main component, on its empirical null), with Benjamini-Hochberg across the
candidates (Benjamini and Hochberg 1995); only candidates significant at ``alpha`` are kept.

``cxagent.localize`` (an explanatory-power localisation over leaves) can replace this: the
pipeline takes any function with the signature of ``top_slices``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import ndtr

from cxagent.data.cohorts import DAYPARTS
from cxagent.detect.fdr import benjamini_hochberg
from cxagent.incidents.detection import BAD_EVENT_RATE, COMPONENTS, MetricModel
from cxagent.incidents.effects import Effects
from cxagent.incidents.hierarchy import Hierarchy

TopSlicesFn = Callable[..., list[dict[str, Any]]]
MIN_LIFT = 1.1  # a slice inside a listed one must concentrate its loss at least this much


def _redundant(
    cand: tuple[int, int | None],
    listed: tuple[int, int | None],
    loss: np.ndarray,
    orders: np.ndarray,
    cols: np.ndarray,
    dayparts: np.ndarray,
    hier: Hierarchy,
) -> bool:
    """``cand`` lies inside ``listed`` and adds nothing: its share of the listed slice's loss
    is within ``MIN_LIFT`` of its share of the orders (medium baskets inside SF + grocery)."""
    (r, d), (s, e) = cand, listed
    if not hier.contains(s, r) or (e is not None and d != e):
        return False
    sub_c = cols if d is None else cols[dayparts[cols] == d]
    sub_l = cols if e is None else cols[dayparts[cols] == e]
    share_loss = loss[r, sub_c].sum() / max(loss[s, sub_l].sum(), 1e-12)
    share_orders = orders[r, sub_c].sum() / max(orders[s, sub_l].sum(), 1.0)
    return bool(share_loss < MIN_LIFT * share_orders)


def top_slices(
    *,
    effects: Effects,
    loss: np.ndarray,
    hier: Hierarchy,
    models: dict[str, MetricModel],
    focus: int,
    cols: np.ndarray,
    dayparts: np.ndarray,
    primary: str,
    limit: int = 8,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Ranked regressing slices inside ``focus`` over window positions ``cols``
    (``dayparts[c]`` is the daypart index of window position ``c``)."""
    rows = np.array([focus, *hier.descendants(focus)])
    orders = effects.stats["orders"]
    total_loss = float(loss[focus, cols].sum())
    total_orders = float(orders[focus, cols].sum())
    if total_loss <= 0 or total_orders <= 0:
        return []
    model = models[primary]
    scale = model.null.scale[model.null.classes(model.shock[rows])]
    cands: list[tuple[int, int | None]] = []
    scores, pvals = [], []
    for d in (None, *range(len(DAYPARTS))):
        sub = cols if d is None else cols[dayparts[cols] == d]
        if sub.size == 0:
            continue
        lo = loss[np.ix_(rows, sub)].sum(axis=1)
        od = orders[np.ix_(rows, sub)].sum(axis=1)
        ex = (effects.observed[primary] - effects.expected[primary])[np.ix_(rows, sub)].sum(axis=1)
        var = effects.variance[primary][np.ix_(rows, sub)].sum(axis=1)
        z = np.where(var > 0, ex / np.sqrt(np.maximum(var, 1e-300)), 0.0) / scale
        for r, score, p in zip(rows, lo - od / total_orders * total_loss, ndtr(-z), strict=True):
            if d is None and r == focus:
                continue
            cands.append((int(r), d))
            scores.append(float(score))
            pvals.append(float(p))
    if not cands:
        return []
    keep, q = benjamini_hochberg(np.array(pvals), alpha=alpha)
    order: list[int] = []
    for k in np.argsort(-np.array(scores)):
        if len(order) == limit or scores[k] <= 0:
            break
        if keep[k] and not any(
            _redundant(cands[k], cands[j], loss, orders, cols, dayparts, hier) for j in order
        ):
            order.append(int(k))
    out = []
    for k in order:
        r, d = cands[k]
        entry = slice_summary(effects, loss, hier, r, d, cols, dayparts, total_loss)
        entry["excess_share"] = round(scores[k] / total_loss, 3)
        entry["p_value"], entry["q_value"] = pvals[k], float(q[k])
        out.append(entry)
    return out


def slice_summary(
    effects: Effects,
    loss: np.ndarray,
    hier: Hierarchy,
    row: int,
    daypart: int | None,
    cols: np.ndarray,
    dayparts: np.ndarray,
    total_loss: float,
) -> dict[str, Any]:
    """How slice ``row`` (only its windows of ``daypart`` when given) fared over window
    positions ``cols``: its orders, CX Score delta, CX loss and share of ``total_loss``, and
    the move of each component's bad-event rate against expectation."""
    sub = cols if daypart is None else cols[dayparts[cols] == daypart]
    t = effects.sums([row], sub)
    now, was = t.cx_scores()
    name = None if daypart is None else DAYPARTS[daypart]
    lost = float(loss[row, sub].sum())
    return {
        "slice": dict(hier.slices[row]) | ({} if name is None else {"daypart": name}),
        "label": hier.label(row) + ("" if name is None else f" + daypart={name}"),
        "orders": int(round(t.orders)),
        "delta": round(now - was, 2),
        "loss": round(lost, 1),
        "share": round(lost / max(total_loss, 1e-12), 3),
        "components": {
            BAD_EVENT_RATE[c]: round((t.observed[c] - t.expected[c]) / max(t.trials[c], 1e-12), 4)
            for c in COMPONENTS
        },
    }
