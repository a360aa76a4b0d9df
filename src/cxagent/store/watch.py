"""The watch loop's state in the store: one row per watched dataset.

The detection state is pickled into the row (it holds numpy arrays and the detectors' own
state), written in the same transaction as the tick's summary, so a tick either happened
completely or not at all; a restarted watch goes on from the last completed tick.
"""

from __future__ import annotations

import pickle
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cxagent.errors import CXAgentError
from cxagent.incidents.config import DetectConfig
from cxagent.incidents.state import STATE_VERSION, DetectionState
from cxagent.store.models import WatchState, utcnow


def load_watch_state(
    factory: sessionmaker[Session], dataset: str, config: DetectConfig
) -> tuple[DetectionState | None, int, str | None]:
    """(the saved detection state, ticks so far, why it was dropped): the state is None when
    there is none, or when it was fitted with other settings or by another version (the
    reason says which): the watch then refits, it never mixes settings silently."""
    with factory() as s:
        row = s.get(WatchState, dataset)
        if row is None:
            return None, 0, None
        try:
            state = pickle.loads(row.state)
        except Exception as exc:
            return None, row.ticks, f"the saved state could not be read ({exc}); refitting"
        if not isinstance(state, DetectionState) or state.version != STATE_VERSION:
            return None, row.ticks, "the saved state is of another version; refitting"
        if state.config != config:
            return None, row.ticks, "the detection settings changed; refitting"
        return state, row.ticks, None


class WatchConflictError(CXAgentError):
    """Another watch advanced the same dataset's state during this tick."""


def save_watch_state(
    factory: sessionmaker[Session],
    dataset: str,
    state: DetectionState,
    tick: dict[str, Any],
    *,
    expected: int | None = None,
) -> int:
    """Save the state and the tick's summary; returns the number of ticks so far.

    ``expected``: the state's first unprocessed window when the tick read it (None: there
    was none). If the stored state moved on meanwhile (two watches on one dataset), nothing
    is saved and ``WatchConflictError`` says so: one watch per dataset."""
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    with factory.begin() as s:
        row = s.get(WatchState, dataset, with_for_update=True)
        if row is not None and expected is not None and row.next_window != expected:
            raise WatchConflictError(
                f"{dataset}: another watch advanced this dataset (to window {row.next_window}, "
                f"this tick started at {expected}); run one watch per dataset"
            )
        if row is None:
            row = WatchState(dataset=dataset, state=blob, next_window=state.next_id, ticks=0)
            s.add(row)
        row.state, row.next_window = blob, state.next_id
        row.ticks = (row.ticks or 0) + 1
        row.last_tick, row.updated_at = tick, utcnow()
        return row.ticks


def watch_summary(factory: sessionmaker[Session], dataset: str) -> dict[str, Any] | None:
    """What the last tick did, for ``cxagent watch --status`` and the API (no state blob)."""
    with factory() as s:
        row = s.get(WatchState, dataset)
        if row is None:
            return None
        return {
            "dataset": row.dataset,
            "ticks": row.ticks,
            "next_window": row.next_window,
            "updated_at": row.updated_at.isoformat(),
            "last_tick": row.last_tick,
        }
