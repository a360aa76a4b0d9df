"""The storefront's analytics: conversion lift against control, experiment velocity,
engagement and the agent's own latency.

Definitions (docs/storefront.md repeats them):

* **Control** is a holdout: a fixed share of sessions (``holdout``, 10% by default, chosen by
  a hash of the session id, so a session stays in its group) is served the default hero and
  call to action without the bandit. Their decisions are logged like the bandit's, with
  ``policy_version = "control"`` and propensity 1.
* **Shown**: a decision with an impression (the page reports the slot in view; with
  ``impressions = "served"`` every served decision has one) or any later outcome (a click
  implies the impression, also when it arrived first or the impression never did).
  Decisions never shown are left out of the rates.
* **Conversion** of a session: at least one purchase attributed to one of its decisions (the
  page sends ``decision_id`` with cart adds and purchases). **Click-through**: at least one
  hero or CTA click. Sessions with at least one shown decision count once, in the group of
  their decisions, over the window.
* **Lift** is the bandit group's rate minus control's, with Newcombe's hybrid score interval
  (1998, method 10: built from the two Wilson intervals, good coverage at small counts), and
  the relative lift (rate ratio - 1) with the Katz log interval (0.5 added to every cell when
  a count is zero). Both are 95%, fixed-horizon: looking every day inflates the error rate.
* **Experiment velocity**: per ISO week, the tests started: micro-segment x slot tests (a
  segment x slot whose first decision falls in the week: each is a bandit of its own) and
  arms (a slot x arm first served that week), with the week's decisions.
* **Engagement**: per group, session duration (first to last event), pages, recommendation
  clicks, concierge interactions, cart adds, purchases and revenue per session, over the
  sessions whose last event falls in the window, read from the log database's
  ``storefront_sessions`` (durable, every process writing to that database). The consumer
  marks each session it folds dirty in an ``EngagementTracker``; the service flushes the
  dirty summaries in batches (``ExperimentLog.upsert_sessions``, monotone).
* **Agent latency**: per endpoint, percentiles of the service's own time from request to the
  last byte of the response, from a bounded reservoir (Vitter's algorithm R) per endpoint.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import pandas as pd
import sqlalchemy as sa

from cxagent.stats.proportions import Z95, wilson_interval
from cxagent.storefront.events import SessionFeatures
from cxagent.storefront.logs import (
    ExperimentLog,
    SessionSummary,
    assignments,
    outcomes,
    sessions,
)

CONTROL: Final = "control"
BANDIT: Final = "bandit"
GROUPS: Final = (BANDIT, CONTROL)


def in_holdout(session_id: str, share: float) -> bool:
    """Whether a session belongs to the control holdout (a stable hash of its id)."""
    if share <= 0.0:
        return False
    return zlib.crc32(session_id.encode("utf-8")) / 2**32 < share


# --------------------------------------------------------------------------- latency


class _Reservoir:
    __slots__ = ("count", "max", "samples", "total")

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.count = 0
        self.total = 0.0
        self.max = 0.0


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class LatencyRecorder:
    """Per-endpoint latencies in bounded reservoirs (algorithm R): every request has the
    same chance to be kept, memory is ``size`` floats per endpoint."""

    def __init__(self, size: int = 4096, seed: int = 0) -> None:
        if size < 1:
            raise ValueError("size must be positive")
        self.size = size
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._data: dict[str, _Reservoir] = {}

    def record(self, endpoint: str, seconds: float) -> None:
        with self._lock:
            res = self._data.get(endpoint)
            if res is None:
                res = self._data[endpoint] = _Reservoir()
            res.count += 1
            res.total += seconds
            res.max = max(res.max, seconds)
            if len(res.samples) < self.size:
                res.samples.append(seconds)
            else:
                j = self._rng.randrange(res.count)
                if j < self.size:
                    res.samples[j] = seconds

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per endpoint: requests, mean, p50, p95, p99 and max in milliseconds."""
        with self._lock:
            snapshot = {
                k: (sorted(r.samples), r.count, r.total, r.max) for k, r in self._data.items()
            }
        out: dict[str, dict[str, float | int]] = {}
        for endpoint, (values, count, total, top) in sorted(snapshot.items()):
            out[endpoint] = {
                "requests": count,
                "sampled": len(values),
                "mean_ms": round(1000 * total / count, 3) if count else math.nan,
                "p50_ms": round(1000 * _quantile(values, 0.50), 3),
                "p95_ms": round(1000 * _quantile(values, 0.95), 3),
                "p99_ms": round(1000 * _quantile(values, 0.99), 3),
                "max_ms": round(1000 * top, 3),
            }
        return out


