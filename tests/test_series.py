from pathlib import Path

import numpy as np
import pytest

from cxagent.engine.connection import connect
from cxagent.engine.cube import build_cube
from cxagent.metrics.definitions import STAT_FIELDS, CXStats
from cxagent.metrics.series import SliceSeries, build_series, slice_label


@pytest.fixture(scope="module")
def series(small_dataset: Path) -> SliceSeries:
    return build_series(build_cube(connect(small_dataset)), min_orders=50)


def test_every_slice_is_present_once_and_dayparts_keep_their_hours(series: SliceSeries) -> None:
    keys = [tuple(sorted(s.items())) for s in series.slices]
    assert len(keys) == len(set(keys))
    top = series.index({})
    dinner = series.index({"daypart": "dinner"})
    hours = series.hours.astype("datetime64[h]")
    hod = (hours - hours.astype("datetime64[D]")).astype(int)
    assert series.stats["orders"][dinner][(hod < 16) | (hod > 20)].sum() == 0
    inside = (hod >= 16) & (hod <= 20)
    assert np.array_equal(
        series.stats["orders"][dinner][inside], series.stats["orders"][top][inside]
    )
    assert slice_label({"category": "grocery", "region": "SF", "daypart": "dinner"}) == (
        "region=SF + category=grocery + daypart=dinner"
    )


def test_hourly_cx_score_equals_the_metric_definition(series: SliceSeries) -> None:
    cx, var = series.cx_score()
    i = series.index({"region": "SF"})
    j = int(np.argmax(series.stats["orders"][i]))
    stats = CXStats(**{f: float(series.stats[f][i, j]) for f in STAT_FIELDS})
    assert cx[i, j] == pytest.approx(stats.metrics()["cx_score"], abs=1e-9)
    assert var[i, j] > 0
    # bigger slices are measured more precisely
    top = series.index({})
    assert var[top, j] < var[i, j]


def test_rates_keep_numerator_and_denominator_apart(series: SliceSeries) -> None:
    value, n = series.rate("on_time")
    i = series.index({"category": "grocery"})
    pooled = series.stats["on_time"][i].sum() / series.stats["delivered"][i].sum()
    assert np.nansum(value[i] * n[i]) / n[i].sum() == pytest.approx(pooled)


def test_components_a_source_lacks_drop_out_instead_of_scoring_perfect(
    small_dataset: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from cxagent.metrics.definitions import DEFAULT_COMPONENTS

    root = tmp_path / "no_items"
    shutil.copytree(small_dataset, root)
    for table in ("items", "support_events", "ratings"):
        shutil.rmtree(root / table)
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["missing_tables"] = ["items", "support_events", "ratings"]
    (root / "dataset.json").write_text(json.dumps(manifest))
    cube = build_cube(connect(root))
    assert {"bad_items", "refunded", "support", "stars"} <= cube.missing_fields
    s = build_series(cube, with_dayparts=False)
    assert not s.measures("refund") and not s.measures("item_accuracy") and s.measures("on_time")
    i = s.index({"region": "SF"})
    j = int(np.argmax(s.stats["orders"][i]))
    only = tuple(c for c in DEFAULT_COMPONENTS if c.name in ("on_time", "cancellation"))
    stats = CXStats(**{f: float(s.stats[f][i, j]) for f in STAT_FIELDS})
    assert s.cx_score()[0][i, j] == pytest.approx(stats.metrics(only)["cx_score"])


ON_TIME_ONLY = {
    "on_time": 1.0,
    "item_accuracy": 0.0,
    "cancellation": 0.0,
    "refund": 0.0,
    "support_contact": 0.0,
    "rating": 0.0,
}


def test_the_weights_in_force_score_every_slice(series: SliceSeries) -> None:
    from cxagent.config import AgentConfig, validate_config
    from cxagent.metrics.definitions import DEFAULT_COMPONENTS, cx_components

    default, default_var = series.cx_score()
    explicit = series.cx_score(DEFAULT_COMPONENTS)
    assert np.array_equal(default, explicit[0], equal_nan=True)  # no weights: as before
    assert np.array_equal(default_var, explicit[1], equal_nan=True)
    with AgentConfig().activated():
        assert np.array_equal(series.cx_score()[0], default, equal_nan=True)

    config = validate_config({"metrics": {"cx_weights": ON_TIME_ONLY}})
    with config.activated():
        assert cx_components() == config.metrics.components()
        cx, _ = series.cx_score()
        i = series.index({"region": "SF"})
        j = int(np.argmax(series.stats["orders"][i]))
        stats = CXStats(**{f: float(series.stats[f][i, j]) for f in STAT_FIELDS})
        assert cx[i, j] == pytest.approx(stats.metrics()["cx_score"], abs=1e-9)
    assert cx_components() is DEFAULT_COMPONENTS  # only inside the block
    # with only on-time weighted, the CX Score is the on-time score wherever orders arrived
    on_time, n = series.rate("on_time")
    seen = n > 0
    expected = np.clip((on_time[seen] - 0.5) / 0.5, 0.0, 1.0) * 100.0
    assert cx[seen] == pytest.approx(expected)
    assert not np.allclose(cx[seen], default[seen])
    assert np.array_equal(cx, series.cx_score(config.metrics.components())[0], equal_nan=True)
