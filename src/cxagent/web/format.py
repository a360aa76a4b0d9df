"""Numbers, times and names as the pages print them (Jinja filters).

Every filter takes what a stored payload may hold, including nothing: a missing value prints
as a dash instead of failing the page, so a view the builder has not filled in yet degrades
to blanks.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

DASH = "–"
METRIC_LABELS = {
    "cx_score": "CX Score",
    "late_rate": "late rate",
    "on_time_rate": "on-time rate",
    "cancellation_rate": "cancellation rate",
    "refund_rate": "refund rate",
    "support_contact_rate": "support contact rate",
    "item_issue_rate": "item issue rate",
    "item_accuracy": "item accuracy",
    "avg_rating": "average rating",
    "eta_mae_min": "ETA error (min)",
    "orders_per_trip": "orders per trip",
    "dasher_min_per_delivery": "dasher minutes per delivery",
    "cost_per_delivery": "cost per delivery",
    "customer_wait_min": "customer wait (min)",
    "promised_min": "promised time (min)",
    "deliveries_per_dasher_hour": "deliveries per dasher hour",
}
RATE_UNITS = {"", "rate", "share"}  # values are shares: 0.183 is 18.3%


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def num(value: Any, digits: int = 1) -> str:
    x = _number(value)
    return DASH if x is None else f"{x:,.{digits}f}"


def signed(value: Any, digits: int = 1) -> str:
    x = _number(value)
    return DASH if x is None else f"{x:+,.{digits}f}".replace("-", "−")


def pct(value: Any, digits: int = 1) -> str:
    """A share as a percentage: 0.183 -> 18.3%."""
    x = _number(value)
    return DASH if x is None else f"{x * 100:,.{digits}f}%"


def signed_pct(value: Any, digits: int = 1) -> str:
    x = _number(value)
    return DASH if x is None else signed(x * 100, digits) + "%"


def interval(low: Any, high: Any, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    """``(+2.6 to +4.5)``, or nothing when either end is missing."""
    lo, hi = _number(low), _number(high)
    if lo is None or hi is None:
        return ""
    return f"({signed(lo * scale, digits)}{suffix} to {signed(hi * scale, digits)}{suffix})"


def ci(pair: Any, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    """An interval stored as ``[low, high]``: ``(+2.6 to +4.5)``; nothing when absent."""
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return ""
    return interval(pair[0], pair[1], digits, scale, suffix)


def pct_ci(pair: Any, digits: int = 0) -> str:
    """An interval of a share as percentages: ``(52% to 90%)``; nothing when absent."""
    if not isinstance(pair, list | tuple) or len(pair) != 2 or None in pair:
        return ""
    return f"({pct(pair[0], digits)} to {pct(pair[1], digits)})"


def change_ci(pair: Any, unit: Any = "") -> str:
    """An interval of a metric change in the metric's unit (rates in points)."""
    if not isinstance(pair, list | tuple) or len(pair) != 2 or None in pair:
        return ""
    return f"({change(pair[0], unit)} to {change(pair[1], unit)})"