# --------------------------------------------------------------------------- engagement


@dataclass
class FlushStats:
    """What the tracker wrote (``flushes`` successful writes, ``written`` summaries in them)
    and what failed (``failures``, the last error and when)."""

    flushes: int = 0
    written: int = 0
    failures: int = 0
    last_error: str | None = None
    last_failure_at: dt.datetime | None = None
    last_flush_at: dt.datetime | None = None


class EngagementTracker:
    """Session summaries waiting to be written to the log database.

    ``observe`` (the consumer, for every newly applied event) marks the session dirty with
    its latest summary; ``note_persona`` attaches a persona (the service's confident
    classification) and marks it dirty when it changed; ``flush(write)`` hands the dirty
    summaries to ``write`` in one batch (``ExperimentLog.upsert_sessions``) and forgets them
    only once it returned. When ``write`` raises, every summary of the batch that has no
    newer one waiting goes back to the dirty set and the error propagates: nothing unwritten
    is lost (the dirty set is not bounded; ``pending`` says how many wait).

    ``group_of(session_id)`` gives a summary its group (``bandit``/``control``) when
    observed. The latest summaries of the ``max_recent`` most recent sessions are kept to
    re-mark a session dirty when only its persona changes."""

    def __init__(
        self,
        group_of: Callable[[str], str | None] | None = None,
        *,
        max_recent: int = 50_000,
    ) -> None:
        self.group_of = group_of
        self.max_recent = max_recent
        self.stats = FlushStats()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._recent: OrderedDict[str, SessionSummary] = OrderedDict()
        self._dirty: dict[str, SessionSummary] = {}

    def observe(self, features: SessionFeatures) -> None:
        if features.started_at is None and features.last_at is None:
            return  # nothing folded: nothing to summarise
        sid = features.session_id
        group = self.group_of(sid) if self.group_of is not None else None
        with self._lock:
            known = self._recent.get(sid)
            summary = SessionSummary.from_features(
                features, group=group, persona=known.persona if known is not None else None
            )
            if known is not None and known.newer_than(summary):
                return  # an older fold arriving late (another consumer's): keep the newer
            self._remember(summary)
            self._dirty[sid] = summary

    def note_persona(self, session_id: str, persona: str) -> bool:
        """Record the session's persona; True if it changed a known session's summary (now
        dirty). A session not observed (yet, or no longer among the recent ones) is left."""
        with self._lock:
            known = self._recent.get(session_id)
            if known is None or known.persona == persona:
                return False
            summary = replace(known, persona=persona)
            self._remember(summary)
            self._dirty[session_id] = summary
            return True

    def _remember(self, summary: SessionSummary) -> None:
        self._recent[summary.session_id] = summary
        self._recent.move_to_end(summary.session_id)
        while len(self._recent) > self.max_recent:
            self._recent.popitem(last=False)

    @property
    def pending(self) -> int:
        """Summaries waiting to be written."""
        with self._lock:
            return len(self._dirty)

    def dirty(self) -> dict[str, SessionSummary]:
        """A copy of the summaries waiting to be written, by session."""
        with self._lock:
            return dict(self._dirty)

    def __len__(self) -> int:
        """Sessions whose latest summary is remembered (at most ``max_recent``)."""
        with self._lock:
            return len(self._recent)

    def flush(
        self,
        write: Callable[[list[SessionSummary]], object],
        *,
        now: dt.datetime | None = None,
    ) -> int:
        """Write the dirty summaries with ``write`` (one call, sorted by session); returns
        how many. On an exception the batch stays dirty (unless a newer summary of a
        session arrived meanwhile) and the exception is raised. Flushes run one at a time."""
        with self._flush_lock:
            with self._lock:
                batch, self._dirty = self._dirty, {}
            if not batch:
                return 0
            try:
                write([batch[k] for k in sorted(batch)])
            except BaseException as exc:
                with self._lock:
                    for sid, summary in batch.items():
                        waiting = self._dirty.get(sid)
                        self._dirty[sid] = summary if waiting is None else summary.merge(waiting)
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    self.stats.last_failure_at = now or dt.datetime.now(dt.UTC)
                raise
            with self._lock:
                self.stats.flushes += 1
                self.stats.written += len(batch)
                self.stats.last_flush_at = now or dt.datetime.now(dt.UTC)
            return len(batch)

    def status(self) -> dict[str, Any]:
        """For the health endpoint: waiting summaries and the flush counters."""
        with self._lock:
            st = self.stats
            return {
                "pending": len(self._dirty),
                "flushes": st.flushes,
                "written": st.written,
                "failures": st.failures,
                "last_error": st.last_error,
                "last_failure_at": st.last_failure_at.isoformat() if st.last_failure_at else None,
                "last_flush_at": st.last_flush_at.isoformat() if st.last_flush_at else None,
            }


