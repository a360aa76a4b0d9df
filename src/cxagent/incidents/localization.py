"""Top slices of an incident from ``cxagent.localize`` (the default when it is installed).

The leaves are the incident slice's store x basket size series, split by daypart, over the
incident's windows: observed bad events of its main component against their own history's expectation,
moved in each window as the detector moved the incident slice's (with the rest of its
market, when it lies in one), and scaled up by the incident
slice's overall observed-over-expected ratio. The incident slice regressed as a whole (that
is what grouping decided), so the question inside it is where the regression concentrates:
``localize`` finds the few slices significantly worse than the slice's average
(explaining-away search with BH-adjusted significance); each is returned in the same form
as ``ranking.top_slices`` (CX delta, orders, loss and component moves from the window
statistics), so either function can feed the incident draft.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cxagent.data.cohorts import DAYPARTS
from cxagent.incidents.detection import MetricModel
from cxagent.incidents.effects import Effects
from cxagent.incidents.hierarchy import Hierarchy
from cxagent.incidents.ranking import slice_summary

LEAF_KEYS = frozenset({"store_id", "basket_size"})
DIMS = ("region", "category", "store_id", "basket_size", "daypart")


def _leaf_frame(
    effects: Effects, hier: Hierarchy, focus: int, cols: np.ndarray, dayparts: np.ndarray, comp: str
) -> pd.DataFrame:
    rows = [r for r in (focus, *hier.descendants(focus)) if set(hier.slices[r]) == LEAF_KEYS]
    # the focus's market moves every leaf alike (leaves' own market factors would count
    # the focus's other leaves, which share the regression, as the market)
    own = effects.expected[comp][focus]
    moved = np.where(own > 0, effects.tested[comp][0][focus] / np.where(own > 0, own, 1.0), 1.0)
    records = []
    for r in rows:
        base = {k: str(v) for k, v in hier.expand(hier.slices[r]).items()}
        for d in range(len(DAYPARTS)):
            sub = cols[dayparts[cols] == d]
            if sub.size == 0:
                continue
            real = float(effects.observed[comp][r, sub].sum())
            predict = float((effects.expected[comp][r, sub] * moved[sub]).sum())
            if real > 0 or predict > 0:
                records.append({**base, "daypart": DAYPARTS[d], "real": real, "predict": predict})
    frame = pd.DataFrame.from_records(records)
    if not frame.empty and frame["predict"].sum() > 0:
        # the focus as a whole regressed (that is the incident): look for where inside it
        # the regression concentrates, i.e. leaves worse than the focus's overall ratio
        frame["baseline"] = frame["predict"]
        frame["predict"] *= max(frame["real"].sum() / frame["predict"].sum(), 1.0)
    return frame


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
            "explained_share": round(_explained_share(frame, found.slice), 3),
            "p_value": found.p_value,
            "q_value": found.q_value,
            "stars": found.stars,
        }
        if row is not None:
            dp = None if daypart is None else DAYPARTS.index(daypart)
            entry |= slice_summary(effects, loss, hier, row, dp, cols, dayparts, total_loss)
        out.append(entry)
    return out


def _explained_share(frame: pd.DataFrame, where: dict[str, str]) -> float:
    """Share of the incident slice's excess (against the unscaled baseline) in ``where``."""
    excess = frame["real"] - frame["baseline"]
    inside = np.ones(len(frame), dtype=bool)
    for k, v in where.items():
        inside &= (frame[k] == v).to_numpy()
    return float(excess[inside].sum() / max(float(excess.sum()), 1e-12))


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
