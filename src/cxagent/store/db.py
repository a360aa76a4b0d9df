"""Database connections: a SQLite file by default, PostgreSQL (or any SQLAlchemy URL) by URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from cxagent.store.models import Base

DEFAULT_URL_ENV = "CXAGENT_DB_URL"


def default_url(data_dir: Path | str | None = None) -> str:
    """``$CXAGENT_DB_URL`` if set, else a SQLite file (next to the dataset when given)."""
    if url := os.environ.get(DEFAULT_URL_ENV):
        return url
    folder = Path(data_dir) if data_dir is not None else Path(".")
    return f"sqlite:///{(folder / 'cxagent.db').resolve()}"


def _sqlite_serialised(engine: Engine) -> None:
    """pysqlite: let SQLAlchemy issue BEGIN, take the write lock at BEGIN (IMMEDIATE), and
    wait for a busy database instead of failing, so concurrent writers serialise."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_con: Any, _record: Any) -> None:
        dbapi_con.isolation_level = None
        cur = dbapi_con.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Create the engine and the tables (idempotent)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        _sqlite_serialised(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return engine


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(make_engine(url), expire_on_commit=False)
