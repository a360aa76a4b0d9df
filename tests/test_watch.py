"""The watch loop on data arriving day by day: a cause that starts mid-stream raises exactly
one incident, the local alert sinks hear of it once, later ticks update it as evidence grows,
the state survives a restart (it lives in the store), and the alert preview writes nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cxagent.alerts import EmailChannel, SlackChannel, WebhookChannel, verify_signature
from cxagent.cli import app
from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import parse_spec
from cxagent.errors import CXAgentError
from cxagent.incidents.config import DetectConfig
from cxagent.store.db import session_factory
from cxagent.store.repository import list_incidents
from cxagent.store.watch import WatchConflictError, load_watch_state, save_watch_state
from cxagent.watch import TickReport, WatchSettings, dataset_key, preview, tick, watch
from tests.alert_sinks import http_sink, smtp_sink

START = dt.date(2024, 3, 4)
CAUSE_DAY = dt.date(2024, 3, 30)  # day 27 of 30
SCOPE = {"region": "SF", "category": "grocery"}
SECRET = "watch-test-secret"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 days; from day 27 grocery in SF batches up to more orders per trip (logged)."""
    spec = {
        "name": "watch",
        "seed": 5,
        "start": START.isoformat(),
        "days": 30,
        "orders_per_day": 6000,
        "regions": ["SF", "NYC", "LA"],
        "background_changes": 0,
        "interventions": [
            {
                "cause": "batching_policy",
                "start": f"{CAUSE_DAY}T00:00",
                "scope": SCOPE,
                "magnitude": 1.5,
            }
        ],
    }
    root = tmp_path_factory.mktemp("watch") / "source"
    generate(parse_spec(spec), root, workers=2)
    return root


def feed(source: Path, live: Path, through: dt.date) -> None:
    """Make ``live`` hold the days of ``source`` up to ``through``: daily partitions copied
    as they "arrive", the change log cut to what had been deployed by then."""
    live.mkdir(exist_ok=True)
    shutil.copy(source / "dataset.json", live / "dataset.json")
    end = dt.datetime.combine(through + dt.timedelta(days=1), dt.time())
    for table in (p for p in source.iterdir() if p.is_dir()):
        (live / table.name).mkdir(exist_ok=True)
        for part in table.iterdir():
            target = live / table.name / part.name
            if part.name.startswith("date="):
                if dt.date.fromisoformat(part.name[5:]) <= through and not target.exists():
                    shutil.copytree(part, target)
            elif table.name == "change_events":
                log = pq.read_table(part)
                started = log.column("started_at")
                pq.write_table(log.filter(pc.less(started, pa.scalar(end, started.type))), target)
            else:
                shutil.copy(part, target)


