"""Top slices of an incident from ``cxagent.localize`` (the default when it is installed).

The leaves are the incident slice's store x basket size series, split by daypart, over the
incident's windows: observed bad events of its main component against the calibrated
expectation (an additive KPI). ``localize`` finds the few slices that explain the excess
(explaining-away search with BH-adjusted significance); each is returned in the same form
as ``ranking.top_slices`` (CX delta, orders, loss and component moves from the window
statistics), so either function can feed the incident draft.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxagent.data.cohorts import DAYPARTS
from cxagent.incidents.detection import BAD_EVENT_RATE, COMPONENTS, MetricModel
from cxagent.incidents.effects import Effects
from cxagent.incidents.hierarchy import Hierarchy

LEAF_KEYS = frozenset({"store_id", "basket_size"})
DIMS = ("region", "category", "store_id", "basket_size", "daypart")


def _leaf_frame(
    effects: Effects, hier: Hierarchy, focus: int, cols: np.ndarray, dayparts: np.ndarray, comp: str
) -> pd.DataFrame:
    rows = [r for r in (focus, *hier.descendants(focus)) if set(hier.slices[r]) == LEAF_KEYS]
    records = []
    for r in rows:
        base = {k: str(v) for k, v in hier.expand(hier.slices[r]).items()}
        for d in range(len(DAYPARTS)):
            sub = cols[dayparts[cols] == d]
            if sub.size == 0:
                continue
            real = float(effects.observed[comp][r, sub].sum())
            predict = float(effects.expected[comp][r, sub].sum())
            if real > 0 or predict > 0:
                records.append({**base, "daypart": DAYPARTS[d], "real": real, "predict": predict})
    return pd.DataFrame.from_records(records)


def localize_top_slices(
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
    """Ranked regressing slices inside ``focus`` (same contract as ``ranking.top_slices``)."""
    from cxagent.localize import LocalizeConfig, localize

    frame = _leaf_frame(effects, hier, focus, cols, dayparts, primary)
    fixed = {k: str(v) for k, v in hier.expand(hier.slices[focus]).items()}
    dims = [d for d in DIMS if d not in fixed and d in frame and frame[d].nunique() > 1]
    if frame.empty or not dims:
        return []
    result = localize(
        frame,
        dims,
        kind="additive",
        direction="rise",
        config=LocalizeConfig(max_slices=limit, alpha=alpha),
    )
    total_loss = float(loss[focus, cols].sum())
    out = []
    for found in result.slices:
        where = {k: (int(v) if k == "store_id" else v) for k, v in found.slice.items()}
        daypart = where.pop("daypart", None)
        full = dict(hier.slices[focus]) | where
        row = hier.find(full)
        entry: dict[str, Any] = {
            "slice": full | ({} if daypart is None else {"daypart": daypart}),
            "label": " + ".join(f"{k}={v}" for k, v in (fixed | found.slice).items()),
            "explained_share": round(found.share, 3),
            "p_value": found.p_value,
            "q_value": found.q_value,
            "stars": found.stars,
        }
        if row is not None:
            sub = cols if daypart is None else cols[dayparts[cols] == DAYPARTS.index(daypart)]
            t = effects.sums([row], sub)
            now, was = t.cx_scores()
            entry["slice"] = dict(hier.slices[row]) | (
                {} if daypart is None else {"daypart": daypart}
            )
            entry["label"] = hier.label(row) + ("" if daypart is None else f" + daypart={daypart}")
            entry |= {
                "orders": int(round(t.orders)),
                "delta": round(now - was, 2),
                "loss": round(float(loss[row, sub].sum()), 1),
                "share": round(float(loss[row, sub].sum()) / max(total_loss, 1e-12), 3),
                "components": {
                    BAD_EVENT_RATE[c]: round(
                        (t.observed[c] - t.expected[c]) / max(t.trials[c], 1e-12), 4
                    )
                    for c in COMPONENTS
                },
            }
        out.append(entry)
    return out


def combined_top_slices(**kwargs: Any) -> list[dict[str, Any]]:
    """``localize``'s slices inside the incident first, then the concentration ranking of
    ``ranking.top_slices`` (without repeats) up to ``limit``. Inside an incident whose whole
    slice is the root cause (SF + grocery), ``localize`` rightly finds no smaller slice that
    explains the excess, and the ranking still says where the loss concentrates (dinner)."""
    from cxagent.incidents.ranking import top_slices

    limit = int(kwargs.get("limit", 8))
    found = [dict(e, source="localize") for e in localize_top_slices(**kwargs)]
    seen = [e["slice"] for e in found]
    for e in top_slices(**kwargs):
        if len(found) >= limit:
            break
        if e["slice"] not in seen:
            found.append(dict(e, source="ranking"))
    return found[:limit]
