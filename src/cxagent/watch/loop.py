"""Continuous monitoring: one tick detects on the windows completed since the last, updates
the incidents in the store, investigates what changed and tells the alert channels.

A tick is what ``cxagent detect --state`` does, with its state in the store instead of a
file (``cxagent.store.watch``), so a restarted watch goes on from the last completed tick:

1. the fitted detection state of the dataset is read from the store (the first tick, or a
   tick after the detection settings changed, calibrates on the history and replays the
   last ``monitor_days``, as a batch run does);
2. the windows completed since are detected; incidents are upserted, so an episode that
   goes on updates its incident (wider window, more affected orders) and never duplicates it;
3. incidents created or changed by this tick are investigated and their workbench views
   stored (causes, fixes, plans), when ``investigate`` is on;
4. every channel is told what it has not been told yet (``cxagent.alerts.dispatch``: one
   message per incident per channel, updates grouped to it, failed sends retried next tick);
5. the state and the tick's summary are saved in one transaction.

``watch`` repeats ticks every ``interval_s`` until stopped; a tick that fails on the data
(a file being written, say) is reported and the next tick tries again.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cxagent.alerts import Channel, Sender, dispatch, pending_incidents, stored_causes
from cxagent.errors import CXAgentError
from cxagent.incidents.config import DetectConfig
from cxagent.incidents.pipeline import detect_on
from cxagent.store.db import session_factory
from cxagent.store.models import utcnow
from cxagent.store.repository import list_incidents, upsert_incident
from cxagent.store.watch import load_watch_state, save_watch_state

Progress = Callable[[Iterable[Any], str], Iterable[Any]]


def _quiet(items: Iterable[Any], _description: str) -> Iterable[Any]:
    return items


@dataclass(frozen=True)
class WatchSettings:
    """How the loop runs: ``interval_s`` between tick starts; ``investigate`` new and changed
    incidents (root causes, fixes; off: detection and alerts only); ``n_bootstrap``
    replicates of the investigation's intervals; ``workbench_url`` links the alerts."""

    interval_s: float = 900.0
    investigate: bool = True
    n_bootstrap: int = 100
    workbench_url: str | None = None

    def __post_init__(self) -> None:
        if not self.interval_s >= 1:
            raise CXAgentError(f"interval: must be at least 1 second, got {self.interval_s}")
        if self.n_bootstrap < 1:
            raise CXAgentError(f"n_bootstrap: must be >= 1, got {self.n_bootstrap}")


@dataclass
class TickReport:
    """What one tick did."""

    started_at: dt.datetime
    seconds: float = 0.0
    windows: int = 0  # daypart windows processed by this tick
    data_until: str | None = None  # end of the last complete window seen
    refit: str | None = None  # why the state was refitted, when it was
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    investigated: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    tick: int = 0  # ticks completed for this dataset, across restarts

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["started_at"] = self.started_at.isoformat()
        return d


def dataset_key(data: Path | str) -> str:
    """The dataset's identity in the store: its absolute path, or its URL."""
    text = str(data)
    return text if "://" in text else str(Path(text).resolve())


def tick(
    data: Path | str,
    store_url: str,
    config: DetectConfig,
    channels: Sequence[Channel] = (),
    *,
    settings: WatchSettings | None = None,
    sender: Sender | None = None,
    progress: Progress = _quiet,
) -> TickReport:
    """One pass: detect the new windows, upsert, investigate what changed, alert, save."""
    settings = settings or WatchSettings()
    report = TickReport(started_at=utcnow())
    start = time.perf_counter()
    factory = session_factory(store_url)
    key = dataset_key(data)
    state, _, report.refit = load_watch_state(factory, key, config)
    done_before = None if state is None else state.next_id
    # a fresh state needs the history and the monitored days; a fitted one, its windows since
    days = None if state is not None else config.history_days + config.monitor_days + 2
    win, state, reports = detect_on(data, config, days=days, state=state)
    report.windows = state.next_id - (state.monitor_first if done_before is None else done_before)
    report.data_until = str(win.as_of)
    if report.windows:
        versions = {i.id: i.version for i in list_incidents(factory)}
        for r in reports:
            incident, created = upsert_incident(factory, r.draft)
            r.incident_id, r.created = incident.id, created
            if created:
                report.created.append(incident.id)
            elif incident.version != versions.get(incident.id):
                report.updated.append(incident.id)
        changed = set(report.created) | set(report.updated)
        todo = [r for r in reports if r.incident_id in changed]
        if settings.investigate and todo:
            _investigate(data, store_url, factory, todo, settings, progress)
            report.investigated = [str(r.incident_id) for r in todo]
    if channels:
        # only what some channel may have to hear: resolved, told incidents are not re-read
        incidents = pending_incidents(factory, list_incidents(factory), channels)
        results = dispatch(
            factory,
            incidents,
            channels,
            sender=sender,
            causes=stored_causes(factory, [i.id for i in incidents]),
            workbench_url=settings.workbench_url,
        )
        report.alerts = [r.as_dict() for r in results if r.outcome != "skipped"]
    report.seconds = round(time.perf_counter() - start, 2)
    report.tick = save_watch_state(factory, key, state, report.as_dict(), expected=done_before)
    return report


def _investigate(
    data: Path | str,
    store_url: str,
    factory: Any,
    reports: list[Any],
    settings: WatchSettings,
    progress: Progress,
) -> None:
    """Root causes, fixes and the workbench views of the incidents a tick changed."""
    from cxagent.engine.connection import connect
    from cxagent.rca.investigate import investigate_reports
    from cxagent.recommend.recommend import recommend
    from cxagent.store.feedback import stored_recalibration
    from cxagent.workbench.build import dataset_info, store_views

    engine = connect(data)
    found = investigate_reports(
        engine,
        progress(reports, "investigating root causes"),
        n_bootstrap=settings.n_bootstrap,
        recalibration=stored_recalibration(store_url),
    )
    recs = [recommend(engine, inv, n_bootstrap=settings.n_bootstrap) for inv in found]
    store_views(factory, engine, found, recs, dataset=dataset_info(Path(data)))


def watch(
    data: Path | str,
    store_url: str,
    config: DetectConfig,
    channels: Sequence[Channel] = (),
    *,
    settings: WatchSettings | None = None,
    max_ticks: int | None = None,
    stop: threading.Event | None = None,
    on_tick: Callable[[TickReport], None] | None = None,
    sender: Sender | None = None,
    progress: Progress = _quiet,
) -> int:
    """Tick every ``settings.interval_s`` until ``stop`` is set or ``max_ticks`` ran;
    returns the number of ticks. A tick that fails on the data is reported (``error``) and
    the loop goes on; settings errors were refused before the first tick."""
    settings = settings or WatchSettings()
    stop = stop or threading.Event()
    n = 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            report = tick(
                data,
                store_url,
                config,
                channels,
                settings=settings,
                sender=sender,
                progress=progress,
            )
        except (CXAgentError, OSError, ValueError) as exc:
            report = TickReport(started_at=utcnow(), error=f"{type(exc).__name__}: {exc}")
        if on_tick is not None:
            on_tick(report)
        n += 1
        if max_ticks is not None and n >= max_ticks:
            break
        stop.wait(max(0.0, settings.interval_s - (time.monotonic() - began)))
    return n
