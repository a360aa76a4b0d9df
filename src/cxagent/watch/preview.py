"""Alert preview: what a detector configuration would have fired over the last N days.

Before a configuration is saved, the engineer sees its consequence: the incidents it would
have raised (a batch replay of the last ``days`` days, window by window, as the watch would
have run them), counted by severity, and how many of them each channel would have received
under its severity threshold. Nothing is written: no incident, no state, no message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxagent.alerts import Channel
from cxagent.errors import CXAgentError
from cxagent.incidents.config import DetectConfig
from cxagent.incidents.pipeline import detect_on
from cxagent.store.models import SEVERITIES


def preview(
    data: Path | str,
    config: DetectConfig,
    channels: Sequence[Channel] = (),
    *,
    days: int = 14,
) -> dict[str, Any]:
    """The incidents ``config`` raises over the last ``days`` days of ``data``, by severity and
    by channel (pure: the store is not touched)."""
    if days < 1:
        raise CXAgentError(f"days: must be >= 1, got {days}")
    replay = dataclasses.replace(config, monitor_days=days, monitor_from=None)
    win, _, reports = detect_on(data, replay, days=replay.history_days + days + 2)
    incidents = [
        {
            "slice": r.draft.slice,
            "label": r.label,
            "severity": r.draft.severity,
            "detected_at": r.draft.detected_at.isoformat(),
            "window_start": r.draft.window_start.isoformat(),
            "window_end": r.draft.window_end.isoformat(),
            "delta": round(r.draft.delta, 2),
            "affected_orders": r.draft.affected_orders,
            "components": list(r.components),
        }
        for r in reports
    ]
    by_severity = {s: sum(i["severity"] == s for i in incidents) for s in reversed(SEVERITIES)}
    per_channel = {c.name: sum(c.accepts(r.draft.severity) for r in reports) for c in channels}
    return {
        "days": days,
        "from": str(win.starts[max(win.n_windows - 4 * days, 0)]) if win.n_windows else None,
        "until": str(win.as_of),
        "detector": replay.detector,
        "incidents": incidents,
        "by_severity": by_severity,
        "per_channel": per_channel,
    }
