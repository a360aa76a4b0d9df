"""Plotly figures of the pages, built on the server as plain JSON.

Each function turns part of a stored payload into ``{"data": [...], "layout": {...}}``, which
the page embeds and ``static/app.js`` draws with the served plotly.js: no request per chart,
nothing fetched from the internet. A function returns None when its data is missing, and the
page then says so instead of drawing an empty frame.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from cxagent.web.format import label

Figure = dict[str, Any]
INK, MUTED, ACCENT, BAD, GOOD, WARN = (
    "#1f2937",
    "#9ca3af",
    "#2563eb",
    "#dc2626",
    "#059669",
    "#d97706",
)
SEVERITY_COLORS = {"high": BAD, "medium": WARN, "low": MUTED}


def _layout(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "margin": {"l": 56, "r": 24, "t": 16, "b": 40},
        "font": {"family": "system-ui, sans-serif", "size": 12, "color": INK},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "hovermode": "closest",
        "showlegend": False,
        "xaxis": {"gridcolor": "#eef0f3", "zeroline": False},
        "yaxis": {"gridcolor": "#eef0f3", "zeroline": False},
    }
    base.update(extra)
    return base


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


def _vline(
    x: Any, color: str, text: str, xs: Sequence[Any], *, dash: str = "dot", y: float = 1.0
) -> tuple[Any, Any]:
    """A vertical line at ``x`` with its label, written leftwards in the last third of the
    axis ``xs`` so that it stays inside the plot."""
    late = bool(xs) and _iso(x) > str(xs[int(len(xs) * 0.65)])
    shape = {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": _iso(x),
        "x1": _iso(x),
        "y0": 0,
        "y1": 1,
        "line": {"color": color, "width": 1.5, "dash": dash},
    }
    note = {
        "x": _iso(x),
        "y": y,
        "xref": "x",
        "yref": "paper",
        "text": text,
        "showarrow": False,
        "xanchor": "right" if late else "left",
        "yanchor": "top",
        "font": {"size": 11, "color": color},
        "bgcolor": "rgba(255,255,255,0.8)",
    }
    return shape, note


def _time_axis(xs: Sequence[Any]) -> dict[str, Any]:
    """A date axis fixed to the data's span (labels of markers must not stretch it)."""
    return {"gridcolor": "#eef0f3", "zeroline": False, "range": [_iso(xs[0]), _iso(xs[-1])]}


def _in_range(x: Any, xs: Sequence[Any]) -> bool:
    if not xs:
        return False
    text = _iso(x)
    return str(xs[0]) <= text <= str(xs[-1]) + "T23:59:59"


def cx_trend(trend: dict[str, Any] | None, incidents: Iterable[Any]) -> Figure | None:
    """The marketplace's CX Score with a marker at each incident detected in the range."""
    if not trend or not trend.get("x"):
        return None
    xs = list(trend["x"])
    shapes, notes = [], []
    for i, inc in enumerate(incidents):
        if _in_range(inc.detected_at, xs):
            shape, note = _vline(
                inc.detected_at,
                SEVERITY_COLORS.get(inc.severity, MUTED),
                inc.label,
                xs,
                y=1.0 - 0.09 * (i % 4),
            )
            shapes.append(shape)
            notes.append(note)
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": xs,
            "y": trend.get("cx_score") or [],
            "name": "CX Score",
            "line": {"color": ACCENT, "width": 2},
            "hovertemplate": "%{x}<br>CX Score %{y:.1f}<extra></extra>",
        }
    ]
    layout = _layout(
        shapes=shapes,
        annotations=notes,
        xaxis=_time_axis(xs),
        yaxis={"title": {"text": "CX Score"}, "gridcolor": "#eef0f3"},
    )
    return {"data": data, "layout": layout}


