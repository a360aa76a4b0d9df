"""Incidents: detection over daypart windows, grouping into incidents, the incident feed.

``detect_incidents(data_dir)`` builds the slice cube, sums it into daypart windows
(``windows``), calibrates every slice x CX component (``calibrate``, ``null``), runs a
``cxagent.detect`` detector with false-discovery control (``detection``), resolves alarms to
the slice each regression is about (``grouping``, ``contrast``, ``episodes``), ranks the top
slices (``ranking``, ``localization``), sets severity (``feed``) and upserts the incidents
into the store. ``state`` makes it incremental.
"""

from cxagent.incidents.config import DETECTOR_DEFAULTS, DetectConfig
from cxagent.incidents.feed import IncidentReport, severity
from cxagent.incidents.pipeline import as_table, detect_incidents, load_windows, run_detection
from cxagent.incidents.state import DetectionState, advance, load_state, save_state, start_state
from cxagent.incidents.windows import WindowSeries, to_windows

__all__ = [
    "DETECTOR_DEFAULTS",
    "DetectConfig",
    "DetectionState",
    "IncidentReport",
    "WindowSeries",
    "advance",
    "as_table",
    "detect_incidents",
    "load_state",
    "load_windows",
    "run_detection",
    "save_state",
    "severity",
    "start_state",
    "to_windows",
]
