"""Which deployed changes could explain a regression: scope, timing and the hypothesis each
one speaks to.

A change is a candidate when its scope covers the incident slice (an empty scope list means
"everywhere") and it took effect before the regression was seen, within ``max_lead``: before
the end of the detection window the regression starts in (a daypart window spans up to eight
hours, so a change at midnight sits inside a regression window that starts at 21:00). Real
change logs name things freely, so a change is mapped to hypotheses by keywords in its name
and description (``HYPOTHESIS_KEYWORDS``, documented and overridable), never by an exact
name. A match is evidence of opportunity only: every change log holds changes that did
nothing, so the ranking still needs the data to show the change's mechanism moving.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from cxagent.errors import CXAgentError
from cxagent.hypotheses import REGISTRY

# each hypothesis's words (its module in ``cxagent.hypotheses``)
HYPOTHESIS_KEYWORDS: Final[dict[str, tuple[str, ...]]] = {
    name: h.change_keywords for name, h in REGISTRY.items()
}
SCOPE_COLUMNS: Final = {
    "region": "scope_regions",
    "category": "scope_categories",
    "daypart": "scope_dayparts",
    "store_id": "scope_stores",
}
REQUIRED: Final = (
    "change_id",
    "kind",
    "name",
    "description",
    "started_at",
    *SCOPE_COLUMNS.values(),
)


@dataclass(frozen=True)
class ChangeMatch:
    """One logged change set against an incident."""

    change_id: str
    name: str
    kind: str
    started_at: dt.datetime
    hypotheses: tuple[str, ...]  # what the change could have caused, by its wording
    in_scope: bool  # its scope covers the incident slice
    lead_hours: float  # regression start minus the change (positive: the change came first)
    before: bool  # took effect before the end of the regression's first window

    @property
    def candidate(self) -> bool:
        """In scope and before the regression was seen."""
        return self.in_scope and self.before


def hypotheses_of(
    name: str, description: str, keywords: Mapping[str, tuple[str, ...]] = HYPOTHESIS_KEYWORDS
) -> tuple[str, ...]:
    """Hypotheses whose keywords occur in a change's name or description (case-insensitive;
    underscores read as spaces)."""
    text = f"{name} {description}".lower().replace("_", " ")
    return tuple(h for h, words in keywords.items() if any(w in text for w in words))


def covers(row: Mapping[str, Any], slice_: Mapping[str, Any]) -> bool:
    """The change's scope covers the slice: on every dimension the slice fixes, the change
    lists nothing (everywhere) or lists the slice's value."""
    for dim, column in SCOPE_COLUMNS.items():
        listed = row.get(column)
        listed = [] if listed is None else list(listed)
        if dim in slice_ and listed and slice_[dim] not in listed:
            return False
    return True


def match_changes(
    events: pd.DataFrame,
    slice_: Mapping[str, Any],
    regression_start: dt.datetime,
    *,
    first_window_end: dt.datetime | None = None,
    max_lead: dt.timedelta = dt.timedelta(days=3),
    keywords: Mapping[str, tuple[str, ...]] = HYPOTHESIS_KEYWORDS,
) -> list[ChangeMatch]:
    """Every change that started at most ``max_lead`` before the regression (or after it),
    with its scope and the hypotheses it speaks to; candidates first, nearest first.
    ``first_window_end``: the end of the window the regression starts in (default: the
    regression start itself, for a change to count it must precede it)."""
    seen = regression_start if first_window_end is None else first_window_end
    missing = [c for c in REQUIRED if c not in events.columns]
    if missing:
        raise CXAgentError(f"change_events: missing column(s) {missing}")
    out = []
    for record in events.to_dict("records"):
        row = {str(k): v for k, v in record.items()}
        started = pd.Timestamp(row["started_at"]).to_pydatetime()
        lead = (regression_start - started).total_seconds() / 3600.0
        if lead > max_lead.total_seconds() / 3600.0:
            continue
        out.append(
            ChangeMatch(
                change_id=str(row["change_id"]),
                name=str(row["name"]),
                kind=str(row["kind"]),
                started_at=started,
                hypotheses=hypotheses_of(str(row["name"]), str(row["description"]), keywords),
                in_scope=covers(row, slice_),
                lead_hours=round(lead, 2),
                before=lead >= 0 or started < seen,
            )
        )
    out.sort(key=lambda m: (not m.candidate, abs(m.lead_hours)))
    return out
