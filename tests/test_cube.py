"""The slice cube: every cut adds up, and its metrics agree with the generator's truth."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cxagent.engine.connection import connect
from cxagent.engine.cube import Cube, build_cube, grouping_sets, level_name
from cxagent.metrics.definitions import STAT_FIELDS, CXStats

from .conftest import observed


@pytest.fixture(scope="module")
def demo_cube(demo_dataset: tuple[Path, dict]) -> Cube:
    return build_cube(connect(demo_dataset[0]))


def _stats(rows, since: str | None = None) -> CXStats:  # type: ignore[no-untyped-def]
    if since is not None:
        rows = rows.filter(
            pc.greater_equal(rows.column("hour"), pc.strptime(since, "%Y-%m-%d", "us"))
        )
    return CXStats(**{f: float(pc.sum(rows.column(f)).as_py() or 0.0) for f in STAT_FIELDS})


def test_grouping_sets_cover_every_combination_up_to_three_dims() -> None:
    sets = grouping_sets()
    assert len(sets) == 10 and () in sets
    assert ("region", "category", "basket_size") in sets
    assert not any("store_id" in s and "region" in s for s in sets)


def test_every_level_adds_up_to_the_same_total(
    demo_cube: Cube, demo_dataset: tuple[Path, dict]
) -> None:
    totals = demo_cube.table.group_by("level").aggregate([("orders", "sum"), ("on_time", "sum")])
    assert len(set(totals.column("orders_sum").to_pylist())) == 1
    assert len(set(totals.column("on_time_sum").to_pylist())) == 1
    assert totals.column("orders_sum")[0].as_py() == demo_dataset[1]["rows"]["orders"]


def test_a_three_dim_slice_matches_sql_on_the_files(
    demo_cube: Cube, demo_dataset: tuple[Path, dict]
) -> None:
    root = demo_dataset[0]
    where = {"region": "SF", "category": "grocery", "daypart": "dinner"}
    got = _stats(demo_cube.slice_rows(where))
    sql = observed(root, " AND ".join(f"o.{k} = '{v}'" for k, v in where.items()))
    assert got.orders == sql["orders"] and got.on_time == sql["on_time"]
    assert got.bad_items == sql["bad_items"] and got.refunded == sql["refunded"]
    store_rows = demo_cube.slice_rows({"store_id": 1000, "daypart": "lunch"})
    assert store_rows.num_rows > 0
    assert set(store_rows.column("daypart").to_pylist()) == {"lunch"}
    assert (
        demo_cube.slice_rows({"store_id": 1000, "region": "NYC"}).num_rows == 0
    )  # store 1000 is SF


def test_cube_metrics_equal_the_truth_of_the_planted_cell(
    demo_cube: Cube, demo_dataset: tuple[Path, dict]
) -> None:
    _, truth = demo_dataset
    batching = next(iv for iv in truth["interventions"] if iv["cause"] == "batching_policy")
    cell = next(
        c
        for c in batching["effect"]["cells"]
        if c["slice"]["region"] == "SF" and c["slice"]["daypart"] == "dinner"
    )
    rows = demo_cube.slice_rows(cell["slice"])
    metrics = _stats(rows, since="2024-01-03").metrics()
    for name, value in cell["factual"].items():
        assert metrics[name] == pytest.approx(value, abs=2e-4), name


def test_level_names() -> None:
    assert level_name(()) == "all" and level_name(("region", "daypart")) == "region+daypart"


def test_when_orders_are_filed_outside_their_store_region_then_the_cube_keeps_store_and_region_apart(
    small_dataset: Path, tmp_path: Path
) -> None:
    import shutil

    import pyarrow.parquet as pq

    from cxagent.data.io import table_files

    root = tmp_path / "moved"
    shutil.copytree(small_dataset, root)
    path = table_files(root, "orders")[0]
    t = pq.read_table(path)
    regions = t.column("region").to_pylist()
    regions[0] = "LA" if regions[0] != "LA" else "SF"  # one customer elsewhere, as in Olist
    pq.write_table(t.set_column(t.column_names.index("region"), "region", pa.array(regions)), path)
    cube = build_cube(connect(root))
    assert "region" not in cube.implied_by_store
    assert "store_id+region" in set(cube.table.column("level").to_pylist())
    store = t.column("store_id")[0].as_py()
    both = cube.slice_rows({"store_id": store, "region": regions[0]})
    assert pc.sum(both.column("orders")).as_py() >= 1


def test_reading_a_dataset_with_a_broken_file_names_file_and_column(
    small_dataset: Path, tmp_path: Path
) -> None:
    import shutil

    import pyarrow.parquet as pq

    from cxagent.data.io import table_files
    from cxagent.errors import DataValidationError

    root = tmp_path / "broken"
    shutil.copytree(small_dataset, root)
    path = table_files(root, "deliveries")[1]
    pq.write_table(pq.read_table(path).drop_columns(["canceled_flag"]), path)
    with pytest.raises(DataValidationError, match=r"deliveries.*column 'canceled_flag'"):
        connect(root)
    path.write_bytes(b"garbage")
    with pytest.raises(DataValidationError, match="not a readable Parquet file"):
        connect(root)


def test_the_daily_cube_rolls_up_the_hours(
    demo_cube: Cube, demo_dataset: tuple[Path, dict]
) -> None:
    daily = demo_cube.daily()
    assert (
        pc.sum(daily.column("orders")).as_py() == pc.sum(demo_cube.table.column("orders")).as_py()
    )
    day = pc.strptime("2024-01-04", "%Y-%m-%d", "us")
    mask = pc.and_(
        pc.and_(
            pc.equal(daily.column("level"), "region+category"), pc.equal(daily.column("day"), day)
        ),
        pc.and_(
            pc.equal(daily.column("region"), "SF"), pc.equal(daily.column("category"), "grocery")
        ),
    )
    rows = daily.filter(pc.and_(mask, pc.equal(daily.column("daypart"), "dinner")))
    sql = observed(
        demo_dataset[0],
        "o.region = 'SF' AND o.category = 'grocery' AND o.daypart = 'dinner' "
        "AND o.order_time::DATE = DATE '2024-01-04'",
    )
    assert rows.num_rows == 1 and rows.column("orders")[0].as_py() == sql["orders"]
    assert rows.column("on_time")[0].as_py() == sql["on_time"]
