"""The product manager's summary of an incident, in business language.

Every figure comes from the investigation and the what-if estimate of the top fix (both
measured on the data); the projection turns rate changes into weekly counts with the scope's
orders of the last week. Where the data cannot say something (churn: orders carry no
customer id) the summary says what it measured instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cxagent.hypotheses import REGISTRY, normal_variance

PLAIN_CAUSES = {name: h.plain for name, h in REGISTRY.items()} | {
    normal_variance.NAME: normal_variance.PLAIN
}
COMPONENT_WORDS = {
    "late_rate": "late deliveries",
    "cancellation_rate": "cancellations",
    "refund_rate": "refunds",
    "support_contact_rate": "support contacts",
    "item_issue_rate": "missing or substituted items",
}


def _likelihood(confidence: float) -> str:
    if confidence >= 0.9:
        return "almost certainly"
    if confidence >= 0.7:
        return "very likely"
    if confidence >= 0.5:
        return "likely"
    return "possibly"


def _where(slice_: Mapping[str, Any]) -> str:
    parts = [str(slice_[k]) for k in ("region", "category", "store_id") if k in slice_]
    if "store_id" in slice_:
        parts[-1] = f"store {slice_['store_id']}"
    if "basket_size" in slice_:
        parts.append(f"{slice_['basket_size']} baskets")
    text = " ".join(parts) or "the whole marketplace"
    return f"{text} at {slice_['daypart'].replace('_', ' ')}" if "daypart" in slice_ else text


def what_broke(inv: Mapping[str, Any]) -> str:
    """The regression: where, how much, since when, which customer outcomes moved."""
    moved = sorted(
        (
            (v["delta"] / max(v["baseline"], 1e-3), name, v)
            for name, v in (inv.get("components") or {}).items()
            if v.get("delta", 0) > 0
        ),
        key=lambda t: t[0],
        reverse=True,
    )
    text = (
        f"Customer experience in {_where(inv['investigated_slice'])} fell from "
        f"{inv['baseline']:.0f} to {inv['current']:.0f} on our 0-100 CX Score "
        f"since {inv['window_start'][:16].replace('T', ' ')}; "
        f"{inv['affected_orders']:,} orders were affected."
    )
    if moved:
        worst = [
            f"{COMPONENT_WORDS.get(n, n)} rose from {v['baseline']:.1%} to {v['current']:.1%}"
            for _, n, v in moved[:2]
        ]
        text += " " + "; ".join(worst).capitalize() + "."
    return text


def why(inv: Mapping[str, Any]) -> str:
    """The causes with how sure we are, in words; 'no clear cause' when none stands."""
    causes = [c for c in inv.get("causes", []) if c["cause"] != "normal_variance"]
    if not causes:
        return "We found no cause that stands out from normal variation: monitor, no action needed."
    top = causes[0]
    text = (
        f"{_likelihood(top['confidence']).capitalize()} ({top['confidence']:.0%} confidence) "
        f"because {PLAIN_CAUSES.get(top['cause'], top['cause'])}"
    )
    if top.get("change_id"):
        text += f", starting with the logged change {top['change_id']}"
    text += f"; this alone costs about {abs(top['impact']):.1f} CX points."
    for c in causes[1:2]:
        text += (
            f" It is {_likelihood(c['confidence'])} ({c['confidence']:.0%}) made worse "
            f"because {PLAIN_CAUSES.get(c['cause'], c['cause'])}."
        )
    return text


def causes_stand(inv: Mapping[str, Any]) -> bool:
    """Whether the investigation names a cause (anything but normal variance)."""
    return any(c["cause"] != "normal_variance" for c in inv.get("causes", []))


def _top(recs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((r for r in recs.get("recommendations", []) if r.get("estimate")), None)


def _count(x: float) -> float:
    return round(x, 1) + 0.0  # no "-0.0"


def projection(
    top: Mapping[str, Any], weekly_orders: float, plan_days: int | None
) -> dict[str, Any]:
    """Weekly counts of what the fix changes, with 90% intervals: rating lift, refunds,
    bad experiences avoided (late, canceled or refunded orders), and time to full impact."""
    metrics = top["estimate"]["metrics"]

    def weekly(name: str, sign: float = -1.0) -> dict[str, float] | None:
        m = metrics.get(name)
        if not m or m["change"] is None:
            return None
        lo, hi = sorted(sign * weekly_orders * x for x in m["interval"])
        return {
            "value": _count(sign * weekly_orders * m["change"]),
            "low": _count(lo),
            "high": _count(hi),
        }

    rating = metrics.get("avg_rating")
    late_saved = None
    if (m := metrics.get("on_time_rate")) is not None and m["change"] is not None:
        # late deliveries avoided a week: delivered orders are nearly all orders in scope
        late_saved = {
            "value": _count(weekly_orders * m["change"]),
            "low": _count(weekly_orders * m["interval"][0]),
            "high": _count(weekly_orders * m["interval"][1]),
        }
    return {
        "weekly_orders": int(weekly_orders),
        "rating_lift": None
        if rating is None or rating["change"] is None
        else {
            "value": rating["change"],
            "low": rating["interval"][0],
            "high": rating["interval"][1],
        },
        "refunds_avoided_per_week": weekly("refund_rate"),
        "cancellations_avoided_per_week": weekly("cancellation_rate"),
        "late_orders_avoided_per_week": late_saved,
        "retention": (
            "Churn is not measurable here (orders carry no customer id); the customers "
            "spared a late, canceled or refunded order each week are the measured proxy."
        ),
        # the fix reaches the whole scope when the rollout's last phase (the launch) begins
        "time_to_impact_days": plan_days,
    }


def _courier_tradeoff(e: Mapping[str, Any], cost_text: str) -> str:
    eff, (elo, ehi) = e["efficiency_change"], e["efficiency_change_interval"]
    if eff >= 0:
        return f"No efficiency cost: courier productivity changes {eff:+.1%}{cost_text}."
    return (
        f"Couriers would deliver {abs(eff):.1%} fewer orders per hour (90% interval "
        f"{elo:+.1%} to {ehi:+.1%}){cost_text}, in exchange for {e['cx_gain']:.1f} CX points."
    )


def summary(
    inv: Mapping[str, Any],
    recs: Mapping[str, Any],
    *,
    weekly_orders: float,
    plan_days: int | None,
    phases: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """What broke, why, what we recommend, the tradeoff and the projection."""
    top = _top(recs)
    out: dict[str, Any] = {
        "incident_id": inv["id"],
        "severity": inv["severity"],
        "title": f"{_where(inv['investigated_slice'])}: CX {inv['delta']:+.1f} points",
        "what_broke": what_broke(inv),
        "why": why(inv),
    }
    if top is None:
        out["recommendation"] = (
            "Monitor, no action needed: no fix is warranted until the evidence points at a cause."
            if not causes_stand(inv)
            else (recs.get("message") or "No fix in the action library addresses this cause.")
        )
        out["tradeoff"] = None
        out["projection"] = None
        return out
    e = top["estimate"]
    lo, hi = e["cx_gain_interval"]
    out["recommendation"] = (
        f"{top['title']}. Expected gain: {e['cx_gain']:+.1f} CX points "
        f"(90% interval {lo:+.1f} to {hi:+.1f}) for the {e['orders']:,} orders in scope."
    )
    eff, (elo, ehi) = e["efficiency_change"], e["efficiency_change_interval"]
    cost = e["metrics"].get("cost_per_delivery")
    cost_text = (
        f"; delivery cost {cost['change']:+.2f} per order"
        if cost and cost["change"] is not None
        else ""
    )
    if top["action"] == "suppress_skus":  # its cost is sales, not courier time
        spread = (
            f" (90% interval {abs(ehi):.1%} to {abs(elo):.1%})"
            if f"{abs(ehi):.1%}" != f"{abs(elo):.1%}"
            else ""  # the hidden lines' share of sales: no sampling error to show
        )
        out["tradeoff"] = (
            f"We would give up {abs(eff):.1%} of sales in scope{spread} in exchange for "
            f"{e['cx_gain']:.1f} CX points."
        )
    else:
        out["tradeoff"] = _courier_tradeoff(e, cost_text)
    out["projection"] = projection(top, weekly_orders, plan_days)
    out["rollout"] = [
        f"{p['name']}: {p['exposure']:.0%} of the scope for at least {p['min_days']} days"
        for p in phases
    ]
    return out
