"""Continuous monitoring: the watch loop (``loop``) and the alert preview (``preview``)."""

from cxagent.watch.loop import TickReport, WatchSettings, dataset_key, tick, watch
from cxagent.watch.preview import preview

__all__ = ["TickReport", "WatchSettings", "dataset_key", "preview", "tick", "watch"]
