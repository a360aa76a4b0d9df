from pathlib import Path

import pandas as pd
import pytest

from cxagent.data.io import DatasetWriter, read_frame, to_arrow
from cxagent.data.schema import STORES, Manifest
from cxagent.errors import DataValidationError, OutputExistsError

STORE_ROWS = pd.DataFrame(
    {
        "store_id": [1, 2],
        "region": ["SF", "LA"],
        "category": ["grocery", "retail"],
        "name": ["a", "b"],
    }
)


def test_given_an_error_mid_write_when_leaving_the_writer_then_nothing_is_left(
    tmp_path: Path,
) -> None:
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError), DatasetWriter(out) as w:
        w.write("stores", STORE_ROWS)
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_given_an_existing_dataset_when_overwrite_fails_then_the_old_one_survives(
    tmp_path: Path,
) -> None:
    out = tmp_path / "ds"
    with DatasetWriter(out) as w:
        w.write("stores", STORE_ROWS)
        w.commit(Manifest(source="test"))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        DatasetWriter(out)
    with pytest.raises(DataValidationError), DatasetWriter(out, overwrite=True) as w:
        w.write("stores", STORE_ROWS.drop(columns=["region"]))
    assert read_frame(out, "stores")["store_id"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_overwrite_replaces_the_whole_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    for rows in (STORE_ROWS, STORE_ROWS.head(1)):
        with DatasetWriter(out, overwrite=True) as w:
            w.write("stores", rows)
            w.commit(Manifest(source="test"))
    assert len(read_frame(out, "stores")) == 1


def test_to_arrow_names_the_missing_or_uncastable_column() -> None:
    with pytest.raises(DataValidationError, match="column 'region'"):
        to_arrow(STORES, STORE_ROWS.drop(columns=["region"]), source="stores.csv")
    bad = STORE_ROWS.assign(store_id=["x", "y"])
    with pytest.raises(DataValidationError, match="stores.csv, column 'store_id'"):
        to_arrow(STORES, bad, source="stores.csv")
