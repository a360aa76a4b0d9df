"""Alert pieces without servers: channel settings, backoff, Retry-After, what counts as a
material change, signatures, and the delivery record's guard against going backwards."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cxagent.alerts import (
    AlertConfigError,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    material_changes,
    parse_channels,
    sign,
    verify_signature,
)
from cxagent.alerts.events import Alert
from cxagent.alerts.retry import (
    DeliveryError,
    backoff_delay,
    parse_retry_after,
    with_retries,
)
from cxagent.alerts.settings import check_names, check_secrets
from cxagent.config import ConfigError
from cxagent.store.alerts import get_delivery, record_failure, record_sent
from cxagent.store.db import session_factory
from cxagent.store.repository import upsert_incident
from tests.test_alerts import draft


def test_channels_parse_from_config_mappings_with_defaults() -> None:
    slack, hook, mail = parse_channels(
        [
            {"name": "ops", "kind": "slack", "url": "https://hooks.example/T/B/token"},
            {
                "name": "hook",
                "kind": "webhook",
                "url": "https://receiver.example/cx",
                "secret_env": "CX_HOOK_SECRET",
                "min_severity": "high",
            },
            {
                "name": "mail",
                "kind": "email",
                "host": "smtp.example",
                "sender": "CX Agent <cx@example.com>",
                "to": ["oncall@example.com"],
            },
        ]
    )
    assert isinstance(slack, SlackChannel) and isinstance(hook, WebhookChannel)
    assert isinstance(mail, EmailChannel)
    assert (slack.min_severity, slack.max_attempts, slack.backoff_s) == ("medium", 5, 1.0)
    assert (slack.max_backoff_s, slack.timeout_s) == (60.0, 10.0)
    assert (mail.port, mail.starttls, mail.username, mail.password_env) == (25, False, None, None)
    assert mail.to == ("oncall@example.com",)
    assert "token" not in repr(slack)  # a Slack URL carries its token
    assert hook.accepts("high") and not hook.accepts("medium")
    assert slack.accepts("medium") and not slack.accepts("low")
    with pytest.raises(ValueError, match="frozen"):
        slack.name = "other"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "kind": "sms"}, "channels[0].kind: 'sms' is not one of slack, webhook"),
        ({"name": "x", "kind": "slack"}, "channels[0].url: field required"),
        ({"name": "x", "kind": "slack", "url": "ftp://h"}, "channels[0].url: must be an"),
        (
            {"name": "x", "kind": "webhook", "url": "https://h"},
            "channels[0].secret_env: field required",  # every webhook is signed
        ),
        (
            {"name": "x", "kind": "webhook", "url": "https://h", "secret_env": "not a name"},
            "channels[0].secret_env: must be the NAME of an environment variable",
        ),
        (
            {"name": "x", "kind": "email", "host": "h", "sender": "cx@e.com", "to": []},
            "channels[0].to: must not be empty",
        ),
        (
            {"name": "x", "kind": "email", "host": "h", "sender": "nobody", "to": ["a@b.c"]},
            "channels[0].sender: 'nobody' is not an email address",
        ),
        (
            {
                "name": "x",
                "kind": "email",
                "host": "h",
                "sender": "cx@e.com",
                "to": ["a@b.c"],
                "username": "u",
            },
            "channels[0].password_env: field required when username is set (username and "
            "password_env go together",
        ),
        (
            {"name": "x", "kind": "slack", "url": "https://h", "min_severity": "urgent"},
            "channels[0].min_severity: 'urgent' is not one of 'low', 'medium' or 'high'",
        ),
        (
            {"name": "x", "kind": "slack", "url": "https://h", "colour": 1},
            "channels[0].colour: unknown key for a slack channel",
        ),
        ({"name": "x", "kind": "slack", "url": "https://h", "max_attempts": 0}, "max_attempts"),
        (
            {"name": "x", "kind": "slack", "url": "https://h", "backoff_s": 5, "max_backoff_s": 2},
            "channels[0].max_backoff_s: must be >= backoff_s (5), got 2",
        ),
    ],
)
def test_a_bad_channel_is_refused_naming_the_channel_and_field(
    raw: dict[str, object], message: str
) -> None:
    # the configuration file's checks and messages: one set of channel models
    with pytest.raises(ConfigError, match="^alerts.yaml: ") as err:
        parse_channels([raw], source="alerts.yaml")
    assert message in str(err.value)


def test_channel_names_must_be_unique() -> None:
    raw = {"name": "ops", "kind": "slack", "url": "https://h"}
    with pytest.raises(ConfigError, match=r"channels\[1\].name: duplicate name 'ops'"):
        parse_channels([raw, raw])
    with pytest.raises(ConfigError, match="must be a list"):
        parse_channels({"ops": raw})
    same = [SlackChannel(name="ops", url="https://h")] * 2  # built in Python: dispatch checks
    with pytest.raises(AlertConfigError, match=r"channels\[1\].name: duplicate name 'ops'"):
        check_names(same)


def test_secrets_come_from_the_environment_only() -> None:
    hook = WebhookChannel(name="h", url="https://h", secret_env="CX_SECRET")
    assert hook.secret({"CX_SECRET": "abc"}) == "abc"
    with pytest.raises(AlertConfigError, match="channel 'h': environment variable CX_SECRET"):
        hook.secret({})
    with pytest.raises(AlertConfigError, match="channel 'h': environment variable CX_SECRET"):
        check_secrets([hook], {"CX_SECRET": ""})
    with pytest.raises(ConfigError, match="secrets never live in the file"):
        parse_channels([{"name": "h", "kind": "webhook", "url": "https://h", "secret": "abc"}])


def test_backoff_doubles_with_small_jitter_and_is_capped() -> None:
    ch = SlackChannel(name="s", url="https://h", backoff_s=1.0, max_backoff_s=5.0)
    assert [backoff_delay(ch, n, lambda: 0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert backoff_delay(ch, 2, lambda: 1.0) == pytest.approx(2.2)  # at most 10% jitter
    assert backoff_delay(ch, 3, lambda: 1.0) == pytest.approx(4.4)
    assert backoff_delay(ch, 4, lambda: 1.0) == 5.0  # the cap holds with jitter


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = dt.datetime(2024, 1, 3, 21, 0, tzinfo=dt.UTC)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 03 Jan 2024 21:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 03 Jan 2024 20:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_a_retry_after_beyond_the_cap_is_left_for_the_next_dispatch() -> None:
    ch = SlackChannel(name="s", url="https://h", max_backoff_s=30.0)
    sleeps: list[float] = []

    def attempt() -> None:
        raise DeliveryError("slack channel 's': HTTP 429", transient=True, retry_after=3600)

    result = with_retries(attempt, ch, sleep=sleeps.append, random=lambda: 0.0)
    assert (result.delivered, result.attempts, sleeps) == (False, 1, [])
    assert (
        result.error is not None and "Retry-After 3600 s exceeds max_backoff_s 30" in result.error
    )


def state(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "severity": "high",
        "status": "new",
        "delta": -15.0,
        "causes": [{"cause": "batching_policy", "confidence": 0.9}],
    }
    base.update(kw)
    return base


def test_material_changes_are_severity_status_a_real_delta_move_or_new_causes() -> None:
    old = state()
    assert material_changes(old, state()) == {}
    assert material_changes(old, state(delta=-16.4)) == {}  # under 10% of 15 points
    assert material_changes(old, state(delta=-16.5))["delta"] == {"from": -15.0, "to": -16.5}
    small = state(delta=-2.0)
    assert material_changes(small, state(delta=-2.9)) == {}  # under the 1-point floor
    assert "delta" in material_changes(small, state(delta=-3.0))
    assert material_changes(old, state(severity="medium"))["severity"] == {
        "from": "high",
        "to": "medium",
    }
    assert "status" in material_changes(old, state(status="investigating"))
    assert material_changes(old, state(causes=None)) == {}  # unknown causes are no news
    moved = [{"cause": "batching_policy", "confidence": 0.75}]
    assert "causes" in material_changes(old, state(causes=moved))
    nudged = [{"cause": "batching_policy", "confidence": 0.85}]
    assert material_changes(old, state(causes=nudged)) == {}
    other = [{"cause": "prep_time_drift", "confidence": 0.9}]
    assert material_changes(old, state(causes=other))["causes"]["to"]["cause"] == "prep_time_drift"
    assert "causes" in material_changes(state(causes=None), state())


def test_signatures_need_the_timestamp_the_body_and_the_secret() -> None:
    body = b'{"event":"opened"}'
    sig = sign("k", 1000, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature("k", "1000", body, sig, now=1000)
    assert verify_signature("k", 1000, body.decode(), sig, now=1299)
    assert not verify_signature("k", "1000", body, sig.removeprefix("sha256="), now=1000)
    assert not verify_signature("k", "10OO", body, sig, now=1000)
    assert not verify_signature("k", "1000", body, sig, now=701 - 2)


def test_an_alert_is_one_of_three_events_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="opened, updated, resolved"):
        Alert("closed", 1, {"id": "inc-1"}, dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="sequence"):
        Alert("opened", 0, {"id": "inc-1"}, dt.datetime(2024, 1, 1))
    alert = Alert("opened", 2, {"id": "inc-1"}, dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert alert.idempotency_key == "inc-1:2"
    assert alert.as_event()["sent_at"] == "2024-01-01T00:00:00Z"


def test_a_delivery_record_never_goes_backwards(tmp_path: Path) -> None:
    f = session_factory(f"sqlite:///{tmp_path / 'cx.db'}")
    inc, _ = upsert_incident(f, draft())
    at = dt.datetime(2024, 1, 3, 22)
    record_failure(f, incident_id=inc.id, channel="c", attempts=2, error="HTTP 503", at=at)

    def sent(sequence: int, event: str, delta: float, thread_ref: str | None = None) -> None:
        record_sent(
            f,
            incident_id=inc.id,
            channel="c",
            sequence=sequence,
            event=event,
            incident_version=sequence,
            fingerprint={"delta": delta},
            attempts=1,
            thread_ref=thread_ref,
            at=at,
        )

    sent(1, "opened", -15.0, "<a@x>")
    sent(2, "updated", -20.0, "<b@x>")
    sent(2, "updated", -99.0)  # a slower dispatcher reporting message 2 again changes nothing
    sent(1, "opened", -1.0)
    row = get_delivery(f, inc.id, "c")
    assert row is not None
    assert (row.sequence, row.last_event, row.last_fingerprint) == (2, "updated", {"delta": -20.0})
    assert row.thread_ref == "<a@x>"  # the first message's id stays the thread
    assert (row.attempts, row.last_error) == (1, None)
