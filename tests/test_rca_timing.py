"""Timing evidence: hourly driver anomalies against late-rate anomalies."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxagent.rca.timing import hourly_anomalies, lagged_correlations


def hourly_orders(driven_by: str | None, seed: int = 0) -> pd.DataFrame:
    """Orders over 12 days with a daily rhythm in both prep and lateness; when
    ``driven_by`` is "prep", hour-to-hour prep excursions make orders late."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2024-03-01", periods=12 * 24, freq="h")
    shock = rng.normal(0, 3, len(hours))  # each hour's prep excursion, minutes
    rows = []
    for h, s in zip(hours, shock, strict=True):
        n = 30
        rhythm = 4 * np.sin(2 * np.pi * h.hour / 24)  # shared daily pattern
        prep = 15 + rhythm + s + rng.normal(0, 2, n)
        slack = rng.normal(10, 4, n) - rhythm
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
                    "promised_min": rng.normal(35, 3, n),
                }
            )
        )
    frame = pd.concat(rows, ignore_index=True)
    frame["after"] = frame["order_time"] >= pd.Timestamp("2024-03-10")
    return frame


def test_a_driver_whose_excursions_make_orders_late_correlates() -> None:
    found = lagged_correlations(hourly_anomalies(hourly_orders("prep")))
    assert found["prep_time_drift"].correlation > 0.4
    assert found["prep_time_drift"].lag_hours == 0


def test_a_shared_daily_rhythm_is_not_a_link() -> None:
    found = lagged_correlations(hourly_anomalies(hourly_orders(None)))
    assert abs(found["prep_time_drift"].correlation) < 0.25
    assert "batching_policy" not in found or abs(found["batching_policy"].correlation) < 0.25
