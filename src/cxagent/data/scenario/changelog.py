"""The change log of a scenario: logged interventions plus background changes.

Deployed policies and models are logged (``logged: true``); organic drifts are not. Every
real change log also holds changes that did nothing to customer experience, so a scenario
adds ``background_changes`` of those at seeded random times: root-cause analysis must not
blame a change just because it is there.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd

from cxagent.data.scenario.causes import CAUSE_REGISTRY
from cxagent.data.scenario.spec import ScenarioSpec
from cxagent.data.scenario.world import World
from cxagent.data.schema import CHANGE_EVENTS

_BACKGROUND = (
    ("search_ranking", "model", "Search ranking model retrained on the latest month."),
    ("checkout_ui", "experiment", "Checkout page layout A/B test."),
    ("dasher_app_release", "ops", "Courier app release with map fixes."),
    ("promo_campaign", "ops", "Weekend promotion emails."),
    ("pricing_model", "model", "Delivery-fee model refreshed."),
    ("substitution_ui", "experiment", "New substitution picker in the customer app."),
    ("store_hours_sync", "ops", "Store opening hours synced from merchants."),
)


def _row(
    change_id: str,
    kind: str,
    name: str,
    description: str,
    *,
    started_at: dt.datetime,
    ended_at: dt.datetime | None,
    scope: dict[str, list[Any] | None],
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    return {
        "change_id": change_id,
        "kind": kind,
        "name": name,
        "description": description,
        "started_at": started_at,
        "ended_at": ended_at,
        "scope_regions": scope.get("region") or [],
        "scope_categories": scope.get("category") or [],
        "scope_dayparts": scope.get("daypart") or [],
        "scope_stores": scope.get("store") or [],
        "parameters_before": json.dumps(before),
        "parameters_after": json.dumps(after),
    }


def change_id(index: int) -> str:
    """Id of the change that logs intervention ``index`` (0-based)."""
    return f"chg-{index + 1:03d}"


def change_events(spec: ScenarioSpec, world: World) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i, iv in enumerate(spec.interventions):
        if not iv.logged:
            continue
        cause = CAUSE_REGISTRY[iv.cause]
        before, after = cause.parameters(iv.magnitude)
        rows.append(
            _row(
                change_id(i),
                cause.change_kind,
                cause.change_name,
                cause.describe(iv.magnitude),
                started_at=iv.start,
                ended_at=iv.end,
                scope=iv.scope.model_dump(),
                before=before,
                after=after,
            )
        )
    rng = np.random.default_rng([spec.seed, 0xBAC])
    for k in range(spec.background_changes):
        name, kind, text = _BACKGROUND[k % len(_BACKGROUND)]
        start = spec.start_time + dt.timedelta(hours=int(rng.integers(0, spec.days * 24)))
        region = [str(rng.choice(world.regions))] if rng.random() < 0.4 else None
        rows.append(
            _row(
                f"bg-{k + 1:03d}",
                kind,
                name,
                text,
                started_at=start,
                ended_at=None,
                scope={"region": region},
                before={"version": k + 1},
                after={"version": k + 2},
            )
        )
    return pd.DataFrame(rows, columns=list(CHANGE_EVENTS.column_names))