_ENGAGEMENT_FIELDS: Final = (
    "sessions",
    "mean_duration_s",
    "median_duration_s",
    "rec_clicks_per_session",
    "sessions_with_rec_click",
    "pages_per_session",
    "widget_interactions_per_session",
    "cart_adds_per_session",
    "purchases_per_session",
    "revenue_per_session",
)


def _per_group(n: int, agg: Any, median: float | None) -> dict[str, Any]:
    if not n:
        return {"sessions": 0, **dict.fromkeys(_ENGAGEMENT_FIELDS[1:])}

    def per(total: Any, digits: int) -> float:
        return round(float(total or 0) / n, digits)

    return {
        "sessions": n,
        "mean_duration_s": per(agg.duration, 1),
        "median_duration_s": round(median, 1) if median is not None else None,
        "rec_clicks_per_session": per(agg.rec_clicks, 3),
        "sessions_with_rec_click": per(agg.with_rec_click, 4),
        "pages_per_session": per(agg.page_views, 2),
        "widget_interactions_per_session": per(agg.widget_interactions, 3),
        "cart_adds_per_session": per(agg.cart_adds, 3),
        "purchases_per_session": per(agg.purchases, 4),
        "revenue_per_session": per(agg.revenue, 2),
    }


def engagement(
    log: ExperimentLog,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> dict[str, Any]:
    """Per group (``bandit``, ``control``) and over ``all`` sessions, from the log's
    ``storefront_sessions``: the sessions whose last event falls in ``[start, end)``, their
    mean and median duration (first to last event), pages, recommendation clicks, widget
    interactions, cart adds, purchases and revenue per session, and the share with a
    recommendation click. Sessions of no known group count in ``all`` only. Aggregated in
    SQL (the median with one ordered query per group), so every process's sessions count."""
    c = sessions.c
    where: list[Any] = []
    if start is not None:
        where.append(c.last_at >= _naive(start))
    if end is not None:
        where.append(c.last_at < _naive(end))
    aggs = [
        sa.func.count().label("n"),
        sa.func.sum(c.duration_s).label("duration"),
        sa.func.sum(c.rec_clicks).label("rec_clicks"),
        sa.func.sum(sa.case((c.rec_clicks > 0, 1), else_=0)).label("with_rec_click"),
        sa.func.sum(c.page_views).label("page_views"),
        sa.func.sum(c.widget_interactions).label("widget_interactions"),
        sa.func.sum(c.cart_adds).label("cart_adds"),
        sa.func.sum(c.purchases).label("purchases"),
        sa.func.sum(c.revenue).label("revenue"),
    ]
    with log.engine.connect() as conn:
        by_group = {
            r.experiment_group: r
            for r in conn.execute(
                sa.select(c.experiment_group, *aggs).where(*where).group_by(c.experiment_group)
            ).all()
        }
        total = conn.execute(sa.select(*aggs).where(*where)).one()

        def median(n: int, group: str | None) -> float | None:
            if not n:
                return None
            stmt = sa.select(c.duration_s).where(*where)
            if group is not None:
                stmt = stmt.where(c.experiment_group == group)
            stmt = stmt.order_by(c.duration_s).offset((n - 1) // 2).limit(1 if n % 2 else 2)
            middle = [float(v) for v in conn.execute(stmt).scalars()]
            return sum(middle) / len(middle) if middle else None

        out: dict[str, Any] = {}
        for group in GROUPS:
            row = by_group.get(group)
            n = int(row.n) if row is not None else 0
            out[group] = _per_group(n, row, median(n, group))
        n_all = int(total.n)
        out["all"] = _per_group(n_all, total, median(n_all, None))
    return out


# --------------------------------------------------------------------------- from the logs


def decision_frame(
    log: ExperimentLog, *, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> pd.DataFrame:
    """One row per logged decision in ``[start, end)`` with whether it was shown (any
    outcome: the funnel is nested), led to a click, a cart add or a purchase (and the
    revenue): the logs' two tables joined."""
    a, o = assignments.c, outcomes.c
    flags = (
        sa.select(
            o.decision_id,
            sa.literal_column("1").label("shown"),
            sa.func.max(sa.case((o.kind == "click", 1), else_=0)).label("clicked"),
            sa.func.max(sa.case((o.kind == "add_to_cart", 1), else_=0)).label("carted"),
            sa.func.max(sa.case((o.kind == "purchase", 1), else_=0)).label("purchased"),
            sa.func.sum(
                sa.case((o.kind == "purchase", sa.func.coalesce(o.value, 0.0)), else_=0.0)
            ).label("revenue"),
        )
        .group_by(o.decision_id)
        .subquery("flags")
    )
    stmt = sa.select(
        a.decision_id,
        a.ts,
        a.session_id,
        a.persona,
        a.device,
        a.channel,
        a.slot,
        a.arm,
        a.propensity,
        a.policy_version,
        sa.func.coalesce(flags.c.shown, 0).label("shown"),
        sa.func.coalesce(flags.c.clicked, 0).label("clicked"),
        sa.func.coalesce(flags.c.carted, 0).label("carted"),
        sa.func.coalesce(flags.c.purchased, 0).label("purchased"),
        sa.func.coalesce(flags.c.revenue, 0.0).label("revenue"),
    ).select_from(assignments.outerjoin(flags, flags.c.decision_id == a.decision_id))
    if start is not None:
        stmt = stmt.where(a.ts >= _naive(start))
    if end is not None:
        stmt = stmt.where(a.ts < _naive(end))
    with log.engine.connect() as conn:
        result = conn.execute(stmt)
        columns = list(result.keys())
        rows = [tuple(r) for r in result.all()]
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame
    frame["ts"] = pd.to_datetime(frame["ts"])
    frame["group"] = (frame["policy_version"] == CONTROL).map({True: CONTROL, False: BANDIT})
    return frame


def _naive(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def _rate(x: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(x, n) or (0.0, 1.0)
    return {
        "sessions": n,
        "conversions": x,
        "rate": round(x / n, 6) if n else None,
        "low": round(low, 6),
        "high": round(high, 6),
    }


def lift(x_t: int, n_t: int, x_c: int, n_c: int, z: float = Z95) -> dict[str, Any]:
    """Treatment minus control of two proportions: Newcombe's hybrid score interval for the
    difference and the Katz log interval for the relative lift (ratio - 1)."""
    out: dict[str, Any] = {
        "bandit": _rate(x_t, n_t),
        "control": _rate(x_c, n_c),
        "absolute": None,
        "absolute_low": None,
        "absolute_high": None,
        "relative": None,
        "relative_low": None,
        "relative_high": None,
    }
    if n_t == 0 or n_c == 0:
        return out
    p_t, p_c = x_t / n_t, x_c / n_c
    l_t, u_t = wilson_interval(x_t, n_t, z) or (0.0, 1.0)
    l_c, u_c = wilson_interval(x_c, n_c, z) or (0.0, 1.0)
    d = p_t - p_c
    out["absolute"] = round(d, 6)
    out["absolute_low"] = round(d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2), 6)
    out["absolute_high"] = round(d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2), 6)
    a, b, c, e = float(x_t), float(n_t), float(x_c), float(n_c)
    if x_t == 0 or x_c == 0:
        a, b, c, e = a + 0.5, b + 0.5, c + 0.5, e + 0.5
    log_rr = math.log((a / b) / (c / e))
    se = math.sqrt(max(1 / a - 1 / b + 1 / c - 1 / e, 0.0))
    out["relative"] = round(math.exp(log_rr) - 1, 6) if x_c else None
    out["relative_low"] = round(math.exp(log_rr - z * se) - 1, 6)
    out["relative_high"] = round(math.exp(log_rr + z * se) - 1, 6)
    return out


def conversion_lift(frame: pd.DataFrame) -> dict[str, Any]:
    """Per-session conversion and click-through, bandit against control, with intervals,
    over the sessions with at least one shown decision."""
    if not frame.empty:
        frame = frame[frame["shown"] > 0]
    if frame.empty:
        return {
            "conversion": lift(0, 0, 0, 0),
            "click_through": lift(0, 0, 0, 0),
            "revenue_per_session": {},
        }
    sessions = frame.groupby(["session_id", "group"], as_index=False).agg(
        purchased=("purchased", "max"), clicked=("clicked", "max"), revenue=("revenue", "sum")
    )
    counts = sessions.groupby("group").agg(
        n=("session_id", "size"), purchased=("purchased", "sum"), clicked=("clicked", "sum")
    )

    table: dict[Any, dict[Any, Any]] = counts.to_dict("index")

    def get(group: str, col: str) -> int:
        return int(table[group][col]) if group in table else 0

    revenue = sessions.groupby("group")["revenue"].mean()
    return {
        "conversion": lift(
            get(BANDIT, "purchased"), get(BANDIT, "n"), get(CONTROL, "purchased"), get(CONTROL, "n")
        ),
        "click_through": lift(
            get(BANDIT, "clicked"), get(BANDIT, "n"), get(CONTROL, "clicked"), get(CONTROL, "n")
        ),
        "revenue_per_session": {g: round(float(v), 2) for g, v in revenue.items()},
    }


def velocity(frame: pd.DataFrame, now: dt.datetime, weeks: int = 8) -> list[dict[str, Any]]:
    """Tests started per ISO week (Monday first), most recent week last."""
    today = _naive(now).date()
    monday = today - dt.timedelta(days=today.weekday())
    starts = [monday - dt.timedelta(weeks=w) for w in range(weeks - 1, -1, -1)]
    table = {s: {"segment_tests": 0, "arms": 0, "decisions": 0} for s in starts}
    if not frame.empty:
        bandit = frame[frame["group"] == BANDIT]
        week = frame["ts"].dt.date.map(lambda d: d - dt.timedelta(days=d.weekday()))
        for start, n in week.value_counts().items():
            if start in table:
                table[start]["decisions"] = int(n)
        if not bandit.empty:
            first_seg = bandit.groupby(["persona", "device", "channel", "slot"])["ts"].min()
            first_arm = bandit.groupby(["slot", "arm"])["ts"].min()
            for series, key in ((first_seg, "segment_tests"), (first_arm, "arms")):
                for ts in series:
                    d = ts.date()
                    start = d - dt.timedelta(days=d.weekday())
                    if start in table:
                        table[start][key] += 1
    return [{"week": s.isoformat(), **table[s]} for s in starts]


def arm_table(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per group, slot and arm: decisions served, decisions shown (impressions), and the
    click-through and conversion rates per impression (None before any)."""
    if frame.empty:
        return []
    grouped = frame.groupby(["group", "slot", "arm"]).agg(
        decisions=("decision_id", "size"),
        impressions=("shown", "sum"),
        clicks=("clicked", "sum"),
        purchases=("purchased", "sum"),
        mean_propensity=("propensity", "mean"),
    )
    rows = []
    records: list[dict[Any, Any]] = grouped.reset_index().to_dict("records")
    for r in records:
        group, slot, arm = r["group"], r["slot"], r["arm"]
        n = int(r["impressions"])
        rows.append(
            {
                "group": group,
                "slot": slot,
                "arm": arm,
                "decisions": int(r["decisions"]),
                "impressions": n,
                "click_rate": round(int(r["clicks"]) / n, 4) if n else None,
                "purchase_rate": round(int(r["purchases"]) / n, 4) if n else None,
                "mean_propensity": round(float(r["mean_propensity"]), 4),
            }
        )
    return rows


def engagement_block(
    log: ExperimentLog,
    *,
    start: dt.datetime | None,
    tracker: EngagementTracker | None = None,
) -> dict[str, Any]:
    """The report's ``engagement``: ``engagement(log, start=start)`` per group, plus where it
    comes from (``source``: the table), the ``sessions`` counted, the window's ``since``
    and the summaries of this process still waiting to be written (``pending``)."""
    block = engagement(log, start=start)
    block["source"] = "storefront_sessions"
    block["sessions"] = block["all"]["sessions"]
    block["since"] = start.isoformat() if start is not None else None
    block["pending"] = tracker.pending if tracker is not None else 0
    return block


def report(
    log: ExperimentLog,
    *,
    latency: LatencyRecorder,
    engagement: EngagementTracker | None = None,
    holdout: float,
    now: dt.datetime | None = None,
    days: int = 28,
    weeks: int = 8,
) -> dict[str, Any]:
    """Everything the analytics page shows, as JSON-ready values. ``engagement``: this
    process's tracker, for the count of its summaries not written yet (the engagement
    itself is read from the log's ``storefront_sessions``)."""
    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=days)
    frame = decision_frame(log, start=start)
    week_frame = decision_frame(log, start=now - dt.timedelta(weeks=weeks))
    lifts = conversion_lift(frame)
    sessions = int(frame["session_id"].nunique()) if not frame.empty else 0
    shown = int(frame["shown"].sum()) if not frame.empty else 0
    return {
        "window": {"start": start.isoformat(), "end": now.isoformat(), "days": days},
        "control": {
            "definition": f"holdout of {holdout:.0%} of sessions (hash of session id) served "
            "the default hero and call to action without the bandit",
            "holdout": holdout,
        },
        "sessions": sessions,
        "decisions": len(frame),
        "impressions": shown,
        "lift": lifts,
        "velocity": velocity(week_frame, now, weeks),
        "engagement": engagement_block(log, start=start, tracker=engagement),
        "latency": latency.summary(),
        "arms": arm_table(frame),
    }
