"""Timing evidence: does a hypothesis's driver move with the late rate, and ahead of it?

Inside the investigated slice, hour by hour, each driver (batched share, merchant prep
minutes, couriers on shift on a log scale, promised minutes) and the late rate are turned
into anomalies: the hour's value minus the mean of the same hour of day over the baseline
days, so that the daily rhythm both share (dinner is busier and later) does not pass for a
link; a driver scheduled to the week (couriers on shift) also has its baseline level of the
same day of week taken out. The cross-correlation of the two anomaly series at lags 0 to
``MAX_LAG_H`` hours (driver earlier) says whether the driver's excursions come with, or
shortly before, the late rate's. A cause that moved the late rate shows a clear positive
correlation at a short lag; a driver that only drifts beside it does not.

Hours with fewer than ``MIN_ORDERS`` delivered orders are left out (their rates are noise).
Correlation is evidence of timing, not of cause: two effects of one shock move together too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from cxagent.hypotheses import REGISTRY, Driver

MAX_LAG_H: Final = 3
MIN_ORDERS: Final = 5
MIN_HOURS: Final = 24
MIN_WEEKDAY_DATES: Final = 2  # baseline dates a day of week needs for its own level

# the drivers whose hourly means are tested against the late rate: those of the hypotheses
# acting on lateness (inventory acts on item accuracy: no timing test; its driver is still
# made hourly, for the change-alignment test)
DRIVERS: Final[dict[str, Driver]] = {
    name: h.driver for name, h in REGISTRY.items() if h.outcome == "late"
}


@dataclass(frozen=True)
class LaggedCorrelation:
    cause: str
    correlation: float  # harm-signed: positive when the driver's harm comes with lateness
    lag_hours: int  # driver earlier by this much
    hours: int  # hours in the correlation

    def describe(self) -> str:
        when = "in the same hour" if self.lag_hours == 0 else f"{self.lag_hours} h earlier"
        return (
            f"timing: hourly {DRIVERS[self.cause].words} anomalies against late-rate anomalies "
            f"{when}: correlation {self.correlation:+.2f} over {self.hours} hours"
        )


def _anomalies(
    hours: pd.DatetimeIndex, value: pd.Series, baseline: pd.Series, *, weekly: bool = False
) -> pd.Series:
    """Hour's value minus its expected value on the baseline hours (``hours``: their index):
    the mean of its hour of day and, when ``weekly``, the mean deviation of its day of week
    from that.

    Couriers are scheduled to each day's expected demand (more on Fridays): without the day
    of week, two days after a Thursday change against the two before it compare a Thursday
    and a Friday with a Tuesday and a Wednesday. A baseline has only a few dates of each day
    of week, so a baseline hour's own date is left out of its day's level
    (leave-one-date-out): fitted in-sample, the level would absorb that date's shock, and
    the baseline's anomalies, the scale the step tests read a step against, would look
    calmer than the hours after it. A day of week seen on fewer than ``MIN_WEEKDAY_DATES``
    baseline dates is taken as an average day."""
    b = baseline.to_numpy(bool) & value.notna().to_numpy()
    hour_of_day = hours.hour
    by_hour = value[b].groupby(hour_of_day[b]).mean()
    rest = value.to_numpy(float) - by_hour.reindex(hour_of_day).to_numpy()
    if weekly:
        rest = rest - _weekday_levels(hours, rest, b)
    return pd.Series(rest, index=value.index)


def _weekday_levels(hours: pd.DatetimeIndex, rest: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per hour, the mean of ``rest`` over the baseline hours (``b``) of its day of week,
    its own date left out."""
    day_of_week, dates = hours.day_of_week, hours.normalize()
    per_date = pd.DataFrame({"day": day_of_week[b], "date": dates[b], "rest": rest[b]})
    per_date = per_date.groupby(["day", "date"])["rest"].agg(["sum", "count"])
    per_day = per_date.groupby(level="day").sum()
    n_dates = per_date.groupby(level="day").size().reindex(day_of_week).to_numpy()
    own = per_date.reindex(pd.MultiIndex.from_arrays([day_of_week, dates]))
    own_sum = np.where(b, own["sum"].to_numpy(), 0.0)
    own_count = np.where(b, own["count"].to_numpy(), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = (per_day["sum"].reindex(day_of_week).to_numpy() - own_sum) / (
            per_day["count"].reindex(day_of_week).to_numpy() - own_count
        )
    return np.where((n_dates >= MIN_WEEKDAY_DATES) & np.isfinite(level), level, 0.0)


@dataclass(frozen=True)
class HourlyAnomalies:
    """Harm-signed hourly anomalies (NaN where an hour has too few orders) of the late rate
    and of each testable hypothesis's driver, on one hourly index."""

    late: pd.Series
    drivers: dict[str, pd.Series]


def hourly_anomalies(
    frame: pd.DataFrame, *, after: str = "after", missing: set[str] | frozenset[str] = frozenset()
) -> HourlyAnomalies | None:
    """The anomalies of ``frame``'s delivered orders; hypotheses in ``missing`` or without
    data are left out; None without delivered orders."""
    d = frame[frame["delivered"]].copy()
    if d.empty:
        return None
    d["delivered"] = 1.0
    d["late"] = d["late"].astype(float)
    drivers = dict(DRIVERS)
    if "bad_items" in d and "item_count" in d:
        # inventory acts on item accuracy: its driver, the share of bad item lines, has a
        # step at a change (``alignment``) but no timing link with lateness
        d["bad_share"] = d["bad_items"] / d["item_count"].where(d["item_count"] > 0)
        drivers["inventory_drop"] = REGISTRY["inventory_drop"].driver
    grouped = d.groupby(d["order_time"].dt.floor("h"))
    count = grouped["delivered"].sum()
    full = pd.date_range(count.index.min(), count.index.max(), freq="h")
    count = count.reindex(full, fill_value=0.0)
    enough = count >= MIN_ORDERS
    baseline = pd.Series(~grouped[after].max().reindex(full, fill_value=False).to_numpy(bool))
    baseline.index = full
    late = grouped["late"].mean().reindex(full).where(enough)
    out = {}
    for cause, driver in drivers.items():
        if cause in missing or driver.column not in d or d[driver.column].isna().all():
            continue
        value = grouped[driver.column].mean().reindex(full).where(enough)
        # hours without a value are left out of the baseline by ``_anomalies``
        out[cause] = driver.harm * _anomalies(full, value, baseline & enough, weekly=driver.weekly)
    return HourlyAnomalies(_anomalies(full, late, baseline & enough), out)


def lagged_correlations(hourly: HourlyAnomalies | None) -> dict[str, LaggedCorrelation]:
    """The strongest harm-signed correlation of each driver's hourly anomalies with the late
    rate's, over lags 0 to ``MAX_LAG_H`` hours (driver first)."""
    if hourly is None:
        return {}
    out = {}
    for cause, anom in hourly.drivers.items():
        if cause not in DRIVERS:
            continue
        best: LaggedCorrelation | None = None
        for lag in range(MAX_LAG_H + 1):
            x, y = anom.shift(lag), hourly.late
            ok = x.notna() & y.notna()
            if ok.sum() < MIN_HOURS or x[ok].std() == 0 or y[ok].std() == 0:
                continue
            r = float(np.corrcoef(x[ok], y[ok])[0, 1])
            if best is None or r > best.correlation:
                best = LaggedCorrelation(cause, r, lag, int(ok.sum()))
        if best is not None:
            out[cause] = best
    return out
