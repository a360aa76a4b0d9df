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
