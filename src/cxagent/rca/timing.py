"""Timing evidence: does a hypothesis's driver move with the late rate, and ahead of it?

Inside the investigated slice, hour by hour, each driver (batched share, merchant prep
minutes, courier wait of unbatched orders, promised minutes) and the late rate are turned
into anomalies: the hour's value minus the mean of the same hour of day over the baseline
days, so that the daily rhythm both share (dinner is busier and later) does not pass for a
link. The cross-correlation of the two anomaly series at lags 0 to ``MAX_LAG_H`` hours
(driver earlier) says whether the driver's excursions come with, or shortly before, the
late rate's. A cause that moved the late rate shows a clear positive correlation at a short
lag; a driver that only drifts beside it does not.

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


def _anomalies(hours: pd.DatetimeIndex, value: pd.Series, baseline: pd.Series) -> pd.Series:
    """Hour's value minus the baseline mean of its hour of day (``hours``: their index)."""
    hour_of_day = hours.hour
    norm = value[baseline].groupby(hour_of_day[baseline.to_numpy()]).mean()
    expected = norm.reindex(hour_of_day).to_numpy()
    return value - expected


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
    d["unbatched"] = (np.nan_to_num(d["batched"].to_numpy(float)) == 0).astype(float)
    d["delivered"] = 1.0
    d["late"] = d["late"].astype(float)
    d["wait_unbatched"] = d["dasher_wait_min"].where(d["unbatched"] > 0)
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
        if cause in missing or d[driver.column].isna().all():
            continue
        value = grouped[driver.column].mean().reindex(full).where(enough)
        out[cause] = driver.harm * _anomalies(full, value, baseline & enough & value.notna())
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
