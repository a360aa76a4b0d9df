"""Does a logged change line up with a step in its mechanism's driver?"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from cxagent.rca.alignment import driver_steps, onset_steps, step_score
from cxagent.rca.changelog import ChangeMatch
from cxagent.rca.timing import HourlyAnomalies, hourly_anomalies

START = pd.Timestamp("2024-03-01")
CHANGE = dt.datetime(2024, 3, 12, 0)


def anomalies(step_at: dt.datetime | None, size: float, seed: int = 0, day_sd: float = 0.0):
    """Hourly anomalies over 16 days: hourly noise, optional day-level shocks, and a
    persistent step of ``size`` from ``step_at``."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(START, periods=16 * 24, freq="h")
    day_shock = np.repeat(rng.normal(0, day_sd, 16), 24) if day_sd else 0.0
    values = rng.normal(0, 1.0, len(index)) + day_shock
    if step_at is not None:
        values = values + size * (index >= pd.Timestamp(step_at))
    return pd.Series(values, index=index)


def change(started: dt.datetime, hypotheses: tuple[str, ...], *, in_scope: bool = True):
    return ChangeMatch("c", "some change", "ops", started, hypotheses, in_scope, 30.0, True)


def test_a_step_at_the_change_scores_high_and_none_scores_low() -> None:
    assert step_score(anomalies(CHANGE, 1.0), CHANGE)[1] > 4
    scores = [step_score(anomalies(None, 0.0, seed), CHANGE)[1] for seed in range(20)]
    assert np.mean(np.abs(scores) < 2.5) >= 0.9


def test_day_level_shocks_widen_the_scale_instead_of_passing_for_a_step() -> None:
    """With shocks that move whole days, a step at midnight is what shocks do every day:
    scored against placebo steps, it is not evidence; against hourly noise it would be."""
    scores = [step_score(anomalies(None, 0.0, seed, day_sd=1.0), CHANGE)[1] for seed in range(20)]
    assert np.mean(np.abs(scores) < 2.5) >= 0.9
    # the same series' raw step is several hourly standard errors: the naive t is large
    raw = [abs(step_score(anomalies(None, 0.0, s, day_sd=1.0), CHANGE)[0]) for s in range(20)]
    assert np.mean(np.array(raw) / np.sqrt(2 / 48)) > 3


def test_observed_hours_only_a_dinner_slice_is_scored_on_its_dinners() -> None:
    series = anomalies(CHANGE, 2.0)
    dinner = series.where((series.index.hour >= 16) & (series.index.hour < 21))
    step, score, hours = step_score(dinner, CHANGE)
    assert hours == 10  # two days of five dinner hours each side
    assert score > 2.5 and abs(step - 2.0) < 0.9


def test_too_little_history_gives_no_score() -> None:
    short = anomalies(CHANGE, 1.0)[pd.Timestamp("2024-03-10") :]
    assert np.isnan(step_score(short, CHANGE)[1])


def test_driver_steps_keep_the_candidate_change_whose_driver_moved_most() -> None:
    hourly = HourlyAnomalies(
        late=anomalies(None, 0.0),
        drivers={"batching_policy": anomalies(CHANGE, 1.0), "dasher_shortage": anomalies(None, 0)},
    )
    earlier = dt.datetime(2024, 3, 10, 6)
    found = driver_steps(
        hourly,
        [
            change(earlier, ("batching_policy",)),
            change(CHANGE, ("batching_policy", "dasher_shortage")),
            change(CHANGE, ("prep_time_drift",)),  # no driver here: not tested
            change(CHANGE, ("dasher_shortage",), in_scope=False),  # not a candidate
        ],
    )
    assert set(found) == {"batching_policy", "dasher_shortage"}
    assert found["batching_policy"].change.started_at == CHANGE
    assert found["batching_policy"].score > 4
    assert abs(found["dasher_shortage"].score) < 2.5
    assert "moved with it: 0.851 the harmful way" in found["batching_policy"].describe()
    assert "did not clearly move" in found["dasher_shortage"].describe()


def test_the_share_of_bad_item_lines_is_inventorys_driver() -> None:
    rng = np.random.default_rng(1)
    times = START + pd.to_timedelta(rng.uniform(0, 16 * 86400, 20000), unit="s")
    after_change = times >= pd.Timestamp(CHANGE)
    frame = pd.DataFrame(
        {
            "order_time": times,
            "delivered": True,
            "late": rng.random(20000) < 0.1,
            "batched": 0.0,
            "dasher_wait_min": 3.0,
            "prep_min": 12.0,
            "promised_min": 35.0,
            "item_count": 4,
            "bad_items": rng.binomial(4, np.where(after_change, 0.12, 0.04)),
        }
    )
    frame["after"] = frame["order_time"] >= pd.Timestamp("2024-03-13")
    hourly = hourly_anomalies(frame)
    assert hourly is not None
    found = driver_steps(hourly, [change(CHANGE, ("inventory_drop",))])
    assert found["inventory_drop"].score > 4
    assert abs(found["inventory_drop"].step - 0.08) < 0.03


def test_at_the_regression_start_every_driver_is_scored_logged_change_or_not() -> None:
    late = anomalies(None, 0.0, seed=9)
    hourly = HourlyAnomalies(
        late, {"prep_time_drift": anomalies(CHANGE, 1.0), "batching_policy": anomalies(None, 0.0)}
    )
    onsets = onset_steps(hourly, CHANGE)
    assert onsets["prep_time_drift"].score > 4 and abs(onsets["batching_policy"].score) < 2.5
    line = onsets["prep_time_drift"].describe()
    assert line.startswith("where the regression starts the merchant prep moved")
    # too early for any history: nothing scored
    assert onset_steps(hourly, dt.datetime(2024, 3, 2)) == {}
    assert onset_steps(None, CHANGE) == {}