def incident_trend(trend: dict[str, Any] | None, incident: Any) -> Figure | None:
    """The slice's daily CX Score before and after: the baseline and the incident window
    shaded, the incident's baseline level and its level in the window as reference lines."""
    if not trend or not trend.get("x"):
        return None
    xs = list(trend["x"])
    start = trend.get("window_start") or incident.window_start
    end = trend.get("window_end") or incident.window_end
    shapes, notes = [], []
    spans = [(start, end, "rgba(220,38,38,0.08)", BAD, "incident window")]
    if trend.get("baseline_start"):
        spans.append((trend["baseline_start"], start, "rgba(156,163,175,0.12)", MUTED, "baseline"))
    for x0, x1, fill, color, text in spans:
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": _iso(x0),
                "x1": _iso(x1),
                "y0": 0,
                "y1": 1,
                "fillcolor": fill,
                "line": {"width": 0},
            }
        )
        notes.append(
            {
                "x": _iso(x0),
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "text": text,
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 11, "color": color},
            }
        )
    if incident.metric == "cx_score":
        for x0, x1, level, color in (
            (xs[0], start, incident.baseline, MUTED),
            (start, xs[-1], incident.current, BAD),
        ):
            shapes.append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "y",
                    "x0": _iso(x0),
                    "x1": _iso(x1),
                    "y0": level,
                    "y1": level,
                    "line": {"color": color, "width": 1, "dash": "dash"},
                }
            )
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": xs,
            "y": trend.get("cx_score") or [],
            "name": "CX Score",
            "line": {"color": ACCENT, "width": 2},
            "marker": {"size": 5},
            "hovertemplate": "%{x}<br>CX Score %{y:.1f}<extra></extra>",
        }
    ]
    if trend.get("orders"):
        data.append(
            {
                "type": "bar",
                "x": xs,
                "y": trend["orders"],
                "name": "orders",
                "yaxis": "y2",
                "marker": {"color": "rgba(156,163,175,0.35)"},
                "hovertemplate": "%{x}<br>%{y:,} orders<extra></extra>",
            }
        )
    orders = [o for o in trend.get("orders") or [] if isinstance(o, int | float)]
    layout = _layout(
        shapes=shapes,
        annotations=notes,
        xaxis=_time_axis(xs),
        yaxis={"title": {"text": "CX Score"}, "gridcolor": "#eef0f3"},
        # orders fill the bottom third: context for the score, not a second headline
        yaxis2={
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
            "title": {"text": "orders a day"},
            "range": [0, 3 * max(orders, default=1)],
        },
        margin={"l": 56, "r": 56, "t": 16, "b": 40},
    )
    return {"data": data, "layout": layout}


def _asymmetric(values: Sequence[float], intervals: Sequence[Any]) -> dict[str, Any]:
    """Plotly error bars from [low, high] intervals around the values."""
    plus, minus = [], []
    for v, ci in zip(values, intervals, strict=True):
        ok = isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci
        plus.append(max(ci[1] - v, 0.0) if ok else 0.0)
        minus.append(max(v - ci[0], 0.0) if ok else 0.0)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "color": INK}


def shap_shift(shift: dict[str, Any] | None) -> Figure | None:
    """What each feature contributes to the predicted before/after change of the outcome
    (percentage points, 90% interval), largest at the top."""
    features = [f for f in (shift or {}).get("features") or [] if f.get("contribution") is not None]
    if not features:
        return None
    features.sort(key=lambda f: abs(f["contribution"]))
    xs = [f["contribution"] * 100 for f in features]
    cis = [[v * 100 for v in f.get("interval") or []] or None for f in features]
    names = [
        f"{f['feature']}" + (f" ({label(f['hypothesis'])})" if f.get("hypothesis") else "")
        for f in features
    ]
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "x": xs,
            "y": names,
            "marker": {"color": [BAD if x > 0 else GOOD for x in xs]},
            "error_x": _asymmetric(xs, cis),
            "hovertemplate": "%{y}<br>%{x:+.2f} pts<extra></extra>",
        }
    ]
    outcome = label((shift or {}).get("outcome") or "outcome")
    layout = _layout(
        xaxis={
            "title": {"text": f"contribution to the {outcome} rate change (pts)"},
            "zeroline": True,
        },
        yaxis={"automargin": True},
        height=max(220, 34 * len(features) + 80),
    )
    return {"data": data, "layout": layout}


