"""This machine's PostgreSQL for the tests: a throwaway schema per test (set
CXAGENT_TEST_PG_URL to point elsewhere). Outside CI a stopped server skips the test; with
CI set it fails it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("CXAGENT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def service_missing(what: str, exc: BaseException) -> NoReturn:
    if "CI" in os.environ:
        pytest.fail(f"{what} is required where CI is set: {exc}")
    pytest.skip(f"{what} is not running here: {exc}")


@contextmanager
def pg_schema(prefix: str = "cx_test") -> Iterator[str]:
    """A PostgreSQL URL whose tables land in a throwaway schema, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing(f"PostgreSQL at {PG_URL}", exc)
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
