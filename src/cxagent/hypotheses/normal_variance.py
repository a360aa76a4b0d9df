"""normal_variance: the evidence does not beat noise - "monitor, no action needed".

The answer when no hypothesis's impact interval lies above zero. How sure it is: one minus
the bootstrap support of the best-supported mechanism (the share of day-bootstrap replicates
in which its impact was positive), so a near miss is reported as an uncertain all-clear.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

NAME = "normal_variance"
PLAIN = "the change is within the normal ups and downs"


def confidence(supports: Iterable[float]) -> float:
    """Confidence that nothing beyond noise acted, from the ruled-out mechanisms'
    bootstrap supports (NaN ones ignored)."""
    best = max((s for s in supports if np.isfinite(s)), default=0.0)
    return 1.0 - best


def evidence(ruled_out: Iterable[str]) -> str:
    return f"no hypothesis beats noise ({', '.join(ruled_out)})"