def did_effects(contrast: dict[str, Any] | None) -> Figure | None:
    """Each driver's diff-in-diff effect with its 95% CI, one row per driver on its own axis
    (each in its own unit), labelled with the pre-trend and placebo p-values that qualify
    it; a hollow marker flags a comparison whose pre-trend or placebo test fails at 5%."""
    drivers = [
        (name, d)
        for name, d in ((contrast or {}).get("drivers") or {}).items()
        if isinstance(d, dict) and d.get("effect") is not None
    ]
    if not drivers:
        return None
    data, shapes = [], []
    n = len(drivers)
    for i, (name, d) in enumerate(drivers, start=1):
        axis = "" if i == 1 else str(i)
        effect = d["effect"]
        ci = d.get("ci")
        color = INK if not ci or ci[0] <= 0 <= ci[1] else BAD if effect > 0 else GOOD
        doubtful = any(
            isinstance(d.get(k), int | float) and d[k] < 0.05 for k in ("pretrend_p", "placebo_p")
        )
        tick = (
            f"<b>{label(name)}</b> ({d.get('measure', '')})<br>"
            f"<span style='font-size:10px'>pre-trend {_p(d.get('pretrend_p'))} · "
            f"placebo {_p(d.get('placebo_p'))}</span>"
        )
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [effect],
                "y": [tick],
                "xaxis": f"x{axis}",
                "yaxis": f"y{axis}",
                "marker": {
                    "size": 10,
                    "color": "white" if doubtful else color,
                    "line": {"color": color, "width": 2},
                },
                "error_x": _asymmetric([effect], [ci]),
                "hovertemplate": f"{d.get('measure', name)}: %{{x:.4g}}<extra></extra>",
            }
        )
        shapes.append(
            {
                "type": "line",
                "xref": f"x{axis}",
                "yref": f"y{axis} domain",
                "x0": 0,
                "x1": 0,
                "y0": 0,
                "y1": 1,
                "line": {"color": MUTED, "width": 1, "dash": "dot"},
            }
        )
    layout = _layout(
        grid={"rows": n, "columns": 1, "pattern": "independent", "ygap": 0.6},
        shapes=shapes,
        height=64 * n + 40,
        margin={"l": 24, "r": 24, "t": 8, "b": 24},
    )
    for i in range(1, n + 1):
        axis = "" if i == 1 else str(i)
        layout[f"xaxis{axis}"] = {"gridcolor": "#eef0f3", "zeroline": False}
        layout[f"yaxis{axis}"] = {"automargin": True}
    return {"data": data, "layout": layout}


def _p(value: Any) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return "p < 0.001" if value < 0.001 else f"p {value:.2f}"


def timeline(trend: dict[str, Any] | None, incident: Any, changes: Sequence[Any]) -> Figure | None:
    """Logged change events against the regression: when each change started, when the
    regression started and when it was detected, over the slice's CX Score."""
    xs = list((trend or {}).get("x") or [])
    events = [c for c in changes if isinstance(c, dict) and c.get("started_at")]
    if not xs and not events:
        return None
    shapes, notes = [], []
    for i, c in enumerate(events):
        text = str(c.get("change_id") or "") + (f" {c['name']}" if c.get("name") else "")
        color = WARN if c.get("matched") else MUTED
        shape, note = _vline(
            c["started_at"], color, text.strip(), xs, dash="dash", y=1 - 0.1 * (i % 5)
        )
        shapes.append(shape)
        notes.append(note)
    for x, color, text, y in (
        (incident.window_start, BAD, "regression starts", 0.5),
        (incident.detected_at, ACCENT, "detected", 0.38),
    ):
        shape, note = _vline(x, color, text, xs, dash="solid", y=y)
        shapes.append(shape)
        notes.append(note)
    if xs:
        data = [
            {
                "type": "scatter",
                "mode": "lines",
                "x": xs,
                "y": (trend or {}).get("cx_score") or [],
                "line": {"color": ACCENT, "width": 2},
                "hovertemplate": "%{x}<br>CX Score %{y:.1f}<extra></extra>",
            }
        ]
        yaxis: dict[str, Any] = {"title": {"text": "CX Score"}, "gridcolor": "#eef0f3"}
    else:  # no trend stored: the events alone, on a bare time axis
        moments = [_iso(e["started_at"]) for e in events]
        moments += [_iso(incident.window_start), _iso(incident.detected_at)]
        data = [{"type": "scatter", "mode": "markers", "x": moments, "y": [0] * len(moments)}]
        data[0]["marker"] = {"size": 0.1, "color": "rgba(0,0,0,0)"}
        yaxis = {"visible": False}
    layout = _layout(shapes=shapes, annotations=notes, yaxis=yaxis)
    if xs:
        layout["xaxis"] = _time_axis(xs)
    return {"data": data, "layout": layout}


