"""Cohort definitions shared by every source: dayparts and basket sizes.

Dayparts are taken on the local wall-clock hour of ``orders.order_time``; every hour of the
day belongs to exactly one daypart:

| daypart    | hours (local) |
| ---------- | ------------- |
| breakfast  | 05:00 - 10:59 |
| lunch      | 11:00 - 15:59 |
| dinner     | 16:00 - 20:59 |
| late_night | 21:00 - 04:59 |

Basket sizes are taken on the number of item lines of an order: small is 1-3 lines,
medium 4-9, large 10 or more.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

DAYPARTS: Final = ("breakfast", "lunch", "dinner", "late_night")
BASKET_SIZES: Final = ("small", "medium", "large")
CATEGORIES: Final = ("grocery", "convenience", "retail")
DEFAULT_REGIONS: Final = ("SF", "NYC", "LA", "CHI", "SEA")

# DAYPART_OF_HOUR[h] is the index into DAYPARTS of local hour h.
DAYPART_OF_HOUR: Final = np.array(
    [3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3], dtype=np.int8
)
MEDIUM_BASKET_MIN_LINES: Final = 4
LARGE_BASKET_MIN_LINES: Final = 10


def daypart_codes(hours: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Index into ``DAYPARTS`` for each local hour (0-23)."""
    h = np.asarray(hours)
    if h.size and (h.min() < 0 or h.max() > 23):
        raise ValueError("hours must lie in 0..23")
    return DAYPART_OF_HOUR[h]


def dayparts(hours: npt.ArrayLike) -> npt.NDArray[np.object_]:
    """Daypart name for each local hour (0-23)."""
    return np.asarray(DAYPARTS, dtype=object)[daypart_codes(hours)]


def basket_size_codes(item_lines: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Index into ``BASKET_SIZES`` for each order's number of item lines."""
    n = np.asarray(item_lines)
    return ((n >= MEDIUM_BASKET_MIN_LINES).astype(np.int8) + (n >= LARGE_BASKET_MIN_LINES)).astype(
        np.int8
    )


def basket_sizes(item_lines: npt.ArrayLike) -> npt.NDArray[np.object_]:
    """Basket size name for each order's number of item lines."""
    return np.asarray(BASKET_SIZES, dtype=object)[basket_size_codes(item_lines)]
