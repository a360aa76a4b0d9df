"""Experiment logs of the storefront bandit: every decision and every outcome, for analysis,
and the engagement of every session.

Three tables (their own metadata, beside the incident store's tables when both share a
database):

* ``storefront_assignments``: one row per bandit decision (``decision_id``), with the
  micro-segment it was made for (persona, device, channel), the slot (``hero`` or ``cta``),
  the arm shown, the propensity with which the policy chose it, the policy version and
  whether it was a burn-in (uniform exploration) decision.
* ``storefront_outcomes``: one row per outcome event (``event_id``): an impression, click,
  cart add or purchase answering a decision (``decision_id``, a foreign key). Impressions are
  the page's ``impression`` events (the slot was shown), or with ``impressions = "served"``
  one per decision logged by the service when it serves it (``imp-<decision_id>``).
  ``seq`` numbers the rows in the order logged (PostgreSQL: an identity; SQLite: max + 1
  within the insert): the cursor of ``outcomes_after``, which every service worker reads to
  learn the outcomes the others' consumers logged.
* ``storefront_sessions``: one row per session (``session_id``): its summary as folded from
  its events (first and last event, page views, recommendation clicks, widget interactions,
  cart adds, purchases, revenue, device, channel), its group (``bandit`` or ``control``)
  and persona when known. ``upsert_sessions`` writes a batch; the write is monotone (a
  summary replaces the stored one only if it has more events, or as many and a later last
  event), so summaries may arrive late, twice or from several processes.

The funnel is nested: a click implies the impression (a click may arrive before its
impression, or the impression never), so ``rounds``' ``shown`` and ``arm_counts``' ``shown``
count a decision as shown when any outcome was logged for it.

``log_outcome`` is idempotent on ``event_id`` (``ON CONFLICT (event_id) DO NOTHING`` on SQLite
and PostgreSQL: the insert-or-ignore of the primary key alone, so a broken row still fails), so
the stream consumer may call it for every redelivery. Timestamps are stored as naive UTC.

By default a SQLite file (embedded, ``storefront.db``); PostgreSQL (or any SQLAlchemy URL)
with ``$CXAGENT_STOREFRONT_DB_URL`` or the ``url`` argument.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects import postgresql, sqlite

from cxagent.store.db import _sqlite_serialised
from cxagent.storefront.events import Event, SessionFeatures

DB_URL_ENV: Final = "CXAGENT_STOREFRONT_DB_URL"
SLOTS: Final = ("hero", "cta")
OUTCOMES: Final = ("impression", "click", "add_to_cart", "purchase")
UPSERT_CHUNK: Final = 500  # session rows per INSERT ... ON CONFLICT statement
Slot = Literal["hero", "cta"]
OutcomeKind = Literal["impression", "click", "add_to_cart", "purchase"]
Reward = Literal["impression", "click", "add_to_cart", "purchase", "revenue"]

# The outcome an event of the stream records (when it names a decision).
EVENT_OUTCOME: Final[dict[str, OutcomeKind]] = {
    "impression": "impression",
    "hero_click": "click",
    "cta_click": "click",
    "add_to_cart": "add_to_cart",
    "purchase": "purchase",
}

SEQ_INDEX: Final = "ix_sf_outcomes_seq"
SEQ_GAP_WINDOW: Final = 1000  # outcome seqs below the newest checked for gaps at start

metadata = sa.MetaData()

assignments = sa.Table(
    "storefront_assignments",
    metadata,
    sa.Column("decision_id", sa.String(64), primary_key=True),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False, index=True),
    sa.Column("persona", sa.String(64), nullable=False),
    sa.Column("device", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("slot", sa.String(8), nullable=False),
    sa.Column("arm", sa.String(64), nullable=False),
    sa.Column("propensity", sa.Float, nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("burn_in", sa.Boolean, nullable=False, default=False),
    sa.CheckConstraint("slot IN ('hero', 'cta')", name="ck_sf_assignment_slot"),
    sa.CheckConstraint("propensity > 0 AND propensity <= 1", name="ck_sf_assignment_propensity"),
    sa.Index("ix_sf_assignments_slot_ts", "slot", "ts"),
)

outcomes = sa.Table(
    "storefront_outcomes",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column(
        "decision_id",
        sa.String(64),
        sa.ForeignKey("storefront_assignments.decision_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ts", sa.DateTime, nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    # the order in which outcomes were logged (the workers' sync cursor): PostgreSQL's
    # identity; elsewhere (SQLite) max + 1 in the INSERT itself (writers are serialised)
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),
    sa.CheckConstraint(
        "kind IN ('impression', 'click', 'add_to_cart', 'purchase')", name="ck_sf_outcome_kind"
    ),
    sa.CheckConstraint("value IS NULL OR value >= 0", name="ck_sf_outcome_value"),
    sa.Index(SEQ_INDEX, "seq", unique=True),
)


GROUPS: Final = ("bandit", "control")

sessions = sa.Table(
    "storefront_sessions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("experiment_group", sa.String(16), nullable=True),  # bandit, control; NULL: unknown
    sa.Column("first_at", sa.DateTime, nullable=False),
    sa.Column("last_at", sa.DateTime, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("page_views", sa.Integer, nullable=False),
    sa.Column("rec_clicks", sa.Integer, nullable=False),
    sa.Column("widget_interactions", sa.Integer, nullable=False),
    sa.Column("cart_adds", sa.Integer, nullable=False),
    sa.Column("purchases", sa.Integer, nullable=False),
    sa.Column("revenue", sa.Float, nullable=False),
    sa.Column("device", sa.String(16), nullable=True),
    sa.Column("channel", sa.String(64), nullable=True),
    sa.Column("persona", sa.String(64), nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.CheckConstraint(
        "experiment_group IS NULL OR experiment_group IN ('bandit', 'control')",
        name="ck_sf_session_group",
    ),
    sa.CheckConstraint(
        "events >= 1 AND page_views >= 0 AND rec_clicks >= 0 AND widget_interactions >= 0 "
        "AND cart_adds >= 0 AND purchases >= 0 AND revenue >= 0 AND duration_s >= 0",
        name="ck_sf_session_counts",
    ),
    sa.Index("ix_sf_sessions_last_at", "last_at"),
)


@dataclass(frozen=True)
class SessionSummary:
    """A session's engagement so far, as folded into its ``SessionFeatures``: one row of
    ``storefront_sessions``. A later fold of the same session has more ``events`` (every
    event counts), so ``newer_than`` orders the summaries of one session."""

    session_id: str
    first_at: dt.datetime
    last_at: dt.datetime
    events: int
    page_views: int = 0
    rec_clicks: int = 0
    widget_interactions: int = 0
    cart_adds: int = 0
    purchases: int = 0
    revenue: float = 0.0
    device: str | None = None
    channel: str | None = None
    persona: str | None = None
    group: str | None = None  # "bandit" or "control" (the holdout), None: unknown

    @property
    def duration_s(self) -> float:
        return max((self.last_at - self.first_at).total_seconds(), 0.0)

    @classmethod
    def from_features(
        cls, features: SessionFeatures, *, group: str | None = None, persona: str | None = None
    ) -> SessionSummary:
        first = features.started_at or features.last_at
        last = features.last_at or features.started_at
        if first is None or last is None:
            raise ValueError(f"session {features.session_id!r}: no event folded yet")
        return cls(
            session_id=features.session_id,
            first_at=first,
            last_at=last,
            events=features.events,
            page_views=features.page_views,
            rec_clicks=features.rec_clicks,
            widget_interactions=features.widget_interactions,
            cart_adds=features.cart_adds,
            purchases=features.purchases,
            revenue=features.revenue,
            device=features.device,
            channel=features.channel,
            persona=persona,
            group=group,
        )

    def newer_than(self, other: SessionSummary) -> bool:
        """Whether this fold of the session comes after ``other`` (more events; on a tie,
        a later last event). Equal summaries are not newer than each other."""
        return (self.events, _utc(self.last_at)) > (other.events, _utc(other.last_at))

    def merge(self, other: SessionSummary) -> SessionSummary:
        """The newer of two summaries of the session, with the other's persona and group
        when it knows none (as ``upsert_sessions`` keeps a stored one)."""
        newer, older = (other, self) if other.newer_than(self) else (self, other)
        return replace(
            newer, persona=newer.persona or older.persona, group=newer.group or older.group
        )

    def row(self, updated_at: dt.datetime) -> dict[str, Any]:
        """The ``storefront_sessions`` row (validated: a bad summary fails here, not in SQL)."""
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(f"group: one of {GROUPS} or None, got {self.group!r}")
        if self.events < 1:
            raise ValueError(f"events: at least 1, got {self.events!r}")
        counts = ("page_views", "rec_clicks", "widget_interactions", "cart_adds", "purchases")
        for name in counts:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: not negative, got {getattr(self, name)!r}")
        if self.revenue < 0:
            raise ValueError(f"revenue: not negative, got {self.revenue!r}")
        return {
            "session_id": _id("session_id", self.session_id),
            "experiment_group": self.group,
            "first_at": _utc(self.first_at),
            "last_at": _utc(self.last_at),
            "duration_s": self.duration_s,
            "events": int(self.events),
            **{name: int(getattr(self, name)) for name in counts},
            "revenue": float(self.revenue),
            "device": self.device[:16] if self.device else None,
            "channel": self.channel[:64] if self.channel else None,
            "persona": self.persona[:64] if self.persona else None,
            "updated_at": _utc(updated_at),
        }


@dataclass(frozen=True)
class LoggedOutcome:
    """One row of ``storefront_outcomes`` with the fields of its decision (enough to rebuild
    the bandit's ``Decision``): what ``ExperimentLog.outcomes_after`` returns."""

    seq: int  # the order logged (the sync cursor)
    event_id: str
    decision_id: str
    kind: OutcomeKind
    ts: dt.datetime
    value: float | None
    first: bool  # no outcome of this decision was logged before it (with a lower seq)
    session_id: str
    persona: str
    device: str
    channel: str
    slot: Slot
    arm: str
    propensity: float
    policy_version: str
    burn_in: bool


class UnknownDecision(KeyError):
    """An outcome names a decision that was never logged."""


def default_url(data_dir: Path | str | None = None) -> str:
    """``$CXAGENT_STOREFRONT_DB_URL`` if set, else the SQLite file ``storefront.db``."""
    if url := os.environ.get(DB_URL_ENV):
        return url
    folder = Path(data_dir) if data_dir is not None else Path(".")
    return f"sqlite:///{(folder / 'storefront.db').resolve()}"


def make_engine(url: str) -> Engine:
    """The engine, with the tables created if missing (as ``cxagent.store.db`` does)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        _sqlite_serialised(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    _add_outcome_seq(engine)
    return engine


def _add_outcome_seq(engine: Engine) -> None:
    """Bring a database created before ``storefront_outcomes.seq`` up to date (idempotent):
    add the column, numbering the rows already there (PostgreSQL: an identity, which numbers
    them as it is added; SQLite: by ``rowid``, the order they were inserted; another database
    leaves them unnumbered: they precede every worker's cursor anyway), and its unique index.
    The DDL runs in one transaction (SQLite: under the write lock; PostgreSQL: ``ADD COLUMN IF
    NOT EXISTS`` under the table's lock), so services starting together migrate once."""
    table = outcomes.name
    if _has_seq(sa.inspect(engine), table):
        return
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        if not any(c["name"] == "seq" for c in inspector.get_columns(table)):
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS seq BIGINT "
                    "GENERATED BY DEFAULT AS IDENTITY"
                )
            else:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN seq BIGINT")
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql(f"UPDATE {table} SET seq = rowid")
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {SEQ_INDEX} ON {table} (seq)")


def _has_seq(inspector: Any, table: str) -> bool:
    columns = {c["name"] for c in inspector.get_columns(table)}
    indexes = {i["name"] for i in inspector.get_indexes(table)}
    return "seq" in columns and SEQ_INDEX in indexes


def _next_seq() -> Any:
    return sa.select(sa.func.coalesce(sa.func.max(outcomes.c.seq), 0) + 1).scalar_subquery()


def _utc(ts: dt.datetime) -> dt.datetime:
    """Naive UTC (a naive input is taken as UTC already)."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
    return ts


def _id(name: str, value: str, max_len: int = 64) -> str:
    if not value or len(value) > max_len:
        raise ValueError(f"{name}: 1 to {max_len} characters, got {value!r}")
    return value


class ExperimentLog:
    """The decisions and outcomes of the storefront bandit in one SQL database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)

    def close(self) -> None:
        self.engine.dispose()

    # --- writes ----------------------------------------------------------------------------

    def _insert_ignore(self, conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> bool:
        """Insert unless a row with the same primary key exists; True if inserted."""
        key = [c.name for c in table.primary_key.columns]
        dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
        if table is outcomes and conn.dialect.name != "postgresql":
            # no identity here: the next seq within the INSERT (SQLite serialises writers;
            # elsewhere a race fails loudly on the unique index)
            row = {**row, "seq": _next_seq()}
        if dialect is None:  # another database: look first (a race then fails loudly)
            where = sa.and_(*(table.c[k] == row[k] for k in key))
            if conn.execute(sa.select(sa.literal(1)).select_from(table).where(where)).first():
                return False
            conn.execute(sa.insert(table).values(row))
            return True
        # RETURNING tells what was inserted (rowcount was -1 here with SQLAlchemy + psycopg 3)
        stmt: Any = dialect.insert(table).values(row).on_conflict_do_nothing(index_elements=key)
        return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None

    def log_decision(
        self,
        *,
        decision_id: str,
        ts: dt.datetime,
        session_id: str,
        persona: str,
        device: str,
        channel: str,
        slot: Slot,
        arm: str,
        propensity: float,
        policy_version: str,
        burn_in: bool = False,
    ) -> bool:
        """Record a decision; False if ``decision_id`` was logged before (nothing changes)."""
        if slot not in SLOTS:
            raise ValueError(f"slot: one of {SLOTS}, got {slot!r}")
        if not 0 < propensity <= 1:
            raise ValueError(f"propensity: in (0, 1], got {propensity!r}")
        row = {
            "decision_id": _id("decision_id", decision_id),
            "ts": _utc(ts),
            "session_id": _id("session_id", session_id),
            "persona": _id("persona", persona),
            "device": _id("device", device, 16),
            "channel": _id("channel", channel),
            "slot": slot,
            "arm": _id("arm", arm),
            "propensity": float(propensity),
            "policy_version": _id("policy_version", policy_version),
            "burn_in": bool(burn_in),
        }
        with self.engine.begin() as conn:
            return self._insert_ignore(conn, assignments, row)

    def log_outcome(
        self,
        *,
        event_id: str,
        decision_id: str,
        kind: OutcomeKind,
        ts: dt.datetime,
        value: float | None = None,
    ) -> bool:
        """Record an outcome; False if ``event_id`` was logged before (a redelivery).

        Raises ``UnknownDecision`` if ``decision_id`` was never logged."""
        if kind not in OUTCOMES:
            raise ValueError(f"kind: one of {OUTCOMES}, got {kind!r}")
        if value is not None and value < 0:
            raise ValueError(f"value: not negative, got {value!r}")
        row = {
            "event_id": _id("event_id", event_id),
            "decision_id": _id("decision_id", decision_id),
            "kind": kind,
            "ts": _utc(ts),
            "value": value,
        }
        with self.engine.begin() as conn:
            known = conn.execute(
                sa.select(sa.literal(1)).where(assignments.c.decision_id == decision_id)
            ).first()
            if known is None:
                raise UnknownDecision(f"decision_id {decision_id!r} was never logged")
            return self._insert_ignore(conn, outcomes, row)

    def record_event(self, event: Event, features: SessionFeatures | None = None) -> bool:
        """The consumer's ``on_outcome``: log the event if it answers a decision (an
        impression, a hero or CTA click, a cart add or purchase carrying ``decision_id``).
        True if newly logged; False for a redelivery, an event naming no decision or one
        never logged."""
        kind = EVENT_OUTCOME.get(event.kind)
        if kind is None or event.decision_id is None:
            return False
        try:
            return self.log_outcome(
                event_id=event.event_id,
                decision_id=event.decision_id,
                kind=kind,
                ts=event.ts,
                value=event.value if kind == "purchase" else None,
            )
        except UnknownDecision:
            return False  # a forged or foreign decision_id: nothing to attribute it to

    def upsert_sessions(
        self, summaries: Sequence[SessionSummary], *, now: dt.datetime | None = None
    ) -> int:
        """Write session summaries to ``storefront_sessions`` in one transaction: a new
        session is inserted, a known one replaced only by a newer fold (``newer_than``: more
        events, or as many with a later last event; an equal one rewrites the same values),
        so a late or repeated write of an older summary changes nothing. A persona or group
        the summary does not know keeps the stored one. ``updated_at`` is ``now`` (default:
        the current time). Returns the summaries given (one per session: of several for the
        same session the newest is written)."""
        newest: dict[str, SessionSummary] = {}
        for s in summaries:
            kept = newest.get(s.session_id)
            newest[s.session_id] = s if kept is None else kept.merge(s)
        if not newest:
            return 0
        stamp = now or dt.datetime.now(dt.UTC)
        # the same order in every writer: concurrent batches lock rows in one order
        rows = [newest[k].row(stamp) for k in sorted(newest)]
        with self.engine.begin() as conn:
            dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
            if dialect is None:
                for row in rows:
                    self._upsert_session_portably(conn, row)
            else:
                for start in range(0, len(rows), UPSERT_CHUNK):
                    conn.execute(
                        self._upsert_session_stmt(dialect), rows[start : start + UPSERT_CHUNK]
                    )
        return len(rows)

    @staticmethod
    def _upsert_session_stmt(dialect: Any) -> Any:
        """``INSERT ... ON CONFLICT (session_id) DO UPDATE ... WHERE <the new one is newer
        or equal>`` (SQLite and PostgreSQL)."""
        stmt: Any = dialect.insert(sessions)
        new, old = stmt.excluded, sessions.c
        keep_if_unknown = ("persona", "experiment_group")
        update = {
            c.name: (
                sa.func.coalesce(new[c.name], old[c.name])
                if c.name in keep_if_unknown
                else new[c.name]
            )
            for c in sessions.columns
            if c.name != "session_id"
        }
        newer = sa.or_(
            new.events > old.events,
            sa.and_(new.events == old.events, new.last_at >= old.last_at),
        )
        return stmt.on_conflict_do_update(index_elements=["session_id"], set_=update, where=newer)

    @staticmethod
    def _upsert_session_portably(conn: sa.Connection, row: dict[str, Any]) -> None:
        """Another database: look, then insert or update (a concurrent insert fails loudly)."""
        s = sessions.c
        found = conn.execute(
            sa.select(s.events, s.last_at, s.persona, s.experiment_group).where(
                s.session_id == row["session_id"]
            )
        ).first()
        if found is None:
            conn.execute(sa.insert(sessions).values(row))
            return
        if (row["events"], row["last_at"]) < (found.events, found.last_at):
            return
        values = dict(row)
        values["persona"] = row["persona"] or found.persona
        values["experiment_group"] = row["experiment_group"] or found.experiment_group
        conn.execute(sa.update(sessions).where(s.session_id == row["session_id"]).values(values))

    # --- reads for the workers' bandit sync -----------------------------------------------

    def outcome_cursor(self, recent: int = SEQ_GAP_WINDOW) -> tuple[int, list[int]]:
        """Where a reader of ``outcomes_after`` starts: the newest ``seq`` logged (0 when none)
        and the ``seq`` values missing among the ``recent`` below it. On PostgreSQL a missing
        value is a transaction not committed yet (it may still appear) or one spent for
        nothing (an insert that met its ``event_id``, a rollback): the reader watches them
        for a while (``also``)."""
        s = outcomes.c.seq
        with self.engine.connect() as conn:
            newest = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(s), 0))).scalar_one())
            low = max(newest - recent, 0)
            present = set(conn.execute(sa.select(s).where(s > low)).scalars().all())
        return newest, [n for n in range(low + 1, newest + 1) if n not in present]

    def outcomes_after(
        self, cursor: int, *, limit: int = 1000, also: Collection[int] = ()
    ) -> list[LoggedOutcome]:
        """The outcomes logged after ``cursor`` (``seq > cursor``), the first ``limit`` of
        them, and those whose ``seq`` is in ``also`` (gaps below the cursor a reader still
        waits for), in ``seq`` order, each joined with its decision's fields and whether it
        is its decision's first logged outcome. Fewer than ``limit + len(also)`` rows: the
        reader has caught up."""
        if limit < 1:
            raise ValueError(f"limit: at least 1, got {limit!r}")
        o, a = outcomes.c, assignments.c
        earlier = outcomes.alias("earlier")
        first = ~sa.exists().where(earlier.c.decision_id == o.decision_id, earlier.c.seq < o.seq)
        where: Any = o.seq > int(cursor)
        if also:
            where = sa.or_(where, o.seq.in_(sorted({int(n) for n in also})))
        stmt = (
            sa.select(
                o.seq,
                o.event_id,
                o.decision_id,
                o.kind,
                o.ts,
                o.value,
                first.label("first"),
                a.session_id,
                a.persona,
                a.device,
                a.channel,
                a.slot,
                a.arm,
                a.propensity,
                a.policy_version,
                a.burn_in,
            )
            .select_from(outcomes.join(assignments, a.decision_id == o.decision_id))
            .where(where)
            .order_by(o.seq)
            .limit(limit + len(also))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            LoggedOutcome(
                seq=int(r.seq),
                event_id=str(r.event_id),
                decision_id=str(r.decision_id),
                kind=r.kind,
                ts=r.ts,
                value=None if r.value is None else float(r.value),
                first=bool(r.first),
                session_id=str(r.session_id),
                persona=str(r.persona),
                device=str(r.device),
                channel=str(r.channel),
                slot=r.slot,
                arm=str(r.arm),
                propensity=float(r.propensity),
                policy_version=str(r.policy_version),
                burn_in=bool(r.burn_in),
            )
            for r in rows
        ]

    # --- reads for analysis ----------------------------------------------------------------

    def session(self, session_id: str) -> dict[str, Any] | None:
        """One session's stored summary (its ``storefront_sessions`` row), None if none."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sessions).where(sessions.c.session_id == session_id)
            ).first()
        return dict(row._mapping) if row is not None else None

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        """One logged decision: its assignment row (``decision_id``, ``ts``, ``session_id``,
        ``persona``, ``device``, ``channel``, ``slot``, ``arm``, ``propensity``,
        ``policy_version``, ``burn_in``) and ``outcomes``, its outcomes as
        ``(event_id, kind)`` pairs in the order logged; None if never logged."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(assignments).where(assignments.c.decision_id == decision_id)
            ).first()
            if row is None:
                return None
            found = conn.execute(
                sa.select(outcomes.c.event_id, outcomes.c.kind)
                .where(outcomes.c.decision_id == decision_id)
                .order_by(outcomes.c.ts, outcomes.c.event_id)
            ).all()
        out: dict[str, Any] = dict(row._mapping)
        out["outcomes"] = [(str(e), str(k)) for e, k in found]
        return out

    @staticmethod
    def _flags() -> sa.Subquery:
        """Per decision: 1 if it had an outcome of each kind, 1 if it was shown (any outcome:
        the funnel is nested), and its purchase revenue."""
        o = outcomes.c
        cols: list[Any] = [o.decision_id, sa.literal_column("1").label("shown")]
        for kind in OUTCOMES:
            cols.append(sa.func.max(sa.case((o.kind == kind, 1), else_=0)).label(kind))
        revenue = sa.case((o.kind == "purchase", sa.func.coalesce(o.value, 0.0)), else_=0.0)
        cols.append(sa.func.sum(revenue).label("revenue"))
        return sa.select(*cols).group_by(o.decision_id).subquery("flags")

    @staticmethod
    def _where(
        start: dt.datetime | None,
        end: dt.datetime | None,
        slot: Slot | None,
        burn_in: bool | None,
        policy_version: str | None = None,
    ) -> list[Any]:
        a = assignments.c
        where: list[Any] = []
        if start is not None:
            where.append(a.ts >= _utc(start))
        if end is not None:
            where.append(a.ts < _utc(end))
        if slot is not None:
            where.append(a.slot == slot)
        if burn_in is not None:
            where.append(a.burn_in == burn_in)
        if policy_version is not None:
            where.append(a.policy_version == policy_version)
        return where

    def arm_counts(
        self,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        slot: Slot | None = None,
        burn_in: bool | None = None,
    ) -> pd.DataFrame:
        """Per segment (persona, device, channel), slot and arm, over decisions made in
        ``[start, end)``: ``decisions``, how many were ``shown`` (an impression or any later
        outcome: the funnel is nested), how many had an impression, a click, a cart add, a
        purchase logged (each counted once per decision), and their ``revenue``."""
        a, f = assignments.c, self._flags()
        keys = [a.persona, a.device, a.channel, a.slot, a.arm]
        counts = [sa.func.coalesce(sa.func.sum(f.c[k]), 0).label(k) for k in ("shown", *OUTCOMES)]
        stmt = (
            sa.select(
                *keys,
                sa.func.count().label("decisions"),
                *counts,
                sa.func.coalesce(sa.func.sum(f.c.revenue), 0.0).label("revenue"),
            )
            .select_from(assignments.outerjoin(f, f.c.decision_id == a.decision_id))
            .where(*self._where(start, end, slot, burn_in))
            .group_by(*keys)
            .order_by(*keys)
        )
        counted = ["decisions", "shown", *OUTCOMES]
        columns = ["persona", "device", "channel", "slot", "arm", *counted]
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=[*columns, "revenue"])
        return frame.astype({c: "int64" for c in counted} | {"revenue": "float64"})

    def rounds(
        self,
        slot: Slot,
        *,
        reward: Reward = "click",
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        policy_version: str | None = None,
        burn_in: bool | None = None,
    ) -> pd.DataFrame:
        """The logged rounds of one slot for off-policy evaluation, oldest first: per decision
        its context (persona, device, channel), ``action`` (the arm), ``propensity``, and
        ``reward`` (1/0 whether an outcome of that kind followed; for ``revenue`` the purchase
        value), plus ``shown`` (an impression or any later outcome was logged: a click implies
        the impression) and the policy version."""
        if slot not in SLOTS:
            raise ValueError(f"slot: one of {SLOTS}, got {slot!r}")
        if reward not in (*OUTCOMES, "revenue"):
            raise ValueError(f"reward: one of {(*OUTCOMES, 'revenue')}, got {reward!r}")
        a, f = assignments.c, self._flags()
        stmt = (
            sa.select(
                a.decision_id,
                a.ts,
                a.session_id,
                a.persona,
                a.device,
                a.channel,
                a.arm.label("action"),
                a.propensity,
                sa.func.coalesce(f.c[reward], 0).label("reward"),
                sa.func.coalesce(f.c.shown, 0).label("shown"),
                a.policy_version,
                a.burn_in,
            )
            .select_from(assignments.outerjoin(f, f.c.decision_id == a.decision_id))
            .where(*self._where(start, end, slot, burn_in, policy_version))
            .order_by(a.ts, a.decision_id)
        )
        with self.engine.connect() as conn:
            result = conn.execute(stmt)
            columns = list(result.keys())
            rows = [tuple(r) for r in result.all()]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype(
            {
                "propensity": "float64",
                "reward": "float64",
                "shown": "bool",
                "burn_in": "bool",
            }
        )