def when(value: Any, fmt: str = "%b %d %H:%M") -> str:
    """A timestamp (datetime or ISO text) as ``Jan 03 16:00``."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.strftime(fmt) if isinstance(value, dt.datetime | dt.date) else DASH


def p_value(value: Any) -> str:
    x = _number(value)
    if x is None:
        return DASH
    return "p < 0.001" if x < 0.001 else f"p {x:.3f}"


def stars(p: Any) -> str:
    """Significance stars of a (preferably FDR-adjusted) p-value."""
    x = _number(p)
    if x is None:
        return ""
    return "***" if x < 0.001 else "**" if x < 0.01 else "*" if x < 0.05 else ""


def label(name: Any) -> str:
    """A metric or cause name for people: ``batching_policy`` -> ``batching policy``."""
    text = str(name or "")
    return METRIC_LABELS.get(text, text.replace("_", " "))


# unit -> (decimals, suffix) for units that are not shares (see cxagent.metrics.definitions)
UNITS = {
    "points": (1, ""),
    "minutes": (1, " min"),
    "min": (1, " min"),
    "stars": (2, " stars"),
    "currency": (2, ""),
    "USD": (2, " USD"),
    "orders": (2, ""),
}


def _unit(unit: str) -> tuple[int, str]:
    return UNITS.get(unit, (2, f" {unit}"))


def value(x: Any, unit: Any = "") -> str:
    """A metric value in its unit: shares as percentages, minutes, points, stars."""
    unit = str(unit or "")
    if unit in RATE_UNITS:
        return pct(x)
    if unit == "%":  # already a percentage
        return DASH if _number(x) is None else f"{num(x)}%"
    digits, suffix = _unit(unit)
    text = num(x, digits)
    return text if text == DASH else text + suffix


def change(x: Any, unit: Any = "") -> str:
    """A metric change in its unit: shares in percentage points."""
    unit = str(unit or "")
    if unit in RATE_UNITS:
        n = _number(x)
        return DASH if n is None else f"{signed(n * 100)} pts"
    if unit == "%":
        return DASH if _number(x) is None else f"{signed(x)} pts"
    digits, suffix = _unit(unit)
    text = signed(x, digits)
    return text if text == DASH else text + suffix


def describe(item: Any) -> str:
    """A figure however a payload states it: its text, else its value with unit and
    interval, else the value itself."""
    if not isinstance(item, dict):
        return DASH if item is None else str(item)
    if item.get("text"):
        return str(item["text"])
    unit = f" {item['unit']}" if item.get("unit") else ""
    text = f"{signed(item.get('value'), 2)}{unit}"
    span = interval(item.get("low"), item.get("high"), 2)
    return f"{text} {span}" if span else text


# the projection's figures (cxagent.workbench.summary): label and unit
PROJECTION = {
    "weekly_orders": ("Orders in scope per week", "count"),
    "rating_lift": ("Rating lift", "stars"),
    "refunds_avoided_per_week": ("Refunds avoided per week", "count"),
    "cancellations_avoided_per_week": ("Cancellations avoided per week", "count"),
    "late_orders_avoided_per_week": ("Late deliveries avoided per week", "count"),
    "retention": ("Retention", None),
    "time_to_impact_days": ("Time to full impact", "days"),
}


def _figure(item: Any, unit: str | None) -> str:
    if isinstance(item, dict) and "value" in item and not item.get("text"):
        digits = 2 if unit == "stars" else 0
        text = signed(item["value"], digits) + (" stars" if unit == "stars" else "")
        span = interval(item.get("low"), item.get("high"), digits)
        return f"{text} (90% interval {span[1:-1]})" if span else text
    if unit == "days" and _number(item) is not None:
        return f"about {num(item, 0)} days"
    if unit == "count" and _number(item) is not None:
        return num(item, 0)
    return describe(item)


def projection_rows(projection: Any) -> list[tuple[str, str]]:
    """The impact projection as (label, text) rows in business language: the known figures
    first, with their units and 90% intervals, then anything else it holds."""
    if not isinstance(projection, dict):
        return [("Projection", str(projection))] if projection else []
    keys = [*PROJECTION, *(k for k in projection if k not in PROJECTION)]
    rows = []
    for key in keys:
        if projection.get(key) is None:
            continue
        name, unit = PROJECTION.get(key, (label(key).capitalize(), None))
        rows.append((name, _figure(projection[key], unit)))
    return rows


def tone(delta: Any, better: Any = "higher") -> str:
    """``good`` or ``bad`` for a change, given which direction is better (CSS class)."""
    x = _number(delta)
    if x is None or x == 0:
        return ""
    return "good" if (x > 0) == (str(better) != "lower") else "bad"


FILTERS: dict[str, Callable[..., Any]] = {
    "num": num,
    "signed": signed,
    "pct": pct,
    "signed_pct": signed_pct,
    "interval": interval,
    "ci": ci,
    "change_ci": change_ci,
    "pct_ci": pct_ci,
    "when": when,
    "p_value": p_value,
    "label": label,
    "value": value,
    "change": change,
    "tone": tone,
    "projection_rows": projection_rows,
}
