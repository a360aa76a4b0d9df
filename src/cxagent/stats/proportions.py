"""Intervals for a proportion, shared by the root-cause feedback and the storefront."""

from __future__ import annotations

import math
from typing import Final

Z95: Final = 1.959963984540054  # the two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (Wilson, JASA 1927; 95% by default); None
    without trials.

    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = successes / n``:
    unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage for
    small n and for proportions near 0 or 1 (few feedback labels, a small persona, rare
    conversions).
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, not {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
