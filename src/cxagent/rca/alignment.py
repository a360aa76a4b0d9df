"""Did a logged change move the driver of the mechanism it names, when it took effect? And
did each driver move where the regression starts (``onset_steps``, the same test at the
regression's start, for every hypothesis, logged or not)?

A change log holds many changes that did nothing (an app release, a ranking tweak): a change
in scope a few days before the regression is opportunity, not evidence. A change that acted
moves its mechanism's driver from the moment it took effect - the batched share rises at a
batching change, couriers on shift fall at a supply change, the share of bad item lines rises
at a catalogue change. Inside the investigated slice, on the driver's hourly anomalies
(``timing``: the hour's value minus its baseline level at that hour of day, and day of week
for a driver scheduled to the week, harm-signed; hours with too few orders left out), the
mean over the ``DAYS`` days of observed hours after the change minus the mean over as many
hours before it is the step. It is scored against the same step taken at every earlier hour
of the slice's history (placebo times, Abadie et al.'s in-time placebos): day-to-day shocks
make steps at arbitrary times large too, and this scale knows them. The score is a feature
of the calibrated confidence, not a p-value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from cxagent.hypotheses import REGISTRY
from cxagent.rca.changelog import ChangeMatch
from cxagent.rca.timing import HourlyAnomalies

DAYS: Final = 2  # each side of the step, in days of the slice's observed hours
MIN_HOURS: Final = 3  # observed hours needed on each side
MIN_PLACEBOS: Final = 24  # earlier hours the step is also taken at
MAX_SCORE: Final = 10.0
MOVED: Final = 2.0  # a score from which the driver is said to have moved with the change


@dataclass(frozen=True)
class DriverStep:
    """The harm-signed step of a hypothesis's driver at one logged change."""

    cause: str
    change: ChangeMatch
    step: float  # driver units (share, minutes), after minus before, harm-signed
    score: float  # step over the typical step at placebo times, clipped to +-MAX_SCORE
    hours: int  # observed hours on each side

    def describe(self) -> str:
        words = REGISTRY[self.cause].driver.words
        way = "the harmful way" if self.step > 0 else "the benign way"
        verdict = "moved with it" if self.score >= MOVED else "did not clearly move with it"
        return (
            f"at logged change {self.change.change_id} '{self.change.name}' the {words} "
            f"{verdict}: {abs(self.step):.3g} {way} over the {self.hours} observed hours after "
            f"it against as many before, {self.score:+.1f} times its typical step at earlier "
            "times"
        )


def step_score(anomalies: pd.Series, when: dt.datetime) -> tuple[float, float, int]:
    """(step, score, hours per side) of ``anomalies`` (hourly, NaN = no data) at ``when``;
    NaN score when there are too few observed hours around or before it."""
    a = anomalies.dropna()
    values = a.to_numpy(float)
    at = int(a.index.searchsorted(pd.Timestamp(when)))
    week = a.index[(a.index >= pd.Timestamp(when) - pd.Timedelta(days=7)) & (a.index < when)]
    k = max(MIN_HOURS, round(DAYS * len(week) / 7))
    k_after = min(k, len(values) - at)
    placebos = at - 2 * k + 1  # positions i in [k, at - k]: both sides before the change
    if k_after < MIN_HOURS or placebos < MIN_PLACEBOS:
        return np.nan, np.nan, k
    cs = np.concatenate([[0.0], np.cumsum(values)])
    pos = np.arange(k, at - k + 1)
    steps = (cs[pos + k] - cs[pos]) / k - (cs[pos] - cs[pos - k]) / k
    step = (cs[at + k_after] - cs[at]) / k_after - (cs[at] - cs[at - k]) / k
    # a shorter after side is noisier: scale the placebo spread to its length
    scale = float(np.std(steps, ddof=1)) * np.sqrt((1 / k_after + 1 / k) / (2 / k))
    if scale <= 0:
        return float(step), 0.0, k
    return float(step), float(np.clip(step / scale, -MAX_SCORE, MAX_SCORE)), k


def driver_steps(
    hourly: HourlyAnomalies | None, changes: Iterable[ChangeMatch]
) -> dict[str, DriverStep]:
    """Per hypothesis, the candidate change (in scope, before the regression) whose driver
    stepped most; hypotheses without a testable driver or a candidate change are absent."""
    out: dict[str, DriverStep] = {}
    if hourly is None:
        return out
    for change in changes:
        if not change.candidate:
            continue
        for cause in change.hypotheses:
            anomalies = hourly.drivers.get(cause)
            if anomalies is None:
                continue
            step, score, hours = step_score(anomalies, change.started_at)
            if not np.isfinite(score):
                continue
            if cause not in out or score > out[cause].score:
                out[cause] = DriverStep(cause, change, step, score, hours)
    return out


@dataclass(frozen=True)
class OnsetStep:
    """The harm-signed step of a hypothesis's driver where the regression starts."""

    cause: str
    at: dt.datetime
    step: float
    score: float
    hours: int

    def describe(self) -> str:
        words = REGISTRY[self.cause].driver.words
        way = "the harmful way" if self.step > 0 else "the benign way"
        return (
            f"where the regression starts the {words} moved {abs(self.step):.3g} {way} over "
            f"the {self.hours} observed hours after against as many before, "
            f"{self.score:+.1f} times its typical step at earlier times"
        )


def onset_steps(hourly: HourlyAnomalies | None, at: dt.datetime) -> dict[str, OnsetStep]:
    """Per hypothesis with a driver, its step at ``at`` (the regression's start) scored
    against its steps at every earlier hour: a cause moves its driver where the outcome
    breaks, and a step no larger than the slice's day-to-day ones is no sign of it."""
    out: dict[str, OnsetStep] = {}
    if hourly is None:
        return out
    for cause, anomalies in hourly.drivers.items():
        step, score, hours = step_score(anomalies, at)
        if np.isfinite(score):
            out[cause] = OnsetStep(cause, at, step, score, hours)
    return out
