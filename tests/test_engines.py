"""Conformance: the slice cube, the detection inputs, the incidents and the per-order frames'
samples are the same on DuckDB and on a local Spark session (local[2]), from the same code."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.engine.connection import ENGINE_ENV, Engine, connect
from cxagent.engine.cube import SET_DIMS, SUM_FIELDS, build_cube
from cxagent.engine.portable import sample_key
from cxagent.errors import CXAgentError, SpecError
from cxagent.incidents import detect_incidents
from cxagent.incidents.pipeline import load_windows
from cxagent.rca.orders import MAX_FRAME_ORDERS_ENV, item_lines, order_frame

KEYS = ["level", "hour", "daypart", *SET_DIMS]


def spark_missing(reason: str) -> NoReturn:
    """No Spark: a failure where CI is set (the Spark leg must run there), a skip elsewhere."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (required when CI is set: pip install -e '.[spark]', Java 17)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def spark_ready() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        spark_missing(f"pyspark is not installed: {exc}")


@pytest.fixture
def on_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``on_engine(name)`` makes ``name`` the engine every ``connect`` opens by default."""

    def use(name: str) -> None:
        monkeypatch.setenv(ENGINE_ENV, name)

    yield use


def cube_frame(engine: Engine) -> pd.DataFrame:
    frame = build_cube(engine).table.to_pandas()
    for key in KEYS:
        frame[key] = frame[key].astype(str)
    return frame.sort_values(KEYS).reset_index(drop=True)


def test_the_cube_is_the_same_on_duckdb_and_spark(spark_ready: None, small_dataset: Path) -> None:
    duck = connect(small_dataset, engine="duckdb")
    spark = connect(small_dataset, engine="spark")
    assert (duck.backend, spark.backend) == ("duckdb", "pyspark")
    a, b = cube_frame(duck), cube_frame(spark)
    assert len(a) == len(b) > 1000
    assert a[KEYS].equals(b[KEYS])  # the same slices and hours
    for name in SUM_FIELDS:
        x, y = a[name].to_numpy(float), b[name].to_numpy(float)
        # sums in another order, seconds from microseconds on Spark: equal to 7 digits
        assert np.allclose(x, y, rtol=1e-7, atol=1e-6, equal_nan=True), name


def test_detection_inputs_and_incidents_are_the_same_on_both_engines(
    spark_ready: None, incident_dataset: Path, tmp_path: Path, on_engine: Any
) -> None:
    found = {}
    windows = {}
    for name in ("duckdb", "spark"):
        on_engine(name)
        win, _ = load_windows(incident_dataset)
        windows[name] = win
        reports = detect_incidents(incident_dataset, store_url=f"sqlite:///{tmp_path / name}.db")
        found[name] = [
            (r.draft.slice, r.draft.window_start, r.draft.detected_at, r.draft.severity)
            for r in reports
        ]
    duck, spark = windows["duckdb"], windows["spark"]
    assert duck.first == spark.first
    # the engines list the slices in their own order (so does DuckDB from run to run)
    row_of = {tuple(sorted(s.items())): i for i, s in enumerate(spark.slices)}
    order = [row_of[tuple(sorted(s.items()))] for s in duck.slices]
    assert len(order) == len(spark.slices) > 100
    for key, values in duck.stats.items():
        other = spark.stats[key][order]
        assert np.allclose(values, other, rtol=1e-7, atol=1e-6, equal_nan=True), key
    assert found["duckdb"], "the planted change raised no incident"
    assert any(s.get("region") == "SF" for s, *_ in found["duckdb"])
    assert found["spark"] == found["duckdb"]


def test_an_unknown_engine_is_refused_naming_the_setting(
    small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SpecError, match="engine: 'oracle'"):
        connect(small_dataset, engine="oracle")
    monkeypatch.setenv(ENGINE_ENV, "oracle")  # a bad default from the environment too
    with pytest.raises(SpecError, match="engine: 'oracle'"):
        connect(small_dataset)
    monkeypatch.setenv(ENGINE_ENV, "duckdb")
    bad = CliRunner().invoke(app, ["investigate", "--data", str(small_dataset), "--engine", "x"])
    assert bad.exit_code == 2 and "--engine: 'x'" in bad.output


def test_detect_runs_on_spark_from_the_command_line(
    spark_ready: None, incident_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENGINE_ENV, "duckdb")  # restored afterwards: --engine sets it
    runner = CliRunner()
    args = ["detect", "--data", str(incident_dataset), "--json"]
    duck = runner.invoke(app, [*args, "--db", f"sqlite:///{tmp_path / 'd.db'}"])
    spark = runner.invoke(
        app, [*args, "--db", f"sqlite:///{tmp_path / 's.db'}", "--engine", "spark"]
    )
    assert duck.exit_code == 0 and spark.exit_code == 0, spark.output

    def feed(out: str) -> list[tuple[Any, ...]]:
        return [
            (i["slice"], i["window_start"], i["detected_at"], i["severity"])
            for i in json.loads(out)["incidents"]
        ]

    assert feed(spark.output) == feed(duck.output) != []
    bad = runner.invoke(app, [*args, "--engine", "oracle"])
    assert bad.exit_code == 2 and "--engine: 'oracle'" in bad.output


def test_investigate_finds_the_same_causes_on_both_engines(
    spark_ready: None, incident_dataset: Path, tmp_path: Path, on_engine: Any
) -> None:
    from cxagent.rca.investigate import investigate_report

    found = {}
    for name in ("duckdb", "spark"):
        on_engine(name)
        reports = detect_incidents(incident_dataset, store_url=f"sqlite:///{tmp_path / name}.db")
        engine = connect(incident_dataset)
        found[name] = [
            (inv.slice, [(c.cause, round(c.confidence, 3)) for c in inv.causes])
            for inv in (investigate_report(engine, r, n_bootstrap=20) for r in reports)
        ]
    assert found["duckdb"] and found["duckdb"][0][1][0][0] == "batching_policy"
    assert found["spark"] == found["duckdb"]


# --- the per-order frames' sample cap: drawn on the engine, the same rows on both ----------

FRAME_START, FRAME_END = dt.datetime(2024, 3, 4), dt.datetime(2024, 3, 8)


def test_the_sample_key_is_the_md5_of_the_id_on_both_engines(
    spark_ready: None, small_dataset: Path
) -> None:
    keys = {}
    for name in ("duckdb", "spark"):
        orders = connect(small_dataset, engine=name).table("orders")
        orders = orders.select("order_id").order_by("order_id").limit(40)
        rows = orders.mutate(key=sample_key(orders.order_id)).to_pyarrow().to_pylist()
        keys[name] = {r["order_id"]: r["key"] for r in rows}
    assert len(keys["duckdb"]) > 10
    assert keys["spark"] == keys["duckdb"]
    assert all(k == hashlib.md5(str(i).encode()).hexdigest() for i, k in keys["duckdb"].items())


def test_a_capped_frame_keeps_the_same_orders_on_both_engines(
    spark_ready: None, small_dataset: Path
) -> None:
    where = {"region": "SF"}
    duck = connect(small_dataset, engine="duckdb")
    spark = connect(small_dataset, engine="spark")
    full = order_frame(duck, where, FRAME_START, FRAME_END)
    n = len(full)
    cap = n // 3
    frames = {
        name: order_frame(engine, where, FRAME_START, FRAME_END, max_orders=cap)
        for name, engine in (("duckdb", duck), ("spark", spark))
    }
    a, b = frames["duckdb"], frames["spark"]
    assert len(a) == len(b) == cap  # at most the cap (exactly: the order ids are unique)
    assert a.attrs["sample"] == b.attrs["sample"] == (cap, n)
    assert set(a["order_id"]) == set(b["order_id"])

    def by_id(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("order_id").reset_index(drop=True)

    columns = ["order_id", "delivered", "late", "prep_min", "batched", "busy_share"]
    pd.testing.assert_frame_equal(by_id(a[columns]), by_id(b[columns]), check_dtype=False)
    # the sample's rows are the full frame's, and it spreads over the days like the frame
    pd.testing.assert_frame_equal(by_id(a), by_id(full[full["order_id"].isin(a["order_id"])]))
    days = full["order_time"].dt.date
    share = a.groupby(a["order_time"].dt.date).size() / full.groupby(days).size()
    assert share.between(0.25, 0.42).all(), share
    # at or below the cap the frame is every order, unchanged
    for engine in (duck, spark):
        same = order_frame(engine, where, FRAME_START, FRAME_END, max_orders=n)
        assert same.attrs["sample"] is None
        assert sorted(same["order_id"]) == sorted(full["order_id"])
    pd.testing.assert_frame_equal(order_frame(duck, where, FRAME_START, FRAME_END), full)


def test_the_cap_comes_from_the_environment_and_item_lines_follow_the_frame(
    small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = connect(small_dataset, engine="duckdb")
    where = {"category": "grocery"}
    n = len(order_frame(engine, where, FRAME_START, FRAME_END))
    monkeypatch.setenv(MAX_FRAME_ORDERS_ENV, str(n // 4))
    frame = order_frame(engine, where, FRAME_START, FRAME_END)
    assert frame.attrs["sample"] == (n // 4, n) and len(frame) == n // 4
    # a frame's item lines hold its orders' lines, over its range and over a range inside it
    lines = item_lines(engine, where, FRAME_START, FRAME_END)
    assert lines is not None and set(lines["order_id"]) == set(frame["order_id"])
    later = FRAME_START + dt.timedelta(days=2)
    inside = item_lines(engine, where, later, FRAME_END)
    assert inside is not None
    assert set(frame.loc[frame["order_time"] >= later, "order_id"]) <= set(inside["order_id"])
    monkeypatch.setenv(MAX_FRAME_ORDERS_ENV, "many")
    with pytest.raises(CXAgentError, match=f"{MAX_FRAME_ORDERS_ENV}: 'many'"):
        order_frame(engine, where, FRAME_START, FRAME_END)


def test_serve_and_demo_take_the_engine_option(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cxagent.cli as cli

    monkeypatch.setenv(ENGINE_ENV, "duckdb")  # restored afterwards: --engine sets it
    runner = CliRunner()
    out = tmp_path / "demo"
    for args in (["serve", "--data", str(small_dataset)], ["demo", "--out", str(out)]):
        bad = runner.invoke(app, [*args, "--engine", "oracle"])
        assert bad.exit_code == 2 and "--engine: 'oracle'" in bad.output, bad.output
    assert not out.exists()  # refused before generating anything

    class EmptyStore:
        def get_analysis(self, name: str) -> None:
            return None

    built: list[str | None] = []
    monkeypatch.setattr(cli, "_open_workbench", lambda url: EmptyStore())
    monkeypatch.setattr(
        cli,
        "_build_views",
        lambda data, url, bootstrap, config=None: built.append(os.environ.get(ENGINE_ENV)),
    )
    monkeypatch.setattr(cli, "_serve", lambda *args: None)
    ok = runner.invoke(app, ["serve", "--data", str(small_dataset), "--engine", "spark"])
    assert ok.exit_code == 0, ok.output
    assert built == ["spark"]  # the views were computed on the engine asked for
