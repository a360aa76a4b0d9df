"""The per-order frame of an incident slice agrees with an independent SQL reading of the
files, and features the source lacks come back unknown, not zero."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from cxagent.engine.connection import connect
from cxagent.errors import CXAgentError
from cxagent.rca.orders import order_frame

from .conftest import observed

START, END = dt.datetime(2024, 3, 4), dt.datetime(2024, 3, 8)


def test_the_slice_frame_matches_sql_on_the_files(small_dataset: Path) -> None:
    frame = order_frame(connect(small_dataset), {"region": "SF", "category": "grocery"}, START, END)
    sql = observed(small_dataset, "o.region = 'SF' AND o.category = 'grocery'")
    assert len(frame) == sql["orders"]
    assert int(frame["delivered"].sum()) == sql["delivered"]
    assert int((frame["delivered"] & ~frame["late"]).sum()) == sql["on_time"]
    assert int(frame["refunded"].sum()) == sql["refunded"]
    assert frame["prep_min"].mean() * 60 == pytest.approx(sql["prep_s"])
    assert frame["promised_min"].mean() * 60 == pytest.approx(sql["promise_s"])
    assert frame["batched"].mean() == pytest.approx(sql["batched"])
    assert frame["busy_share"].between(0, 1).all()  # every order found its supply interval
    assert frame.attrs["missing"] == []


def test_a_time_range_and_a_daypart_narrow_the_frame(small_dataset: Path) -> None:
    engine = connect(small_dataset)
    day = order_frame(engine, {"daypart": "dinner"}, START, START + dt.timedelta(days=1))
    assert set(day["daypart"]) == {"dinner"}
    assert day["order_time"].min() >= START
    assert day["order_time"].max() < START + dt.timedelta(days=1)
    assert day["order_time"].is_monotonic_increasing


def test_features_the_source_lacks_are_unknown(small_dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    manifest = json.loads((data / "dataset.json").read_text())
    manifest["missing_columns"] = {"deliveries": ["merchant_prep_time_s"]}
    (data / "dataset.json").write_text(json.dumps(manifest))
    frame = order_frame(connect(data), {"region": "SF"}, START, END)
    assert frame.attrs["missing"] == ["prep_min"]
    assert frame["prep_min"].isna().all()
    assert frame["dasher_wait_min"].notna().all()


def test_bad_requests_name_the_problem(small_dataset: Path) -> None:
    engine = connect(small_dataset)
    with pytest.raises(CXAgentError, match="unknown dimension"):
        order_frame(engine, {"city": "SF"}, START, END)
    with pytest.raises(CXAgentError, match="not after start"):
        order_frame(engine, {}, END, START)
