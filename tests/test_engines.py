"""Conformance: the slice cube, the detection inputs and the incidents are the same on DuckDB
and on a local Spark session (local[2]), from the same code."""

from __future__ import annotations

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
from cxagent.errors import SpecError
from cxagent.incidents import detect_incidents
from cxagent.incidents.pipeline import load_windows
from tests.conftest import make_dataset

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


@pytest.fixture(scope="module")
def incident_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """23 days (16 of history, 7 monitored) with a batching change in one region on day 20."""
    out, _ = make_dataset(
        tmp_path_factory.mktemp("engines"),
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