def tradeoff(points: Sequence[Any]) -> Figure | None:
    """CX gain against efficiency change of each fix, with 90% intervals on both axes."""
    rows = [
        p
        for p in points
        if isinstance(p, dict)
        and p.get("cx_gain") is not None
        and p.get("efficiency_pct") is not None
    ]
    if not rows:
        return None
    xs = [p["efficiency_pct"] for p in rows]
    ys = [p["cx_gain"] for p in rows]
    data = [
        {
            "type": "scatter",
            "mode": "markers+text",
            "x": xs,
            "y": ys,
            "text": [str(i) for i in range(1, len(rows) + 1)],
            "textposition": "top right",
            "customdata": [p.get("action", "") for p in rows],
            "marker": {"size": 11, "color": ACCENT},
            "error_x": _asymmetric(
                xs, [[p.get("efficiency_low_pct"), p.get("efficiency_high_pct")] for p in rows]
            ),
            "error_y": _asymmetric(ys, [[p.get("cx_low"), p.get("cx_high")] for p in rows]),
            "hovertemplate": (
                "%{customdata}<br>CX %{y:+.1f} points<br>efficiency %{x:+.1f}%<extra></extra>"
            ),
        }
    ]
    layout = _layout(
        xaxis={
            "title": {"text": "efficiency change (%, deliveries per dasher hour)"},
            "zeroline": True,
        },
        yaxis={"title": {"text": "CX Score gain (points)"}, "zeroline": True},
    )
    return {"data": data, "layout": layout}


def experiment_progress(progress: Sequence[Any], plan: dict[str, Any] | None) -> Figure | None:
    """The primary metric's effect at each look with its always-valid interval, against the
    effect the plan expects and zero."""
    looks = [p for p in progress if isinstance(p, dict) and p.get("estimate") is not None]
    if not looks:
        return None
    xs = [f"{p['phase']} · {p['date']}" for p in looks]
    ys = [p["estimate"] for p in looks]
    cis = [[p.get("lower"), p.get("upper")] for p in looks]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": xs,
            "y": ys,
            "line": {"color": ACCENT},
            "error_y": _asymmetric(ys, cis),
            "hovertemplate": "%{x}<br>effect %{y:+.2f}<extra></extra>",
        }
    ]
    primary = (plan or {}).get("primary") or {}
    shapes = [
        {
            "type": "line",
            "xref": "paper",
            "yref": "y",
            "x0": 0,
            "x1": 1,
            "y0": 0,
            "y1": 0,
            "line": {"color": MUTED, "width": 1},
        }
    ]
    notes = []
    if isinstance(primary.get("expected_effect"), int | float):
        target = primary["expected_effect"]
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "yref": "y",
                "x0": 0,
                "x1": 1,
                "y0": target,
                "y1": target,
                "line": {"color": GOOD, "width": 1.5, "dash": "dash"},
            }
        )
        notes.append(
            {
                "xref": "paper",
                "yref": "y",
                "x": 0,
                "y": target,
                "text": f"expected {target:+g}",
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "bottom",
                "font": {"size": 11, "color": GOOD},
            }
        )
    layout = _layout(
        shapes=shapes,
        annotations=notes,
        xaxis={"showticklabels": False, "title": {"text": "looks, phase by phase"}},
        yaxis={"title": {"text": f"{label(primary.get('name') or 'primary')} effect"}},
    )
    return {"data": data, "layout": layout}
