"""Change-point and regression detectors behind one vectorised interface.

``get_detector(name, **params)`` builds one of ``zscore``, ``ewma``, ``scan``, ``bocpd``; ``seasonal``
removes the hour-of-week pattern; ``fdr`` controls false discoveries across many series.
"""

from cxagent.detect.base import (
    DetectionResult,
    DetectionStep,
    Detector,
    Direction,
    MeanObs,
    Observations,
    RateObs,
    detector_names,
    get_detector,
)
from cxagent.detect.bocpd import BOCPD
from cxagent.detect.ewma import EWMA
from cxagent.detect.scan import Scan
from cxagent.detect.zscore import ZScore

__all__ = [
    "BOCPD",
    "EWMA",
    "DetectionResult",
    "DetectionStep",
    "Detector",
    "Direction",
    "MeanObs",
    "Observations",
    "RateObs",
    "Scan",
    "ZScore",
    "detector_names",
    "get_detector",
]
