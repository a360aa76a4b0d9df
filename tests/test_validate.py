import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.data.io import table_files
from cxagent.data.validate import validate_dataset


@pytest.fixture
def dataset(small_dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(small_dataset, out)
    return out


def _rewrite(root: Path, table: str, change: Callable[[pa.Table], pa.Table]) -> Path:
    path = table_files(root, table)[0]
    pq.write_table(change(pq.read_table(path)), path)
    return path


def _set(t: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return t.set_column(t.column_names.index(column), column, values)


def test_a_generated_dataset_is_valid(small_dataset: Path) -> None:
    report = validate_dataset(small_dataset)
    assert report.ok, report.problems
    assert report.rows["orders"] > 10_000 and report.rows["items"] > report.rows["orders"]


CORRUPTIONS: list[tuple[str, str, Callable[[pa.Table], pa.Table], str]] = [
    ("orders", "region", lambda t: t.drop_columns(["region"]), "missing column"),
    (
        "orders",
        "basket_value",
        lambda t: _set(t, "basket_value", pa.array(["x"] * t.num_rows)),
        "expected float64",
    ),
    (
        "orders",
        "user_id",
        lambda t: _set(t, "user_id", pa.array([None] * t.num_rows, pa.int64())),
        "has nulls",
    ),
    ("ratings", "stars", lambda t: _set(t, "stars", pc.add(t.column("stars"), 5)), "above 5"),
    (
        "orders",
        "category",
        lambda t: _set(t, "category", pa.array(["pharmacy"] * t.num_rows)),
        "outside",
    ),
    (
        "orders",
        "promised_eta",
        lambda t: _set(
            t,
            "promised_eta",
            pc.subtract(t.column("order_time"), pa.scalar(60_000_000, pa.duration("us"))),
        ),
        "earlier than order_time",
    ),
    (
        "orders",
        "order_time",
        lambda t: _set(
            t,
            "order_time",
            pc.add(t.column("order_time"), pa.scalar(86_400_000_000 * 40, pa.duration("us"))),
        ),
        "outside its partition",
    ),
    (
        "orders",
        "order_id",
        lambda t: _set(t, "order_id", pa.array([t.column("order_id")[0].as_py()] * t.num_rows)),
        "duplicate key",
    ),
    (
        "deliveries",
        "order_id",
        lambda t: _set(t, "order_id", pc.add(t.column("order_id"), 1_000_000_000_000)),
        "missing orders.order_id",
    ),
    (
        "orders",
        "daypart",
        lambda t: _set(t, "daypart", pa.array(["breakfast"] * t.num_rows)),
        "does not match the hour",
    ),
    (
        "orders",
        "basket_size",
        lambda t: _set(t, "basket_size", pa.array(["large"] * t.num_rows)),
        "does not match item_count",
    ),
    (
        "deliveries",
        "batched_flag",
        lambda t: _set(t, "batched_flag", pa.array([True] * t.num_rows)),
        "disagrees with trip_id",
    ),
]


@pytest.mark.parametrize(
    ("table", "column", "change", "message"), CORRUPTIONS, ids=[c[3] for c in CORRUPTIONS]
)
def test_given_a_corrupted_file_when_validating_then_the_problem_names_file_and_column(
    dataset: Path, table: str, column: str, change: Callable[[pa.Table], pa.Table], message: str
) -> None:
    path = _rewrite(dataset, table, change)
    report = validate_dataset(dataset)
    assert not report.ok
    text = " | ".join(str(p) for p in report.problems)
    assert message in text
    assert f"column '{column}'" in text
    assert path.name in text or str(dataset / table) in text


def test_unreadable_files_and_missing_manifests_are_reported(dataset: Path) -> None:
    table_files(dataset, "ratings")[0].write_bytes(b"not parquet at all")
    report = validate_dataset(dataset)
    assert any("not a readable Parquet file" in str(p) for p in report.problems)
    (dataset / "dataset.json").unlink()
    assert "no dataset.json" in str(validate_dataset(dataset).problems[0])
    assert "does not exist" in str(validate_dataset(dataset / "nope").problems[0])


def test_manifest_may_only_mark_nullable_columns_missing(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    manifest["missing_columns"] = {"orders": ["order_time"]}
    (dataset / "dataset.json").write_text(json.dumps(manifest))
    assert "not a nullable column" in str(validate_dataset(dataset).problems[0])


def test_validate_cli_exit_codes(small_dataset: Path, dataset: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(small_dataset), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    _rewrite(dataset, "orders", lambda t: t.drop_columns(["region"]))
    bad = runner.invoke(app, ["validate", str(dataset), "--json"])
    assert bad.exit_code == 1
    assert "column 'region'" in json.loads(bad.stdout)["problems"][0]


def test_manifest_may_only_mark_optional_tables_missing(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    manifest["missing_tables"] = ["orders"]
    (dataset / "dataset.json").write_text(json.dumps(manifest))
    assert "not an optional table" in str(validate_dataset(dataset).problems[0])
