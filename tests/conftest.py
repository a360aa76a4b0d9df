"""Shared fixtures: small generated scenarios and an independent SQL reading of metrics."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pytest
from sqlalchemy.orm import Session, sessionmaker

from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import DEMO_SPEC, load_spec, parse_spec
from cxagent.store.db import session_factory
from tests.pg import pg_schema

SHARED = Path(__file__).resolve().parents[2] / "shared"


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_module(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def small_spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "small",
        "seed": 3,
        "start": "2024-03-04",
        "days": 4,
        "orders_per_day": 3000,
        "background_changes": 2,
    }
    raw.update(overrides)
    return raw


def make_dataset(root: Path, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    out = root / "data"
    truth = generate(parse_spec(small_spec(**overrides)), out, workers=1)
    return out, truth


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """The incident store on a fresh SQLite file, then on this machine's PostgreSQL."""
    if request.param == "sqlite":
        yield session_factory(f"sqlite:///{tmp_path / 'cx.db'}")
        return
    with pg_schema() as url:
        f = session_factory(url)
        yield f
        f.kw["bind"].dispose()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out, _ = make_dataset(tmp_path_factory.mktemp("small"))
    return out


@pytest.fixture(scope="session")
def incident_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """23 days (16 of history, 7 monitored) with a batching change in one region on day 20."""
    out, _ = make_dataset(
        tmp_path_factory.mktemp("incident"),
        days=23,
        orders_per_day=1200,
        interventions=[
            {
                "cause": "batching_policy",
                "start": "2024-03-24T00:00",
                "scope": {"region": "SF"},
                "magnitude": 1.5,
            }
        ],
    )
    return out


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    truth = generate(load_spec(DEMO_SPEC), out)
    return out, truth


def slice_sql(where: str = "TRUE") -> str:
    """Order-level CX statistics straight from the Parquet files (no project code)."""
    return f"""
    WITH o AS (SELECT * FROM read_parquet('{{root}}/orders/*/*.parquet')),
         d AS (SELECT * FROM read_parquet('{{root}}/deliveries/*/*.parquet')),
         i AS (SELECT order_id,
                      sum(refund_amount) AS refund,
                      count(*) FILTER (WHERE missing_flag OR substituted_flag) AS bad
               FROM read_parquet('{{root}}/items/*/*.parquet') GROUP BY order_id)
    SELECT count(*) AS orders,
           count(*) FILTER (WHERE NOT canceled_flag) AS delivered,
           count(*) FILTER (WHERE NOT canceled_flag AND
               epoch(actual_delivery_time) - epoch(promised_eta) <= 300) AS on_time,
           sum(CASE WHEN canceled_flag THEN 0 ELSE o.item_count END) AS items,
           sum(CASE WHEN canceled_flag THEN 0 ELSE i.bad END) AS bad_items,
           count(*) FILTER (WHERE canceled_flag) AS canceled,
           count(*) FILTER (WHERE i.refund > 0) AS refunded,
           avg(d.merchant_prep_time_s) AS prep_s,
           avg(epoch(o.promised_eta) - epoch(o.order_time)) AS promise_s,
           avg(d.dasher_wait_s) AS wait_s,
           avg(d.batched_flag::INT) AS batched
    FROM o JOIN d USING (order_id) JOIN i USING (order_id)
    WHERE {where}
    """


def observed(root: Path, where: str = "TRUE") -> dict[str, float]:
    con = duckdb.connect()
    cur = con.execute(slice_sql(where).replace("{root}", str(root)))
    row = cur.fetchone()
    assert row is not None
    return dict(zip([c[0] for c in cur.description], row, strict=True))
