"""Multi-dimensional root-cause localisation: the top regressing slices of a KPI.

``localize`` takes one row per combination of cohort dimensions (additive counts, or the
numerator and denominator of a rate for an expected and an observed window) and returns a
ranked list of slices, each with its change, its share of the total change and a
BH-adjusted significance. ``scoring`` holds the exact-match micro-F1 of the localisation
papers, used by ``benchmarks/localization.py``.
"""

from cxagent.localize.localizer import localize
from cxagent.localize.result import (
    Direction,
    Kind,
    LocalizationResult,
    LocalizeConfig,
    SliceFinding,
    VarianceModel,
)

__all__ = [
    "Direction",
    "Kind",
    "LocalizationResult",
    "LocalizeConfig",
    "SliceFinding",
    "VarianceModel",
    "localize",
]
