"""Experiment logs on SQLite and on the real PostgreSQL: idempotent writes, analysis reads."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cxagent.storefront.logs import (
    DB_URL_ENV,
    UPSERT_CHUNK,
    ExperimentLog,
    SessionSummary,
    UnknownDecision,
    assignments,
    default_url,
    outcomes,
    sessions,
)
from tests.storefront.services import (
    T0,
    experiment_log_fixture,  # noqa: F401
    make_event,
    pg_schema,
)


def decide(log: ExperimentLog, decision_id: str, minute: int = 0, **kw: Any) -> bool:
    row: dict[str, Any] = {
        "decision_id": decision_id,
        "ts": T0 + dt.timedelta(minutes=minute),
        "session_id": f"s-{decision_id}",
        "persona": "hobbyist",
        "device": "mobile",
        "channel": "social",
        "slot": "hero",
        "arm": "a",
        "propensity": 0.5,
        "policy_version": "v1",
    }
    row.update(kw)
    return log.log_decision(**row)


def outcome(log: ExperimentLog, event_id: str, decision_id: str, kind: str, **kw: Any) -> bool:
    return log.log_outcome(
        event_id=event_id, decision_id=decision_id, kind=kind, ts=kw.pop("ts", T0), **kw
    )


def count_outcomes(log: ExperimentLog) -> int:
    with log.engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one())


def test_decisions_and_outcomes_are_logged_once(experiment_log: ExperimentLog) -> None:
    assert decide(experiment_log, "d-1")
    assert not decide(experiment_log, "d-1", arm="b")  # the first record stands
    assert outcome(experiment_log, "ev-click-1", "d-1", "click")
    assert not outcome(experiment_log, "ev-click-1", "d-1", "click")  # a redelivery
    assert count_outcomes(experiment_log) == 1
    frame = experiment_log.rounds("hero")
    assert frame["action"].tolist() == ["a"]


def test_an_outcome_of_an_unknown_decision_is_refused(experiment_log: ExperimentLog) -> None:
    with pytest.raises(UnknownDecision):
        outcome(experiment_log, "ev-1", "d-never", "click")
    forged = make_event("s", "hero_click", decision_id="d-never")
    assert experiment_log.record_event(forged) is False
    assert count_outcomes(experiment_log) == 0


def test_bad_records_are_refused(experiment_log: ExperimentLog) -> None:
    with pytest.raises(ValueError, match="slot"):
        decide(experiment_log, "d-1", slot="footer")
    with pytest.raises(ValueError, match="propensity"):
        decide(experiment_log, "d-1", propensity=0.0)
    with pytest.raises(ValueError, match="decision_id"):
        decide(experiment_log, "x" * 65)
    decide(experiment_log, "d-1")
    with pytest.raises(ValueError, match="kind"):
        outcome(experiment_log, "ev-1", "d-1", "hover")
    with pytest.raises(ValueError, match="value"):
        outcome(experiment_log, "ev-1", "d-1", "purchase", value=-1.0)
    # the database's own checks stand behind the validation
    with pytest.raises(sa.exc.IntegrityError), experiment_log.engine.begin() as c:
        c.execute(outcomes.insert().values(event_id="ev-2", decision_id="d-1", kind="hover", ts=T0))


def test_concurrent_redeliveries_of_one_outcome_insert_one_row(
    experiment_log: ExperimentLog,
) -> None:
    decide(experiment_log, "d-1")
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def work() -> None:
        barrier.wait()
        results.append(outcome(experiment_log, "ev-same", "d-1", "click"))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert count_outcomes(experiment_log) == 1


def test_stream_events_map_to_outcomes(experiment_log: ExperimentLog) -> None:
    decide(experiment_log, "d-hero")
    decide(experiment_log, "d-cta", slot="cta", arm="buy-now")
    click = make_event("s", "hero_click", decision_id="d-hero")
    purchase = make_event("s", "purchase", value=30.0, decision_id="d-cta")
    shown = make_event("s", "impression", decision_id="d-cta")
    assert experiment_log.record_event(click)
    assert not experiment_log.record_event(click)
    assert experiment_log.record_event(purchase)
    assert experiment_log.record_event(shown)
    assert not experiment_log.record_event(shown)  # a redelivered impression: logged once
    assert not experiment_log.record_event(make_event("s", "impression", decision_id="d-never"))
    assert not experiment_log.record_event(make_event("s", "remove_from_cart", product_id="x"))
    assert not experiment_log.record_event(make_event("s", "page_view"))
    assert not experiment_log.record_event(make_event("s", "cta_click"))  # names no decision
    hero = experiment_log.rounds("hero")
    assert hero["reward"].tolist() == [1.0]
    cta = experiment_log.rounds("cta", reward="revenue")
    assert cta["reward"].tolist() == [30.0]
    assert cta["action"].tolist() == ["buy-now"]
    assert experiment_log.rounds("cta", reward="impression")["reward"].tolist() == [1.0]
    found = experiment_log.decision("d-cta")
    assert found is not None and found["arm"] == "buy-now" and found["slot"] == "cta"
    assert found["policy_version"] == "v1" and found["propensity"] == 0.5
    assert sorted(kind for _, kind in found["outcomes"]) == ["impression", "purchase"]
    assert {event_id for event_id, _ in found["outcomes"]} == {
        purchase.event_id,
        shown.event_id,
    }
    assert experiment_log.decision("d-never") is None


def seed(log: ExperimentLog) -> None:
    """Two segments, two arms; one decision outside the time range, one burn-in."""
    decide(log, "d1", 0, arm="a", propensity=0.5)
    decide(log, "d2", 1, arm="a", propensity=0.25)
    decide(log, "d3", 2, arm="b", propensity=0.75)
    decide(log, "d4", 3, arm="b", device="desktop", channel="search", propensity=0.5)
    decide(log, "d5", 4, arm="a", burn_in=True, propensity=0.5)
    decide(log, "d6", 90, arm="a")  # after the range
    decide(log, "d7", 5, arm="b")  # never shown: no outcome at all
    decide(log, "c1", 1, slot="cta", arm="x", persona="pro")
    for eid, did, kind, value in [
        ("o1", "d1", "impression", None),
        ("o2", "d1", "click", None),
        ("o3", "d1", "click", None),  # a second click of the same decision
        ("o4", "d1", "purchase", 20.0),
        ("o5", "d2", "impression", None),
        ("o6", "d3", "impression", None),
        ("o7", "d3", "click", None),
        ("o8", "d3", "add_to_cart", None),
        ("o9", "d3", "purchase", 10.0),
        ("o10", "d3", "purchase", 5.0),
        ("o11", "d4", "click", None),
        ("o12", "d5", "click", None),
        ("o13", "d6", "click", None),
        ("o14", "c1", "click", None),
    ]:
        outcome(log, eid, did, kind, value=value)


def test_arm_counts_by_segment_over_a_time_range(experiment_log: ExperimentLog) -> None:
    seed(experiment_log)
    frame = experiment_log.arm_counts(start=T0, end=T0 + dt.timedelta(hours=1), slot="hero")
    rows = {
        (r.persona, r.device, r.channel, r.arm): (
            r.decisions,
            r.shown,
            r.impression,
            r.click,
            r.add_to_cart,
            r.purchase,
            r.revenue,
        )
        for r in frame.itertuples()
    }
    assert rows == {
        # shown: an impression or a later outcome (a click implies the impression)
        ("hobbyist", "mobile", "social", "a"): (3, 3, 2, 2, 0, 1, 20.0),  # d1, d2, d5
        ("hobbyist", "mobile", "social", "b"): (2, 1, 1, 1, 1, 1, 15.0),  # d3, d7
        ("hobbyist", "desktop", "search", "b"): (1, 1, 0, 1, 0, 0, 0.0),  # d4
    }
    assert set(frame["slot"]) == {"hero"}
    no_burn_in = experiment_log.arm_counts(burn_in=False, slot="hero")
    a = no_burn_in[(no_burn_in.arm == "a") & (no_burn_in.device == "mobile")]
    assert a["decisions"].tolist() == [3] and a["click"].tolist() == [2]  # d1, d2, d6
    everything = experiment_log.arm_counts()
    assert int(everything["decisions"].sum()) == 8
    assert int(everything["shown"].sum()) == 7
    assert set(everything["slot"]) == {"hero", "cta"}
    assert experiment_log.arm_counts(start=T0 + dt.timedelta(days=1)).empty


def test_rounds_for_off_policy_evaluation(experiment_log: ExperimentLog) -> None:
    seed(experiment_log)
    frame = experiment_log.rounds("hero", end=T0 + dt.timedelta(hours=1))
    assert frame["decision_id"].tolist() == ["d1", "d2", "d3", "d4", "d5", "d7"]  # oldest first
    assert frame["action"].tolist() == ["a", "a", "b", "b", "a", "b"]
    assert frame["propensity"].tolist() == [0.5, 0.25, 0.75, 0.5, 0.5, 0.5]
    assert frame["reward"].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    # d4 and d5 have a click and no impression logged: shown all the same (nested funnel)
    assert frame["shown"].tolist() == [True, True, True, True, True, False]
    assert frame["burn_in"].tolist() == [False, False, False, False, True, False]
    revenue = experiment_log.rounds("hero", reward="revenue", end=T0 + dt.timedelta(hours=1))
    assert revenue["reward"].tolist() == [20.0, 0.0, 15.0, 0.0, 0.0, 0.0]
    impressions = experiment_log.rounds("hero", reward="impression", end=T0 + dt.timedelta(hours=1))
    assert impressions["reward"].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # as logged
    carts = experiment_log.rounds("hero", reward="add_to_cart", burn_in=False)
    assert carts["reward"].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # d1..d4, d7, d6
    assert experiment_log.rounds("hero", policy_version="v2").empty
    assert experiment_log.rounds("cta")["decision_id"].tolist() == ["c1"]
    with pytest.raises(ValueError, match="reward"):
        experiment_log.rounds("hero", reward="likes")  # type: ignore[arg-type]


def test_timestamps_are_stored_in_utc(experiment_log: ExperimentLog) -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    decide(experiment_log, "d-tz", ts=dt.datetime(2025, 3, 1, 13, 30, tzinfo=paris))
    frame = experiment_log.rounds("hero")
    assert frame["ts"].tolist() == [dt.datetime(2025, 3, 1, 12, 30)]
    inside = experiment_log.rounds(
        "hero", start=dt.datetime(2025, 3, 1, 13, 29, tzinfo=paris), end=T0 + dt.timedelta(hours=1)
    )
    assert len(inside) == 1
    assert experiment_log.rounds("hero", start=dt.datetime(2025, 3, 1, 12, 31)).empty


def test_the_default_database_is_a_sqlite_file_unless_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    assert default_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'storefront.db'}"
    monkeypatch.setenv(DB_URL_ENV, "postgresql+psycopg://u@h/db")
    assert default_url(tmp_path) == "postgresql+psycopg://u@h/db"


# --- session summaries -------------------------------------------------------------------------


def summary(session_id: str, events: int, seconds: float = 0.0, **kw: Any) -> SessionSummary:
    values: dict[str, Any] = {
        "session_id": session_id,
        "first_at": T0,
        "last_at": T0 + dt.timedelta(seconds=seconds),
        "events": events,
        "page_views": events,
        "device": "mobile",
        "channel": "social",
        "group": "bandit",
    }
    values.update(kw)
    return SessionSummary(**values)


def stored(log: ExperimentLog) -> dict[str, dict[str, Any]]:
    with log.engine.connect() as c:
        return {r.session_id: dict(r._mapping) for r in c.execute(sa.select(sessions)).all()}


def test_session_upserts_are_idempotent_and_monotone(experiment_log: ExperimentLog) -> None:
    log = experiment_log
    first = summary("s-1", 3, 30.0, rec_clicks=1, purchases=1, revenue=25.5, cart_adds=2)
    assert log.upsert_sessions([first], now=T0) == 1
    assert log.upsert_sessions([first], now=T0) == 1  # again: the same row
    row = log.session("s-1")
    assert row is not None
    assert (row["events"], row["page_views"], row["rec_clicks"], row["cart_adds"]) == (3, 3, 1, 2)
    assert (row["purchases"], row["revenue"], row["duration_s"]) == (1, 25.5, 30.0)
    assert (row["experiment_group"], row["device"], row["channel"]) == (
        "bandit",
        "mobile",
        "social",
    )
    assert row["first_at"] == dt.datetime(2025, 3, 1, 12, 0)  # naive UTC
    assert row["persona"] is None and row["updated_at"] == dt.datetime(2025, 3, 1, 12, 0)
    later = T0 + dt.timedelta(minutes=5)
    log.upsert_sessions([summary("s-1", 5, 80.0, persona="researcher")], now=later)
    assert log.session("s-1")["events"] == 5  # type: ignore[index]
    # an older fold arriving late (a retry, another process's slower flush) changes nothing
    log.upsert_sessions([first], now=later + dt.timedelta(minutes=1))
    row = log.session("s-1")
    assert row is not None and (row["events"], row["duration_s"], row["rec_clicks"]) == (5, 80.0, 0)
    assert row["updated_at"] == later.replace(tzinfo=None)
    # as many events and a later last event: newer; an earlier one: older
    log.upsert_sessions([summary("s-1", 5, 90.0)], now=later)
    assert log.session("s-1")["duration_s"] == 90.0  # type: ignore[index]
    log.upsert_sessions([summary("s-1", 5, 85.0, page_views=1)], now=later)
    row = log.session("s-1")
    assert row is not None and (row["duration_s"], row["page_views"]) == (90.0, 5)
    # a newer fold that knows no persona or group keeps the stored ones
    log.upsert_sessions([summary("s-1", 6, 95.0, group=None)], now=later)
    row = log.session("s-1")
    assert row is not None and row["events"] == 6
    assert (row["persona"], row["experiment_group"]) == ("researcher", "bandit")
    # several summaries of one session in a batch: the newest is written, in any order
    log.upsert_sessions([summary("s-2", 4, persona="shopper"), summary("s-2", 2)], now=later)
    row = log.session("s-2")
    assert row is not None and (row["events"], row["persona"]) == (4, "shopper")
    assert set(stored(log)) == {"s-1", "s-2"} and log.session("s-never") is None
    assert log.upsert_sessions([]) == 0


def test_bad_session_summaries_are_refused(experiment_log: ExperimentLog) -> None:
    with pytest.raises(ValueError, match="group"):
        experiment_log.upsert_sessions([summary("s", 1, group="treatment")])
    with pytest.raises(ValueError, match="events"):
        experiment_log.upsert_sessions([summary("s", 0)])
    with pytest.raises(ValueError, match="revenue"):
        experiment_log.upsert_sessions([summary("s", 1, revenue=-1.0)])
    with pytest.raises(ValueError, match="session_id"):
        experiment_log.upsert_sessions([summary("x" * 65, 1)])
    assert stored(experiment_log) == {}
    # the database's own checks stand behind the validation
    row = summary("s", 1).row(T0) | {"experiment_group": "treatment"}
    with pytest.raises(sa.exc.IntegrityError), experiment_log.engine.begin() as c:
        c.execute(sessions.insert().values(row))


def test_a_large_batch_is_written_in_chunks(experiment_log: ExperimentLog) -> None:
    n = 2 * UPSERT_CHUNK + 7
    batch = [summary(f"s-{i:05d}", 2 + i % 3, float(i)) for i in range(n)]
    assert experiment_log.upsert_sessions(batch) == n
    older = [summary(f"s-{i:05d}", 1, 0.0) for i in range(n)]
    newer = [summary(f"s-{i:05d}", 9, float(i) + 1) for i in range(0, n, 2)]
    experiment_log.upsert_sessions(older + newer)
    rows = stored(experiment_log)
    assert len(rows) == n
    assert all(rows[f"s-{i:05d}"]["events"] == (9 if i % 2 == 0 else 2 + i % 3) for i in range(n))


def test_concurrent_upserts_of_one_session_keep_the_newest(experiment_log: ExperimentLog) -> None:
    folds = list(range(1, 13))
    barrier = threading.Barrier(len(folds))
    errors: list[BaseException] = []

    def work(events: int) -> None:
        barrier.wait()
        try:  # every writer also touches the others' sessions: one order of locks
            experiment_log.upsert_sessions(
                [summary("shared", events, float(events)), summary(f"own-{events}", 1)]
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in folds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = stored(experiment_log)
    assert rows["shared"]["events"] == 12 and rows["shared"]["duration_s"] == 12.0
    assert len(rows) == 1 + len(folds)


@pytest.fixture(params=["sqlite", "postgresql"], name="db_url")
def db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with pg_schema() as url:
        yield url


# one decision as a release before storefront_sessions logged it
OLD_DECISION = dict(
    decision_id="d-old",
    ts=T0.replace(tzinfo=None),
    session_id="s-old",
    persona="hobbyist",
    device="mobile",
    channel="social",
    slot="hero",
    arm="a",
    propensity=0.5,
    policy_version="v1",
    burn_in=False,
)


def test_an_existing_database_without_the_sessions_table_gets_it(db_url: str) -> None:
    old = sa.create_engine(db_url)
    assignments.create(old)  # a database of a release before storefront_sessions
    outcomes.create(old)
    with old.begin() as c:
        c.execute(assignments.insert().values(**OLD_DECISION))
    assert "storefront_sessions" not in sa.inspect(old).get_table_names()
    old.dispose()
    log = ExperimentLog(db_url)
    try:
        assert "storefront_sessions" in sa.inspect(log.engine).get_table_names()
        assert log.decision("d-old") is not None  # the existing rows are untouched
        log.upsert_sessions([summary("s-old", 2)])
        assert log.session("s-old") is not None
    finally:
        log.close()


# --- the workers' bandit sync: outcomes in the order logged ---------------------------------


def test_outcomes_after_a_cursor_come_in_the_order_logged_with_their_decisions(
    experiment_log: ExperimentLog,
) -> None:
    log = experiment_log
    assert log.outcome_cursor() == (0, [])
    assert log.outcomes_after(0) == []
    decide(log, "d-1", arm="a", propensity=0.25, burn_in=True)
    decide(log, "d-2", slot="cta", arm="b", device="desktop", policy_version="control")
    logged = [
        ("ev-3", "d-1", "click"),
        ("ev-1", "d-2", "impression"),
        ("ev-2", "d-1", "impression"),
    ]
    for event_id, decision_id, kind in logged:
        assert outcome(log, event_id, decision_id, kind)
    assert not outcome(log, "ev-3", "d-1", "click")  # a redelivery is no new row
    newest, _ = log.outcome_cursor()
    rows = log.outcomes_after(0)
    assert [(r.event_id, r.decision_id, r.kind) for r in rows] == logged  # not by id, not by ts
    seqs = [r.seq for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and seqs[-1] == newest
    # the first logged outcome of each decision says so (the click came before its impression)
    assert [r.first for r in rows] == [True, True, False]
    click = rows[0]
    assert (click.slot, click.arm, click.propensity, click.burn_in) == ("hero", "a", 0.25, True)
    assert (click.persona, click.device, click.channel) == ("hobbyist", "mobile", "social")
    assert click.policy_version == "v1" and click.session_id == "s-d-1"
    assert rows[1].policy_version == "control" and rows[1].device == "desktop"
    # after a cursor, a limited batch, and gaps below the cursor read again
    assert [r.event_id for r in log.outcomes_after(seqs[0])] == ["ev-1", "ev-2"]
    assert [r.event_id for r in log.outcomes_after(0, limit=1)] == ["ev-3"]
    again = log.outcomes_after(seqs[2], also=[seqs[0], 10**9])
    assert [r.event_id for r in again] == ["ev-3"]
    with pytest.raises(ValueError, match="limit"):
        log.outcomes_after(0, limit=0)


def test_the_cursor_names_the_seqs_missing_below_it(experiment_log: ExperimentLog) -> None:
    decide(experiment_log, "d-1")
    for i in range(3):
        assert outcome(experiment_log, f"ev-{i}", "d-1", "impression")
    assert not outcome(experiment_log, "ev-1", "d-1", "click")  # meets its event id
    assert outcome(experiment_log, "ev-9", "d-1", "click")
    newest, missing = experiment_log.outcome_cursor()
    seqs = [r.seq for r in experiment_log.outcomes_after(0)]
    assert newest == seqs[-1]
    # PostgreSQL spends an identity value on the insert that met its event id: a gap the
    # sync waits for a while; SQLite numbers the rows without one
    assert missing == sorted(set(range(1, newest + 1)) - set(seqs))
    if experiment_log.engine.dialect.name == "sqlite":
        assert seqs == [1, 2, 3, 4] and missing == []
    else:
        assert len(missing) == 1


def test_an_existing_outcomes_table_without_seq_gets_one(db_url: str) -> None:
    old = sa.create_engine(db_url)
    md = sa.MetaData()
    old_assignments = assignments.to_metadata(md)
    old_outcomes = sa.Table(  # storefront_outcomes of a release before the sync cursor
        "storefront_outcomes",
        md,
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column(
            "decision_id",
            sa.String(64),
            sa.ForeignKey("storefront_assignments.decision_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ts", sa.DateTime, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
    )
    md.create_all(old)
    with old.begin() as c:
        c.execute(old_assignments.insert().values(**OLD_DECISION))
        for event_id, kind in (("ev-b", "click"), ("ev-a", "impression"), ("ev-c", "purchase")):
            c.execute(
                old_outcomes.insert().values(
                    event_id=event_id, decision_id="d-old", kind=kind, ts=T0.replace(tzinfo=None)
                )
            )
    old.dispose()
    for _ in range(2):  # migrated once; opening it again changes nothing
        log = ExperimentLog(db_url)
        try:
            inspector = sa.inspect(log.engine)
            assert "seq" in {c["name"] for c in inspector.get_columns("storefront_outcomes")}
            assert "ix_sf_outcomes_seq" in {
                i["name"] for i in inspector.get_indexes("storefront_outcomes")
            }
            if log.outcome_cursor()[0] == 3:
                assert outcome(log, "ev-new", "d-old", "purchase", value=5.0)
            rows = log.outcomes_after(0)
            # the rows already there numbered in the order they were inserted, the new after
            assert [r.event_id for r in rows] == ["ev-b", "ev-a", "ev-c", "ev-new"]
            assert [r.seq for r in rows] == [1, 2, 3, 4]
            assert log.decision("d-old") is not None
        finally:
            log.close()
