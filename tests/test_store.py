"""The incident store on SQLite and on the real PostgreSQL of this machine (never skipped)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from cxagent.store.db import session_factory
from cxagent.store.models import Base
from cxagent.store.repository import (
    IncidentDraft,
    InvalidStatusError,
    NotFoundError,
    get_incident,
    list_incidents,
    set_false_positive,
    set_status,
    upsert_incident,
)


def draft(**kw: object) -> IncidentDraft:
    base = dict(
        metric="cx_score",
        slice={"region": "SF", "category": "grocery", "daypart": "dinner"},
        window_start=dt.datetime(2024, 1, 3, 18),
        window_end=dt.datetime(2024, 1, 3, 21),
        detected_at=dt.datetime(2024, 1, 3, 21),
        severity="high",
        baseline=70.0,
        current=55.0,
        delta=-15.0,
        affected_orders=900,
        p_value=1e-8,
        q_value=1e-6,
        detector="bocpd",
        top_slices=[{"slice": {"region": "SF"}, "share": 0.8}],
    )
    base.update(kw)
    return IncidentDraft(**base)  # type: ignore[arg-type]


def test_given_overlapping_detections_when_stored_then_one_incident_is_updated(
    factory: sessionmaker[Session],
) -> None:
    first, created = upsert_incident(factory, draft())
    assert created
    again, created_again = upsert_incident(
        factory,
        draft(
            window_end=dt.datetime(2024, 1, 4, 21),
            current=50.0,
            delta=-20.0,
            detected_at=dt.datetime(2024, 1, 4, 21),
        ),
    )
    assert not created_again and again.id == first.id
    stored = get_incident(factory, first.id)
    assert stored.window_start == dt.datetime(2024, 1, 3, 18)
    assert stored.window_end == dt.datetime(2024, 1, 4, 21)
    assert stored.detected_at == dt.datetime(2024, 1, 3, 21)  # first detection stands
    assert stored.delta == -20.0
    assert [e.action for e in stored.events] == ["created", "updated"]
    # the same detection once more changes nothing
    upsert_incident(
        factory, draft(window_end=dt.datetime(2024, 1, 4, 21), current=50.0, delta=-20.0)
    )
    assert len(get_incident(factory, first.id).events) == 2
    assert len(list_incidents(factory)) == 1


def test_a_different_slice_or_a_resolved_incident_opens_a_new_one(
    factory: sessionmaker[Session],
) -> None:
    a, _ = upsert_incident(factory, draft())
    b, created = upsert_incident(factory, draft(slice={"region": "NYC"}))
    assert created and b.id != a.id
    set_status(factory, a.id, status="resolved", actor="eng")
    c, created = upsert_incident(factory, draft())
    assert created and c.id != a.id
    assert {i.id for i in list_incidents(factory, status=["new"])} == {b.id, c.id}


def test_status_changes_and_labels_are_audited(factory: sessionmaker[Session]) -> None:
    inc, _ = upsert_incident(factory, draft())
    set_status(factory, inc.id, status="investigating", actor="ana", note="looking")
    set_false_positive(factory, inc.id, false_positive=False, actor="ana")
    stored = get_incident(factory, inc.id)
    assert stored.status == "investigating" and stored.false_positive is False
    last = stored.events[-2]
    assert (last.actor, last.action, last.note) == ("ana", "status", "looking")
    assert last.detail == {"from": {"status": "new"}, "to": {"status": "investigating"}}
    with pytest.raises(InvalidStatusError, match="new, investigating, monitoring, resolved"):
        set_status(factory, inc.id, status="closed", actor="ana")
    with pytest.raises(NotFoundError):
        set_status(factory, "inc-nope", status="resolved", actor="ana")


def test_concurrent_status_updates_lose_no_write(factory: sessionmaker[Session]) -> None:
    inc, _ = upsert_incident(factory, draft())
    statuses = ["investigating", "monitoring", "resolved", "new"]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for j in range(5):
                set_status(
                    factory, inc.id, status=statuses[(k + j) % 4], actor=f"w{k}", note=f"{k}-{j}"
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stored = get_incident(factory, inc.id)
    notes = sorted(e.note for e in stored.events if e.action == "status")
    assert notes == sorted(f"{k}-{j}" for k in range(6) for j in range(5))
    assert stored.version == 1 + 30
    # each recorded change starts from the state the previous one left
    chain = [e.detail for e in stored.events if e.action == "status"]
    for prev, nxt in zip(chain, chain[1:], strict=False):
        assert nxt["from"]["status"] == prev["to"]["status"]


def test_tables_are_created_idempotently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    session_factory(url)
    f = session_factory(url)
    assert set(Base.metadata.tables) <= set(sa.inspect(f.kw["bind"]).get_table_names())
