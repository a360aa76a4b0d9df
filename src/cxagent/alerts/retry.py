"""Retries with exponential backoff, for failures that may pass.

Connection errors, timeouts, HTTP 429 and 5xx, and SMTP 4xx replies are transient: the
message is tried again after ``backoff_s``, then twice that, and so on, capped at
``max_backoff_s``, with up to 10% jitter so that channels failing together do not retry in
step. A ``Retry-After`` the receiver sends is waited instead; one longer than
``max_backoff_s`` ends this dispatch's tries (the next dispatch tries again). Anything else
(HTTP 4xx, SMTP 5xx, a refused login) is permanent: retrying would only repeat it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar

from cxagent.alerts.settings import Channel

JITTER = 0.1
T = TypeVar("T")


class DeliveryError(Exception):
    """One attempt failed; ``transient`` says whether another may succeed. The message is
    what the delivery record keeps (never a URL: a Slack URL carries its token)."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempted(Generic[T]):
    """How a message fared: the attempt's value when delivered, else the last error."""

    value: T | None
    attempts: int
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None


def backoff_delay(channel: Channel, retry: int, random: Callable[[], float]) -> float:
    """The wait before retry number ``retry`` (1 = the first retry)."""
    base = channel.backoff_s * 2 ** (retry - 1)
    return min(channel.max_backoff_s, base * (1 + JITTER * random()))


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delay-seconds or an HTTP date (None if absent
    or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def with_retries(
    attempt: Callable[[], T],
    channel: Channel,
    *,
    sleep: Callable[[float], None],
    random: Callable[[], float],
) -> Attempted[T]:
    """Call ``attempt`` until it returns, fails permanently, or the channel's
    ``max_attempts`` are spent."""
    for n in range(1, channel.max_attempts + 1):
        try:
            return Attempted(attempt(), n)
        except DeliveryError as exc:
            error = str(exc)
            if not exc.transient or n == channel.max_attempts:
                return Attempted(None, n, error)
            wait = backoff_delay(channel, n, random)
            if exc.retry_after is not None:
                if exc.retry_after > channel.max_backoff_s:
                    return Attempted(
                        None,
                        n,
                        f"{error}; Retry-After {exc.retry_after:g} s exceeds max_backoff_s "
                        f"{channel.max_backoff_s:g}, left for the next dispatch",
                    )
                wait = exc.retry_after
            sleep(wait)
    raise AssertionError("unreachable: max_attempts >= 1")