@pytest.fixture(scope="module")
def streamed(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Ticks on the live folder as days arrive (day 23 to 30), alerts to local sinks."""
    folder = tmp_path_factory.mktemp("live")
    live, url = folder / "live", f"sqlite:///{folder / 'store.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("CX_WATCH_SECRET", SECRET)
    settings = WatchSettings(interval_s=1, n_bootstrap=20)
    with http_sink() as http, smtp_sink() as smtp:
        channels = [
            SlackChannel(name="ops-slack", url=f"{http.url}/slack"),
            WebhookChannel(name="ops-hook", url=f"{http.url}/hook", secret_env="CX_WATCH_SECRET"),
            EmailChannel(
                name="ops-mail",
                host="127.0.0.1",
                port=smtp.port,
                sender="cx-agent@example.com",
                to=("oncall@example.com",),
            ),
        ]
        ticks: list[TickReport] = []
        versions: list[dict[str, int]] = []
        for day in range(23, 31):
            feed(source, live, START + dt.timedelta(days=day - 1))
            ticks.append(tick(live, url, DetectConfig(), channels, settings=settings))
            versions.append({i.id: i.version for i in list_incidents(session_factory(url))})
        # a restart: a new call reads the state from the store; no new data, nothing to do
        again = tick(live, url, DetectConfig(), channels, settings=settings)
        yield {
            "live": live,
            "url": url,
            "ticks": ticks,
            "versions": versions,
            "again": again,
            "slack": http.at("/slack"),
            "hook": http.at("/hook"),
            "mail": list(smtp.messages),
        }
    mp.undo()


def test_given_a_cause_mid_stream_when_watched_then_exactly_one_incident_in_its_scope(
    streamed: dict[str, Any],
) -> None:
    incidents = list_incidents(session_factory(streamed["url"]))
    assert len(incidents) == 1, [(i.slice, i.severity) for i in incidents]
    (incident,) = incidents
    assert incident.slice == SCOPE
    assert incident.detected_at.date() >= CAUSE_DAY  # not before the cause
    created = [t for t in streamed["ticks"] if t.created]
    assert len(created) == 1 and created[0].created == [incident.id]
    assert all(t.error is None for t in streamed["ticks"])


def test_given_the_incident_when_evidence_grows_then_later_ticks_update_it(
    streamed: dict[str, Any],
) -> None:
    ticks, versions = streamed["ticks"], streamed["versions"]
    first = next(k for k, t in enumerate(ticks) if t.created)
    (inc_id,) = ticks[first].created
    later = [v[inc_id] for v in versions[first:]]
    assert later[-1] > later[0]  # wider window, more affected orders
    assert any(inc_id in t.updated for t in ticks[first + 1 :])
    assert inc_id in ticks[first].investigated  # causes were found for the alert


def test_given_the_incident_when_alerted_then_each_sink_heard_of_it_once(
    streamed: dict[str, Any],
) -> None:
    (inc_id,) = next(t for t in streamed["ticks"] if t.created).created
    hooks = [r.json() for r in streamed["hook"]]
    opened = [h for h in hooks if h["event"] == "opened"]
    assert len(opened) == 1 and opened[0]["incident"]["id"] == inc_id
    # every later message is an update grouped to it (sequence after the first), never a new one
    assert [h["sequence"] for h in hooks] == list(range(1, len(hooks) + 1))
    assert {h["incident"]["id"] for h in hooks} == {inc_id}
    for r in streamed["hook"]:
        sig = r.headers["X-CXAgent-Signature"]
        assert verify_signature(SECRET, r.headers["X-CXAgent-Timestamp"], r.body, sig)
    assert len(streamed["slack"]) == len(hooks)
    mails = streamed["mail"]
    assert len(mails) == len(hooks) and not mails[0]["Subject"].startswith("Re:")
    assert all(m["In-Reply-To"] == mails[0]["Message-ID"] for m in mails[1:])
    assert "batching" in opened[0]["incident"]["causes"][0]["cause"]


def test_given_a_restart_when_no_new_data_then_nothing_is_redone(streamed: dict[str, Any]) -> None:
    again: TickReport = streamed["again"]
    assert again.windows == 0 and again.created == again.updated == again.alerts == []
    assert again.tick == len(streamed["ticks"]) + 1  # the count survived: it is in the store
    state, ticks, why = load_watch_state(
        session_factory(streamed["url"]), dataset_key(streamed["live"]), DetectConfig()
    )
    assert state is not None and ticks == again.tick and why is None


def test_given_other_settings_when_the_state_is_read_then_it_is_refitted_with_a_reason(
    streamed: dict[str, Any],
) -> None:
    state, _, why = load_watch_state(
        session_factory(streamed["url"]),
        dataset_key(streamed["live"]),
        DetectConfig(fdr_alpha=0.05),
    )
    assert state is None and why is not None and "settings changed" in why


def test_given_two_watches_when_one_saves_a_stale_state_then_it_is_refused(
    streamed: dict[str, Any],
) -> None:
    factory = session_factory(streamed["url"])
    key = dataset_key(streamed["live"])
    state, _, _ = load_watch_state(factory, key, DetectConfig())
    assert state is not None
    with pytest.raises(WatchConflictError, match="one watch per dataset"):
        save_watch_state(factory, key, state, {}, expected=state.next_id - 4)


def test_given_a_configuration_when_previewed_then_it_counts_what_would_fire_and_writes_nothing(
    source: Path, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    feed(source, live, dt.date(2024, 4, 2))
    channels = [
        SlackChannel(name="everything", url="http://127.0.0.1:9/x", min_severity="low"),
        SlackChannel(name="high-only", url="http://127.0.0.1:9/y", min_severity="high"),
    ]
    found = preview(live, DetectConfig(), channels, days=5)
    severities = [i["severity"] for i in found["incidents"]]
    assert sum(found["by_severity"].values()) == len(severities) >= 1
    assert found["per_channel"]["everything"] == len(severities)
    assert found["per_channel"]["high-only"] == severities.count("high")
    assert any(i["slice"] == SCOPE for i in found["incidents"])
    assert not (live / "cxagent.db").exists()  # no store was opened, nothing was written
    stricter = preview(live, DetectConfig(fdr_alpha=0.0001, min_excess=50), channels, days=5)
    assert len(stricter["incidents"]) <= len(severities)
    with pytest.raises(CXAgentError, match="days"):
        preview(live, DetectConfig(), channels, days=0)


def test_watch_loop_stops_after_its_ticks_and_reports_a_failing_tick(tmp_path: Path) -> None:
    seen: list[TickReport] = []
    n = watch(
        tmp_path / "nothing-here",
        f"sqlite:///{tmp_path / 's.db'}",
        DetectConfig(),
        settings=WatchSettings(interval_s=1),
        max_ticks=2,
        on_tick=seen.append,
    )
    assert n == 2 and all(r.error and "does not exist" in r.error for r in seen)


def test_cli_watch_runs_ticks_from_a_configuration_file(source: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    feed(source, live, dt.date(2024, 3, 27))
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"data:\n  path: {live}\nstore:\n  url: sqlite:///{tmp_path / 'cli.db'}\n"
        "watch:\n  interval: 10s\n  investigate: false\n"
    )
    result = CliRunner().invoke(app, ["watch", "--config", str(config), "--ticks", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tick"] == 1 and report["windows"] > 0 and report["error"] is None
    bad = CliRunner().invoke(app, ["watch", "--config", str(config), "--interval", "soon"])
    assert bad.exit_code == 2 and "soon" in bad.output
    preview_run = CliRunner().invoke(
        app, ["alerts", "preview", "--config", str(config), "--days", "3", "--json"]
    )
    assert preview_run.exit_code == 0, preview_run.output
    assert json.loads(preview_run.stdout)["days"] == 3
