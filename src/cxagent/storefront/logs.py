"""Experiment logs of the storefront bandit: every decision and every outcome, for analysis.

Two tables (their own metadata, beside the incident store's tables when both share a database):

* ``storefront_assignments``: one row per bandit decision (``decision_id``), with the
  micro-segment it was made for (persona, device, channel), the slot (``hero`` or ``cta``),
  the arm shown, the propensity with which the policy chose it, the policy version and
  whether it was a burn-in (uniform exploration) decision.
* ``storefront_outcomes``: one row per outcome event (``event_id``): an impression, click,
  cart add or purchase answering a decision (``decision_id``, a foreign key). Impressions are
  the page's ``impression`` events (the slot was shown), or with ``impressions = "served"``
  one per decision logged by the service when it serves it (``imp-<decision_id>``).

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
    sa.CheckConstraint(
        "kind IN ('impression', 'click', 'add_to_cart', 'purchase')", name="ck_sf_outcome_kind"
    ),
    sa.CheckConstraint("value IS NULL OR value >= 0", name="ck_sf_outcome_value"),
)


class UnknownDecision(KeyError):
    """An outcome names a decision that was never logged."""


def default_url(data_dir: Path | str | None = None) -> str:
    """``$CXAGENT_STOREFRONT_DB_URL`` if set, else the SQLite file ``storefront.db``."""
    if url := os.environ.get(DB_URL_ENV):
        return url
    folder = Path(data_dir) if data_dir is not None else Path(".")
    return f"sqlite:///{(folder / 'storefront.db').resolve()}"


def make_engine(url: str) -> Engine:
    """The engine, with the two tables created if missing (as ``cxagent.store.db`` does)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        _sqlite_serialised(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


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

    # --- reads for analysis ----------------------------------------------------------------

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
