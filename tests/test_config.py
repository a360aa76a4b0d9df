"""The agent's configuration file: defaults, the example, errors naming the key, durations,
CX weights, finding the file, and a documentation test that fails on an undocumented key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from cxagent.alerts import AlertConfigError
from cxagent.config import (
    CHANNEL_KINDS,
    CONFIG_ENV,
    AgentConfig,
    ConfigError,
    DetectionSection,
    EmailChannel,
    WebhookChannel,
    dump_config,
    find_config,
    format_duration,
    load_agent_config,
    load_config,
    parse_config,
    parse_duration,
    settings,
    validate_config,
    weighted_components,
)
from cxagent.config.__main__ import main
from cxagent.errors import CXAgentError
from cxagent.incidents.config import DetectConfig
from cxagent.metrics.definitions import DEFAULT_COMPONENTS, CXStats

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "docs" / "agent.example.yaml"


def parse(text: str) -> AgentConfig:
    return parse_config(textwrap.dedent(text), source="agent.yaml")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


# --- defaults --------------------------------------------------------------------------------


def test_an_empty_mapping_is_every_default() -> None:
    config = parse("{}")
    assert config == AgentConfig()
    assert config.data.path is None and config.data.engine is None
    assert config.store.url is None and config.store.redis_url is None
    assert config.metrics.components() is DEFAULT_COMPONENTS
    assert config.watch.interval == dt.timedelta(minutes=15) and config.watch.investigate
    assert config.channels == []
    assert config.workbench.incident_url("abc") is None


def test_detection_defaults_are_detect_configs() -> None:
    section = DetectionSection()
    config_fields = {f.name for f in dataclasses.fields(DetectConfig)}
    assert set(DetectionSection.model_fields) == config_fields, "a DetectConfig field is missing"
    assert section.to_detect_config() == DetectConfig()


def test_a_section_written_empty_keeps_its_defaults() -> None:
    config = parse(
        """
        data:
        detection:
        channels:
        """
    )
    assert config == AgentConfig()


def test_store_defaults_are_the_command_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxagent.store.db import default_url

    monkeypatch.delenv("CXAGENT_DB_URL", raising=False)
    store = AgentConfig().store
    assert store.resolved_url(tmp_path) == default_url(tmp_path)
    assert store.resolved_url(tmp_path) == f"sqlite:///{(tmp_path / 'cxagent.db').resolve()}"
    monkeypatch.setenv("CXAGENT_DB_URL", "postgresql+psycopg://cx@db/cx")
    assert store.resolved_url(tmp_path) == "postgresql+psycopg://cx@db/cx"
    pinned = parse("store: {url: 'sqlite:////srv/cx.db'}").store
    assert pinned.resolved_url(tmp_path) == "sqlite:////srv/cx.db"  # the file wins over the env
    assert store.resolved_redis_url({}) is None
    assert store.resolved_redis_url({"CXAGENT_REDIS_URL": "redis://r:6379/0"}) == "redis://r:6379/0"


# --- the example -----------------------------------------------------------------------------


def test_the_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.data.engine == "duckdb" and config.data.path == "/srv/cx/data"
    assert config.store.url == "postgresql+psycopg://cxagent@db.internal:5432/cxagent"
    assert [c.kind for c in config.channels] == ["slack", "webhook", "email"]
    assert set(CHANNEL_KINDS) == {c.kind for c in config.channels}
    email = config.channel("fulfilment-leads")
    assert isinstance(email, EmailChannel)
    assert email.port == 587 and email.starttls and len(email.to) == 2
    assert config.watch.interval == dt.timedelta(minutes=15)
    assert config.metrics.components() is DEFAULT_COMPONENTS
    detect = config.detection.to_detect_config()
    assert detect.detector_kwargs()["lam"] == 0.4
    assert config.workbench.incident_url("i-1") == "https://cx.internal/incidents/i-1"


def test_the_example_sets_every_setting() -> None:
    text = EXAMPLE.read_text()
    for setting in settings():
        name = setting.key.rsplit(".", 1)[-1].removesuffix("[]")
        assert re.search(rf"^\s*(#\s*)?(- )?{name}:", text, re.M), f"{setting.key} not in example"


def test_the_documentation_shows_the_example_file() -> None:
    doc = DOC.read_text()
    block = doc.split("## Complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block == EXAMPLE.read_text(), "docs/configuration.md's example differs from the file"


def test_the_example_needs_its_secrets_in_the_environment() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ConfigError) as info:
        config.check_env({})
    assert info.value.keys == ["channels[1].secret_env", "channels[2].password_env"]
    assert "CXAGENT_WEBHOOK_SECRET is not set" in str(info.value)
    env = {"CXAGENT_WEBHOOK_SECRET": "s3cret", "CXAGENT_SMTP_PASSWORD": "pw"}
    config.check_env(env)
    webhook = config.channel("incident-bus")
    assert isinstance(webhook, WebhookChannel) and webhook.secret(env) == "s3cret"
    with pytest.raises(AlertConfigError, match="environment variable CXAGENT_WEBHOOK_SECRET"):
        webhook.secret({})  # at send time: the alert's error, naming the channel too


def test_the_effective_configuration_round_trips() -> None:
    config = load_config(EXAMPLE)
    assert parse_config(dump_config(config)) == config
    assert parse_config(dump_config(AgentConfig())) == AgentConfig()
    assert "interval: 15m" in dump_config(config)


def test_the_checker_prints_the_settings_or_the_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert main([str(EXAMPLE)]) == 0
    assert "fulfilment-leads" in capsys.readouterr().out
    bad = tmp_path / "agent.yaml"
    bad.write_text("watch:\n  interval: 5s\n")
    assert main([str(bad)]) == 2
    assert f"error: {bad}:2: watch.interval: must be at least 10s" in capsys.readouterr().err


# --- errors name the key -----------------------------------------------------------------------

CASES: list[tuple[str, str]] = [
    # (file, the exact line of the error, after "agent.yaml:")
    ("detection:\n  fdr_alpha: 1.5\n", "2: detection.fdr_alpha: must lie in (0, 1), got 1.5"),
    ("detection:\n  own_history_lam: 0\n", "2: detection.own_history_lam: must be > 0, got 0"),
    ("detection:\n  supply_driver_z: 0\n", "2: detection.supply_driver_z: must be > 0, got 0"),
    (
        "detection:\n  detecter: ewma\n",
        "2: detection.detecter: unknown key; did you mean 'detector'?",
    ),
    ("detections: {}\n", "1: detections: unknown key; did you mean 'detection'?"),
    (
        "detection:\n  monitor_days: '7'\n",
        "2: detection.monitor_days: must be a whole number, got '7'",
    ),
    ("detection:\n  monitor_days: 0\n", "2: detection.monitor_days: must be >= 1, got 0"),
    (
        "detection:\n  period: 24\n",
        "2: detection.period: must be 4 (daypart of day) or 28 (daypart of week), got 24",
    ),
    (
        "detection:\n  min_history_days: 3\n",
        "2: detection.min_history_days: must be >= 7 (a week is needed to calibrate), got 3",
    ),
    (
        "detection:\n  history_days: 10\n",
        "2: detection.history_days: must be >= min_history_days (14), got 10",
    ),
    (
        "detection:\n  high_points: 1\n",
        "2: detection.high_points: must be >= medium_points (2), got 1",
    ),
    (
        "detection:\n  shock_edges: [1.25, 1.0]\n",
        "2: detection.shock_edges[1]: must be above the edge before it (1.25)",
    ),
    ("detection:\n  fdr_alpha: .nan\n", "2: detection.fdr_alpha: must be a finite number, got nan"),
    (
        "detection:\n  monitor_from: 2024-01-03T00:00:00+01:00\n",
        "2: detection.monitor_from: must be a wall-clock time without a time zone, like the data",
    ),
    (
        "detection:\n  monitor_from: 20240103\n",
        "2: detection.monitor_from: must be a date and time like 2024-01-03 16:00, got 20240103",
    ),
    (
        "detection:\n  detector: cusum\n",
        "2: detection.detector: 'cusum' is not one of bocpd, ewma, scan, zscore",
    ),
    (
        "detection:\n  detector_params:\n    lamda: 0.2\n",
        "3: detection.detector_params.lamda: not a parameter of ewma; did you mean 'lam'? "
        "its parameters: alpha, half_life, lam, min_history",
    ),
    (
        "detection:\n  detector_params: {lam: 2}\n",
        "2: detection.detector_params.lam: must be in (0, 1], got 2",
    ),
    (
        "detection:\n  detector: scan\n  detector_params:\n    max_windw: 8\n",
        "4: detection.detector_params.max_windw: not a parameter of scan; did you mean "
        "'max_window'? its parameters: alpha, half_life, max_window, min_history",
    ),
    (
        "detection:\n  detector: scan\n  detector_params: {max_window: 0}\n",
        "3: detection.detector_params.max_window: must be >= 1, got 0",
    ),
    (
        "detection:\n  detector: scan\n  own_history_lam: 0.1\n",
        "3: detection.own_history_lam: applies to the ewma detector only, not 'scan'",
    ),
    (
        "detection:\n  detector_params: {direction: both}\n",
        "2: detection.detector_params.direction: is set by the pipeline (always 'increase': "
        "a rise in a bad-event rate)",
    ),
    ("data:\n  engine: polars\n", "2: data.engine: 'polars' is not one of 'duckdb' or 'spark'"),
    ("data:\n  path: ''\n", "2: data.path: must not be empty"),
    (
        "store:\n  url: not a url\n",
        "2: store.url: is not a SQLAlchemy URL (e.g. sqlite:////var/lib/cxagent/cxagent.db or "
        "postgresql+psycopg://cxagent@db.internal/cxagent)",
    ),
    (
        "store:\n  redis_url: http://r\n",
        "2: store.redis_url: must be a redis://, rediss:// or unix:// URL",
    ),
    ("watch:\n  interval: 5s\n", "2: watch.interval: must be at least 10s, got '5s'"),
    (
        "watch:\n  interval: 900\n",
        "2: watch.interval: a duration is a number with a unit (s, m, h, d), like '90s', '15m', "
        "'1h' or '1h30m'; got the bare number 900 (did you mean '900s'?)",
    ),
    ("watch:\n  investigate: 'true'\n", "2: watch.investigate: must be true or false, got 'true'"),
    (
        "workbench:\n  base_url: cx.internal\n",
        "2: workbench.base_url: must be an http:// or https:// URL",
    ),
    ("channels: {name: ops}\n", "1: channels: must be a list, got a mapping"),
    (
        "channels:\n  - name: ops\n",
        "2: channels[0].kind: field required: one of slack, webhook, email",
    ),
    (
        "channels:\n  - {name: ops, kind: sms}\n",
        "2: channels[0].kind: 'sms' is not one of slack, webhook, email",
    ),
    (
        "channels:\n  - {name: a, kind: slack, url: 'https://h/x'}\n"
        "  - {name: b, kind: webhook, secret_env: HOOK_SECRET}\n",
        "3: channels[1].url: field required",
    ),
    (
        "channels:\n  - {name: b, kind: webhook, url: 'https://h/x'}\n",
        "2: channels[0].secret_env: field required",
    ),
    ("channels:\n  - {kind: slack, url: 'https://h/x'}\n", "2: channels[0].name: field required"),
    (
        "channels:\n  - {name: a, kind: slack, url: 'ftp://h/x'}\n",
        "2: channels[0].url: must be an http:// or https:// URL (got scheme 'ftp')",
    ),
    (
        "channels:\n  - {name: a, kind: webhook, url: 'https://u:pw@h/x', secret_env: S}\n",
        "2: channels[0].url: must not hold credentials (user:password@); secrets never live in the file",
    ),
    (
        "channels:\n  - {name: a, kind: slack, url: 'https://h/x', max_attempts: 0}\n",
        "2: channels[0].max_attempts: must be >= 1, got 0",
    ),
    (
        "channels:\n  - {name: a, kind: slack, url: 'https://h/x', backoff_s: 0}\n",
        "2: channels[0].backoff_s: must be > 0, got 0",
    ),
    (
        "channels:\n  - {name: a, kind: slack, url: 'https://h/x', backoff_s: 5, max_backoff_s: 2}\n",
        "2: channels[0].max_backoff_s: must be >= backoff_s (5), got 2",
    ),
    (
        "channels:\n  - {name: a, kind: slack, url: 'https://h/x', min_severity: urgent}\n",
        "2: channels[0].min_severity: 'urgent' is not one of 'low', 'medium' or 'high'",
    ),
    (
        "channels:\n  - {name: a, kind: slack, url: 'https://h/x', to: [x@y.z]}\n",
        "2: channels[0].to: unknown key for a slack channel; known keys: name, min_severity, "
        "max_attempts, backoff_s, max_backoff_s, timeout_s, kind, url",
    ),
    (
        "channels:\n  - {name: a, kind: slack, url: 'https://h/x', max_attempts: 21}\n",
        "2: channels[0].max_attempts: must be <= 20, got 21",
    ),
    (
        "channels:\n  - name: m\n    kind: email\n    host: smtp.internal\n    sender: cx@example.com\n"
        "    to: [a@example.com, bob]\n",
        "6: channels[0].to[1]: 'bob' is not an email address (name@example.com)",
    ),
    (
        "channels:\n  - {name: m, kind: email, host: h, sender: cx@example.com, to: []}\n",
        "2: channels[0].to: must not be empty",
    ),
    (
        "channels:\n  - {name: m, kind: email, host: 'smtp://h', sender: cx@example.com, to: a@b.co}\n",
        "2: channels[0].host: must be a host name or address only (the port goes in port), "
        "e.g. smtp.internal",
    ),
    (
        "channels:\n  - {name: m, kind: email, host: h, port: 70000, sender: cx@example.com, to: a@b.co}\n",
        "2: channels[0].port: must be <= 65535, got 70000",
    ),
    (
        "channels:\n  - {name: m, kind: email, host: h, sender: cx@example.com, to: a@b.co,"
        " password_env: SMTP_PW}\n",
        "2: channels[0].username: field required when password_env is set (username and "
        "password_env go together: an SMTP login needs both)",
    ),
    (
        "channels:\n  - {name: m, kind: email, host: h, sender: cx@example.com, to: a@b.co,"
        " username: cx}\n",
        "2: channels[0].password_env: field required when username is set (username and "
        "password_env go together: an SMTP login needs both)",
    ),
    (
        "channels:\n  - {name: m, kind: email, host: h, to: a@b.co}\n",
        "2: channels[0].sender: field required",
    ),
    (
        "channels:\n  - {name: ops, kind: slack, url: 'https://h/x'}\n"
        "  - {name: hooks, kind: webhook, url: 'https://h/y', secret_env: S}\n"
        "  - {name: ops, kind: webhook, url: 'https://h/z', secret_env: S}\n",
        "4: channels[2].name: duplicate name 'ops': channels[0] and channels[2] both use it "
        "(names must be unique)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[e.split(":")[1] for _, e in CASES])
def test_errors_name_the_key_and_line(text: str, expected: str) -> None:
    exc = error_of(text)
    assert str(exc) == f"agent.yaml:{expected}"
    assert isinstance(exc, CXAgentError)


def test_secrets_are_never_echoed() -> None:
    exc = error_of(
        "channels:\n  - {name: a, kind: webhook, url: 'https://h/x', secret_env: 'hunter2!'}\n"
    )
    assert exc.keys == ["channels[0].secret_env"]
    assert "hunter2" not in str(exc) and "NAME of an environment variable" in str(exc)
    exc = error_of("store:\n  url: postgresql://cx:hunter2@db/cx\n")
    assert exc.keys == ["store.url"] and "hunter2" not in str(exc)
    assert "PGPASSWORD" in str(exc)
    exc = error_of("store:\n  redis_url: redis://:hunter2@r:6379\n")
    assert exc.keys == ["store.redis_url"] and "hunter2" not in str(exc)
    exc = error_of("channels:\n  - {name: a, kind: slack, url: 12345}\n")
    assert str(exc) == "agent.yaml:2: channels[0].url: must be a string"
    exc = error_of("channels:\n  - {name: a, kind: webhook, url: 'https://h/x', secret: hunter2}\n")
    assert exc.keys == ["channels[0].secret_env", "channels[0].secret"]
    assert "hunter2" not in str(exc)
    assert str(exc).endswith(
        "channels[0].secret: unknown key for a webhook channel: secrets never live in the "
        "file; put it in an environment variable and name that variable in secret_env"
    )


def test_every_problem_is_reported_at_once() -> None:
    exc = error_of(
        """
        detection:
          fdr_alpha: 1.5
          detecter: ewma
        watch:
          interval: soon
        channels:
          - {name: a, kind: webhook, secret_env: HOOK_SECRET}
        """
    )
    assert exc.keys == [
        "detection.fdr_alpha",
        "detection.detecter",
        "watch.interval",
        "channels[0].url",
    ]
    assert [p.line for p in exc.problems] == [3, 4, 6, 8]
    assert len(str(exc).splitlines()) == 4


def test_detect_configs_refusals_name_the_key() -> None:
    # a value only DetectConfig checks (here forced past the section's own checks)
    section = DetectionSection.model_construct(
        **{**DetectionSection().model_dump(), "fdr_alpha": 1.5}
    )
    with pytest.raises(ConfigError) as info:
        section.to_detect_config()
    assert str(info.value) == "detection.fdr_alpha: must lie in (0, 1), got 1.5"
    section = DetectionSection.model_construct(**{**DetectionSection().model_dump(), "period": 7})
    with pytest.raises(ConfigError) as info:
        section.to_detect_config()
    assert info.value.keys == ["detection.period"]
    exc = error_of("detection:\n  detector: cusum\n")  # the registry's check, in DetectConfig
    assert exc.keys == ["detection.detector"] and exc.problems[0].line == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "detection:\n  fdr_alpha: 0.01\n   x: 1\n",
            "agent.yaml:3:5: not valid YAML: mapping values are not allowed here",
        ),
        (
            "channels: [a, b\n",
            "agent.yaml:2:1: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)",
        ),
        (
            "detection:\n  fdr_alpha: 0.01\nwatch: {}\ndetection: {}\n",
            "agent.yaml:4:1: key 'detection' is written twice in the same mapping (first on "
            "line 1); YAML would silently keep only the last one",
        ),
        ("", "agent.yaml:1: the file holds no settings; write {} to run on every default"),
        (
            "# just a comment\n",
            "agent.yaml:1: the file holds no settings; write {} to run on every default",
        ),
        (
            "- data\n- store\n",
            "agent.yaml:1: the top level must be a mapping of sections (data, store, metrics, "
            "detection, watch, channels, workbench), got a list",
        ),
        (
            "detection\n",
            "agent.yaml:1: the top level must be a mapping of sections (data, store, metrics, "
            "detection, watch, channels, workbench), got the text 'detection'",
        ),
        (
            "!!python/object:os.system {}\n",
            "agent.yaml:1:1: not valid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object:os.system'",
        ),
    ],
)
def test_file_level_errors(text: str, expected: str) -> None:
    assert str(error_of(text)) == expected


def test_yaml_merge_keys_are_not_duplicates() -> None:
    config = parse(
        """
        channels:
          - &base {name: a, kind: slack, url: 'https://h/x', max_attempts: 3}
          - <<: *base
            name: b
        """
    )
    assert [(c.name, c.max_attempts) for c in config.channels] == [("a", 3), ("b", 3)]


def test_reading_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "missing.yaml")
    binary = tmp_path / "agent.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(binary)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path)


def test_validate_config_takes_a_mapping() -> None:
    config = validate_config({"watch": {"interval": "1h"}})
    assert config.watch.interval_s == 3600
    with pytest.raises(ConfigError) as info:
        validate_config({"watch": {"intervall": "1h"}}, source="env")
    assert str(info.value) == "env: watch.intervall: unknown key; did you mean 'interval'?"
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        validate_config(["watch"])


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "agent.yaml"
    path.write_text("data: {path: data}\n")
    config = load_config(path)
    assert config.data.path == str(folder.resolve() / "data")
    assert config.data.local_path == folder.resolve() / "data"
    path.write_text("data: {path: 's3://bucket/cx'}\n")
    config = load_config(path)
    assert config.data.path == "s3://bucket/cx" and config.data.is_url
    assert config.data.local_path is None


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("1d2h3m4s", 93784),
        (" 10 S ", 10),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "15", "m", "15 minutes", "1m1h", "1h1h", "-5m", "5ms"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="a duration is a number with a unit"):
        parse_duration(text)


def test_duration_formats() -> None:
    assert format_duration(dt.timedelta(minutes=15)) == "15m"
    assert format_duration(dt.timedelta(seconds=90)) == "1m30s"
    assert format_duration(dt.timedelta(hours=26)) == "1d2h"
    assert format_duration(dt.timedelta(seconds=10.5)) == "10.5s"
    assert parse("watch: {interval: 10s}").watch.interval_s == 10
    assert error_of("watch: {interval: 9.5s}").keys == ["watch.interval"]
    assert error_of("watch: {interval: true}").keys == ["watch.interval"]


# --- CX weights --------------------------------------------------------------------------------


def test_weights_apply_to_the_score() -> None:
    config = parse(
        """
        metrics:
          cx_weights: {on_time: 0.5, item_accuracy: 0.25, cancellation: 0.1, refund: 0.1,
                       support_contact: 0.05, rating: 0}
        """
    )
    components = config.metrics.components()
    assert [c.name for c in components] == [c.name for c in DEFAULT_COMPONENTS]
    assert [(c.worst, c.best) for c in components] == [
        (c.worst, c.best) for c in DEFAULT_COMPONENTS
    ]
    assert {c.name: c.weight for c in components}["on_time"] == 0.5
    stats = CXStats(
        orders=100, delivered=90, on_time=60, canceled=10, refunded=5, items=300,
        bad_items=12, support=8, ratings=20, stars=90,
    )  # fmt: skip
    scores = {c.name: c.score(v) for c, v in zip(DEFAULT_COMPONENTS, _values(stats), strict=True)}
    weights = config.metrics.cx_weights.weights()
    expected = sum(weights[n] * s for n, s in scores.items())
    assert stats.metrics(components)["cx_score"] == pytest.approx(expected)
    assert stats.metrics(components)["cx_score"] != pytest.approx(stats.metrics()["cx_score"])


def _values(s: CXStats) -> list[float]:
    return [
        s.on_time / s.delivered,
        1 - s.bad_items / s.items,
        s.canceled / s.orders,
        s.refunded / s.orders,
        s.support / s.orders,
        s.stars / s.ratings,
    ]


def test_weights_are_rescaled_to_one_within_the_tolerance() -> None:
    thirds = {"on_time": 0.333, "item_accuracy": 0.333, "cancellation": 0.334}
    zeros = {"refund": 0, "support_contact": 0, "rating": 0}
    components = weighted_components({**thirds, **zeros})
    assert sum(c.weight for c in components) == pytest.approx(1.0, abs=1e-12)
    assert weighted_components(None) is DEFAULT_COMPONENTS
    assert weighted_components({"on_time": 0.3}) is DEFAULT_COMPONENTS  # the default weight


@pytest.mark.parametrize(
    ("weights", "key", "message"),
    [
        ({"ontime": 0.3}, "metrics.cx_weights.ontime", "unknown key; did you mean 'on_time'?"),
        (
            {"on_time": -0.1, "item_accuracy": 0.65},
            "metrics.cx_weights.on_time",
            "must be >= 0, got -0.1",
        ),
        (
            {"on_time": 0.5},
            "metrics.cx_weights",
            "must sum to 1 (each weight is a share of the CX Score), got 1.2 = on_time 0.5 + "
            "item_accuracy 0.25 + cancellation 0.15 + refund 0.15 + support_contact 0.1 + rating 0.05",
        ),
        ({"on_time": "0.3"}, "metrics.cx_weights.on_time", "must be a number, got '0.3'"),
    ],
)
def test_bad_weights(weights: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        weighted_components(weights)
    assert str(info.value) == f"{key}: {message}"
    text = yaml.safe_dump({"metrics": {"cx_weights": weights}})
    assert error_of(text).keys == [key]


# --- finding the file ----------------------------------------------------------------------------


def test_find_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("watch: {interval: 1h}\n")
    assert find_config(path, environ={}) == path
    assert find_config(None, environ={CONFIG_ENV: str(path)}) == path
    assert find_config(None, environ={}) is None
    assert find_config(None, environ={CONFIG_ENV: "  "}) is None
    other = tmp_path / "other.yaml"
    other.write_text("{}\n")
    assert find_config(other, environ={CONFIG_ENV: str(path)}) == other  # explicit wins
    with pytest.raises(ConfigError, match=r"not found \(named by \$CXAGENT_CONFIG\)"):
        find_config(None, environ={CONFIG_ENV: str(tmp_path / "gone.yaml")})
    with pytest.raises(ConfigError, match="configuration file not found"):
        find_config(tmp_path / "gone.yaml", environ={})
    assert load_agent_config(None, environ={CONFIG_ENV: str(path)}).watch.interval_s == 3600
    assert load_agent_config(None, environ={}) == AgentConfig()


# --- small behaviours ------------------------------------------------------------------------------


def test_channels() -> None:
    config = parse(
        """
        channels:
          - {name: all, kind: slack, url: 'https://h/x', min_severity: low}
          - {name: big, kind: email, host: smtp.internal, sender: 'CX Agent <cx@example.com>',
             to: lead@example.com, min_severity: high, username: cx, password_env: SMTP_PW}
        workbench: {base_url: 'https://cx.internal/'}
        """
    )
    everything, big = config.channels
    assert everything.accepts("low") and everything.accepts("high")
    assert not big.accepts("medium") and big.accepts("high")
    assert isinstance(big, EmailChannel) and big.to == ("lead@example.com",)
    assert big.sender == "CX Agent <cx@example.com>"  # a display name is allowed
    assert big.password({"SMTP_PW": "pw"}) == "pw"
    assert config.workbench.incident_url("x") == "https://cx.internal/incidents/x"
    with pytest.raises(KeyError):
        config.channel("nobody")


# --- the documentation ---------------------------------------------------------------------------


def _documented() -> dict[str, list[tuple[str, str, str]]]:
    """Key -> (heading, type cell, default cell) of each table row documenting it."""
    rows: dict[str, list[tuple[str, str, str]]] = {}
    heading = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            heading = line
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            key = re.fullmatch(r"`([^`]+)`", cells[0])
            if key and len(cells) == 4:
                rows.setdefault(key.group(1), []).append((heading, cells[1], cells[2]))
    return rows


def _sections_of(key: str) -> bool:
    return key.split(".")[0].split("[")[0] in AgentConfig.model_fields


def test_every_setting_is_documented() -> None:
    rows = _documented()
    missing = []
    for setting in settings():
        headings = [h for h, _, _ in rows.get(setting.key, [])]
        if setting.kind is not None:
            headings = [h for h in headings if f"`kind: {setting.kind}`" in h]
        if not headings:
            where = f" (in the `kind: {setting.kind}` table)" if setting.kind else ""
            missing.append(f"{setting.key}{where}")
    assert not missing, f"undocumented in docs/configuration.md: {', '.join(missing)}"


def test_every_documented_setting_exists() -> None:
    known = {s.key for s in settings()}
    stale = [k for k in _documented() if _sections_of(k) and k not in known]
    assert not stale, f"docs/configuration.md documents keys that do not exist: {stale}"


def test_documented_defaults_are_the_defaults() -> None:
    rows = _documented()
    wrong = []
    for setting in settings():
        field = setting.field
        for heading, _, default_cell in rows.get(setting.key, []):
            if setting.kind is not None and f"`kind: {setting.kind}`" not in heading:
                continue
            if field.is_required() or setting.name == "kind":  # the discriminator: required
                ok = "required" in default_cell
            else:
                default = field.get_default(call_default_factory=True)
                if default is None:
                    ok = default_cell.startswith("none")
                elif isinstance(default, bool | int | float | str | list | dt.timedelta):
                    shown = re.match(r"`([^`]*)`", default_cell)
                    ok = shown is not None and _same(shown.group(1), default)
                else:  # a section: its own keys carry the defaults
                    ok = True
            if not ok:
                wrong.append(f"{setting.key} (documented: {default_cell})")
    assert not wrong, f"documented defaults differ from the code: {wrong}"


def _same(shown: str, default: Any) -> bool:
    if isinstance(default, dt.timedelta):
        return parse_duration(shown) == default
    value = yaml.safe_load(shown)
    return bool(
        value == default
        and type(value) is type(default)
        or (isinstance(default, float) and isinstance(value, int | float) and value == default)
    )
