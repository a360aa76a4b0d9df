"""The analytics' engagement: the tracker that marks folded sessions dirty and flushes them
(a failed write keeps them), and the engagement read back from ``storefront_sessions`` on
SQLite and on the real PostgreSQL (required where CI is set)."""

from __future__ import annotations

import datetime as dt
import statistics
import threading
from typing import Any

import pytest

from cxagent.storefront import analytics
from cxagent.storefront.events import SessionFeatures
from cxagent.storefront.logs import ExperimentLog, SessionSummary
from tests.storefront.services import T0, experiment_log_fixture  # noqa: F401


def features(session_id: str, events: int, seconds: float, **kw: Any) -> SessionFeatures:
    return SessionFeatures(
        session_id=session_id,
        started_at=T0,
        last_at=T0 + dt.timedelta(seconds=seconds),
        events=events,
        **kw,
    )


def summary(session_id: str, events: int, seconds: float, **kw: Any) -> SessionSummary:
    return SessionSummary.from_features(features(session_id, events, seconds), **kw)


class Recorder:
    """A ``write`` for ``EngagementTracker.flush`` that can be made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[SessionSummary]] = []
        self.down = False

    def __call__(self, batch: list[SessionSummary]) -> None:
        if self.down:
            raise ConnectionError("database down (test)")
        self.batches.append(batch)


# --- the tracker ------------------------------------------------------------------------------


def test_the_tracker_flushes_each_dirty_session_once_with_its_latest_fold() -> None:
    tracker = analytics.EngagementTracker(
        group_of=lambda sid: "control" if sid == "c" else "bandit"
    )
    write = Recorder()
    assert tracker.flush(write) == 0 and write.batches == []  # nothing dirty: no write
    tracker.observe(features("b", 1, 0, page_views=1))
    tracker.observe(features("b", 2, 30, page_views=2))
    tracker.observe(features("c", 1, 0, page_views=1))
    tracker.observe(SessionFeatures(session_id="empty"))  # nothing folded: no summary
    assert tracker.pending == 2
    assert tracker.flush(write) == 2
    (batch,) = write.batches
    assert [(s.session_id, s.events, s.page_views, s.group) for s in batch] == [
        ("b", 2, 2, "bandit"),
        ("c", 1, 1, "control"),
    ]
    assert tracker.pending == 0 and tracker.flush(write) == 0
    # a confident persona marks the session dirty once; the next fold keeps it
    assert tracker.note_persona("b", "researcher") and not tracker.note_persona("b", "researcher")
    assert not tracker.note_persona("never-seen", "shopper")
    tracker.observe(features("b", 3, 40, page_views=3))
    assert tracker.flush(write) == 1
    assert [(s.events, s.persona) for s in write.batches[-1]] == [(3, "researcher")]
    assert tracker.status()["written"] == 3 and tracker.status()["failures"] == 0


def test_a_failed_flush_keeps_every_summary_and_the_newest_wins() -> None:
    tracker = analytics.EngagementTracker()
    write = Recorder()
    tracker.observe(features("s1", 1, 0))
    tracker.observe(features("s2", 4, 90))
    write.down = True
    with pytest.raises(ConnectionError):
        tracker.flush(write)
    assert tracker.pending == 2  # nothing lost
    status = tracker.status()
    assert status["failures"] == 1 and "database down" in status["last_error"]
    tracker.observe(features("s1", 2, 10))  # folded while the database was down
    with pytest.raises(ConnectionError):
        tracker.flush(write)
    write.down = False
    assert tracker.flush(write) == 2
    assert sorted((s.session_id, s.events) for s in write.batches[-1]) == [("s1", 2), ("s2", 4)]
    assert tracker.pending == 0 and tracker.status()["flushes"] == 1


def test_a_summary_folded_during_a_failing_flush_is_not_replaced_by_the_older_one() -> None:
    tracker = analytics.EngagementTracker()
    tracker.observe(features("s", 1, 0))
    entered, release = threading.Event(), threading.Event()

    def slow_failure(batch: list[SessionSummary]) -> None:
        entered.set()
        release.wait(5)
        raise ConnectionError("down")

    def flush() -> None:
        with pytest.raises(ConnectionError):
            tracker.flush(slow_failure)

    worker = threading.Thread(target=flush)
    worker.start()
    assert entered.wait(5)
    tracker.observe(features("s", 2, 20))  # arrives while the batch is being written
    release.set()
    worker.join(5)
    assert [s.events for s in tracker.dirty().values()] == [2]


# --- engagement from the log database ------------------------------------------------------------


def test_engagement_is_read_per_group_from_the_sessions_table(
    experiment_log: ExperimentLog,
) -> None:
    durations = {"bandit": [10.0, 20.0, 60.0, 100.0], "control": [30.0, 50.0, 40.0]}
    rows: list[SessionSummary] = []
    for group, values in durations.items():
        for i, seconds in enumerate(values):
            rows.append(
                SessionSummary.from_features(
                    features(
                        f"{group}-{i}",
                        5,
                        seconds,
                        page_views=i + 1,
                        rec_clicks=1 if i == 0 else 0,
                        widget_interactions=2,
                        cart_adds=i,
                        purchases=1 if i == 1 else 0,
                        revenue=40.0 if i == 1 else 0.0,
                    ),
                    group=group,
                )
            )
    rows.append(summary("nobody-knows", 2, 5.0))  # no group: counted in "all" only
    old = SessionSummary.from_features(
        SessionFeatures(
            session_id="old",
            started_at=T0 - dt.timedelta(days=40),
            last_at=T0 - dt.timedelta(days=40),
            events=1,
        ),
        group="bandit",
    )
    experiment_log.upsert_sessions([*rows, old])
    out = analytics.engagement(experiment_log, start=T0 - dt.timedelta(days=28))
    bandit, control, every = out["bandit"], out["control"], out["all"]
    assert (bandit["sessions"], control["sessions"], every["sessions"]) == (4, 3, 8)
    assert bandit["mean_duration_s"] == 47.5 and bandit["median_duration_s"] == 40.0  # even n
    assert control["mean_duration_s"] == 40.0 and control["median_duration_s"] == 40.0  # odd n
    every_durations = [*durations["bandit"], *durations["control"], 5.0]
    assert every["median_duration_s"] == statistics.median(every_durations)
    assert bandit["pages_per_session"] == 2.5 and control["pages_per_session"] == 2.0
    assert bandit["rec_clicks_per_session"] == 0.25 and bandit["sessions_with_rec_click"] == 0.25
    assert bandit["widget_interactions_per_session"] == 2.0
    assert bandit["cart_adds_per_session"] == 1.5 and control["cart_adds_per_session"] == 1.0
    assert bandit["purchases_per_session"] == 0.25 and bandit["revenue_per_session"] == 10.0
    # the window: by the last event; none in it -> counts of zero and no rates
    empty = analytics.engagement(experiment_log, start=T0 + dt.timedelta(days=1))
    assert empty["all"] == {"sessions": 0, **dict.fromkeys(list(empty["all"])[1:])}
    everything = analytics.engagement(experiment_log)
    assert everything["bandit"]["sessions"] == 5 and everything["all"]["sessions"] == 9


def test_the_report_says_where_engagement_comes_from(experiment_log: ExperimentLog) -> None:
    experiment_log.upsert_sessions([summary("s-1", 3, 12.0, group="bandit")])
    tracker = analytics.EngagementTracker()
    tracker.observe(features("s-2", 1, 0))  # folded, not written yet
    body = analytics.report(
        experiment_log,
        latency=analytics.LatencyRecorder(),
        engagement=tracker,
        holdout=0.1,
        now=T0 + dt.timedelta(hours=1),
    )
    engagement = body["engagement"]
    assert engagement["source"] == "storefront_sessions"
    assert engagement["sessions"] == 1 and engagement["pending"] == 1
    assert engagement["since"] == (T0 + dt.timedelta(hours=1) - dt.timedelta(days=28)).isoformat()
    assert engagement["bandit"]["mean_duration_s"] == 12.0
    assert engagement["control"]["sessions"] == 0
