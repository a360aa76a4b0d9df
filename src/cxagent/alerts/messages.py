"""The words of an alert: plain business language with the numbers.

Every channel starts its message with the same header line, ``CX incident <id> · update
<n>``: Slack incoming webhooks cannot reply in a thread, so that line is what groups an
incident's messages when a reader searches or scans the channel. The email subject stays the
same for the life of an incident (it names the incident and its slice, never the numbers
that change), so "Re: <subject>" keeps the thread in clients that group by subject.
"""

from __future__ import annotations

from typing import Any

from cxagent.alerts.events import Alert

METRIC_NAMES = {"cx_score": "CX Score"}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def slice_label(slice_: dict[str, Any]) -> str:
    """``region=SF + category=grocery``, as the incident feed writes it; 'all orders' if empty."""
    return " + ".join(f"{k}={v}" for k, v in slice_.items()) or "all orders"


def cause_name(cause: str) -> str:
    return cause.replace("_", " ")


def _stamp(iso: str) -> str:
    return iso.replace("T", " ")[:16]


def _points(value: float) -> str:
    return f"{abs(value):.1f} point" + ("" if round(abs(value), 1) == 1.0 else "s")


def _movement(delta: float) -> str:
    return ("down " if delta < 0 else "up ") + _points(delta)


def header(alert: Alert) -> str:
    """The stable first line that groups an incident's messages."""
    return f"CX incident {alert.incident_id} · update {alert.sequence}"


def title(alert: Alert) -> str:
    inc = alert.incident
    what, where = metric_name(inc["metric"]), slice_label(inc["slice"])
    if alert.event == "resolved":
        return f"Resolved: {what} regression in {where}"
    now = "now " if alert.event == "updated" else ""
    return f"{what} {now}{_movement(inc['delta'])} in {where} ({inc['severity']} severity)"


def _cause_text(cause: dict[str, Any]) -> str:
    text = f"{cause_name(cause['cause'])} (confidence {cause['confidence']:.0%})"
    impact = cause.get("impact")
    if isinstance(impact, int | float) and impact < 0:
        text += f", costing about {_points(impact)} of CX"
    return text


def _change_text(key: str, change: dict[str, Any]) -> str:
    before, after = change["from"], change["to"]
    if key == "severity":
        return f"severity {before} → {after}"
    if key == "status":
        return f"status {before} → {after}"
    if key == "delta":
        was = "unknown" if before is None else f"{before:+.1f}"
        return f"CX change {was} → {after:+.1f} points"
    if after is None:
        return "no likely cause any more"
    now = _cause_text(after)
    return f"most likely cause now {now}" + (
        f" (was {cause_name(before['cause'])})"
        if before and before["cause"] != after["cause"]
        else ""
    )


def body_lines(alert: Alert) -> list[str]:
    """The message's sentences, one a line, without the header and the title."""
    inc = alert.incident
    what, where = metric_name(inc["metric"]), slice_label(inc["slice"])
    lines = [
        f"{what} in {where} went from {inc['baseline']:.1f} to {inc['current']:.1f} "
        f"({_movement(inc['delta'])}) between {_stamp(inc['window_start'])} and "
        f"{_stamp(inc['window_end'])}, over {inc['affected_orders']:,} orders.",
        f"Severity {inc['severity']}, status {inc['status']}.",
    ]
    if alert.event == "resolved":
        lines.append("The incident has been marked resolved.")
    causes = inc.get("causes")
    if causes:
        lines.append(f"Most likely cause: {_cause_text(causes[0])}.")
    if alert.changes:
        changed = "; ".join(_change_text(k, v) for k, v in alert.changes.items())
        lines.append(f"Since the last message: {changed}.")
    if inc.get("url"):
        lines.append(f"Open it in the workbench: {inc['url']}")
    lines.append(f"Detected {_stamp(inc['detected_at'])}; incident {inc['id']}.")
    return lines


def plain_text(alert: Alert) -> str:
    """The whole message as plain text: header, title, sentences."""
    return "\n".join([header(alert), title(alert), "", *body_lines(alert)])


def _mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reserves."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """The incoming-webhook body: ``text`` (notifications, clients without blocks) and
    ``blocks``: the header line, the title and sentences, the workbench link."""
    inc = alert.incident
    lines = [ln for ln in body_lines(alert) if not ln.startswith(("Open it in", "Detected "))]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header(alert)[:150]}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*{_mrkdwn(title(alert))}*\n" + "\n".join(_mrkdwn(ln) for ln in lines),
            },
        },
    ]
    if inc.get("url"):
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"<{inc['url']}|Open it in the workbench>"},
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _mrkdwn(
                        f"Detected {_stamp(inc['detected_at'])} · {alert.event} · "
                        f"incident {inc['id']}"
                    ),
                }
            ],
        }
    )
    return {"text": plain_text(alert), "blocks": blocks}


def email_subject(alert: Alert, *, reply: bool) -> str:
    """Stable for the incident's life; "Re: " on every message after the first."""
    inc = alert.incident
    subject = (
        f"[CX incident {inc['id']}] {metric_name(inc['metric'])} regression in "
        f"{slice_label(inc['slice'])}"
    )
    return f"Re: {subject}" if reply else subject
