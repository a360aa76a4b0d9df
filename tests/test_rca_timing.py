"""Timing evidence: hourly driver anomalies against late-rate anomalies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxagent.rca.alignment import step_score
from cxagent.rca.timing import hourly_anomalies, lagged_correlations

CUT = pd.Timestamp("2024-03-21")  # a Thursday


def hourly_orders(
    driven_by: str | None, seed: int = 0, *, days: int = 12, weekend: float = 0.0, cut: float = 0.0
) -> pd.DataFrame:
    """Orders with a daily rhythm in both prep and lateness; when ``driven_by`` is "prep",
    hour-to-hour prep excursions make orders late. ``weekend``: Fridays and Saturdays have
    that many minutes more prep, that many more couriers (log) and as much less slack;
    ``cut``: couriers on shift (log) lower by that much from ``CUT``."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2024-03-01", periods=days * 24, freq="h")
    shock = rng.normal(0, 3, len(hours))  # each hour's prep excursion, minutes
    rows = []
    for h, s in zip(hours, shock, strict=True):
        n = 30
        rhythm = 4 * np.sin(2 * np.pi * h.hour / 24)  # shared daily pattern
        busy = weekend * (h.day_of_week in (4, 5))  # shared weekly pattern
        prep = 15 + rhythm + busy + s + rng.normal(0, 2, n)
        slack = rng.normal(10, 4, n) - rhythm - busy
        couriers = np.log(80) + 0.1 * busy + rng.normal(0, 0.02) - cut * (h >= CUT)
        if driven_by == "prep":
            slack -= s
        rows.append(
            pd.DataFrame(
                {
                    "order_time": h + pd.to_timedelta(rng.uniform(0, 3599, n), unit="s"),
                    "delivered": True,
                    "late": slack < 5,
                    "prep_min": prep,
                    "batched": 0.0,
                    "dasher_wait_min": rng.normal(3, 1, n),
                    "couriers_log": np.full(n, couriers),
                    "promised_min": rng.normal(35, 3, n),
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    frame["after"] = frame["order_time"] >= pd.Timestamp("2024-03-10" if days < 20 else CUT)
    return frame


def test_a_driver_whose_excursions_make_orders_late_correlates() -> None:
    found = lagged_correlations(hourly_anomalies(hourly_orders("prep")))
    assert found["prep_time_drift"].correlation > 0.4
    assert found["prep_time_drift"].lag_hours == 0


def test_a_shared_daily_rhythm_is_not_a_link() -> None:
    found = lagged_correlations(hourly_anomalies(hourly_orders(None)))
    assert abs(found["prep_time_drift"].correlation) < 0.25
    assert "batching_policy" not in found or abs(found["batching_policy"].correlation) < 0.25


def test_a_supply_cut_before_a_busy_friday_shows_its_step() -> None:
    # couriers are scheduled 10% up on Fridays and Saturdays; 9% are cut from a Thursday:
    # two days after against two before compare Thursday-Friday with Tuesday-Wednesday
    hourly = hourly_anomalies(hourly_orders(None, days=24, weekend=1.0, cut=0.09))
    assert hourly is not None
    step, score, _ = step_score(hourly.drivers["dasher_shortage"], CUT.to_pydatetime())
    assert abs(step - 0.09) < 0.02  # harm-signed: a fall is the harmful way
    assert score > 3
    # the weekly rhythm is taken out entirely: without a cut, the step is what it is without
    # the rhythm
    scores = [
        step_score(h.drivers["dasher_shortage"], CUT.to_pydatetime())[1]
        for weekend in (1.0, 0.0)
        if (h := hourly_anomalies(hourly_orders(None, days=24, weekend=weekend))) is not None
    ]
    assert len(scores) == 2
    assert scores[0] == pytest.approx(scores[1])
