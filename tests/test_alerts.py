"""Alert dispatch end to end, against local HTTP and SMTP servers (never the internet): one
message per incident per channel, grouped updates, no repeats, retries, recorded failures,
thresholds, signatures. The store runs on SQLite and on the real PostgreSQL of this machine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cxagent.alerts import (
    AlertConfigError,
    Channel,
    DispatchResult,
    EmailChannel,
    Sender,
    SlackChannel,
    WebhookChannel,
    dispatch,
    pending_incidents,
    stored_causes,
    verify_signature,
)
from cxagent.store.alerts import get_delivery, list_deliveries
from cxagent.store.db import session_factory
from cxagent.store.models import Incident
from cxagent.store.repository import (
    IncidentDraft,
    get_incident,
    save_analysis,
    set_status,
    upsert_incident,
)
from tests.alert_sinks import (
    HttpSink,
    SmtpSink,
    closed_port,
    http_sink,
    self_signed,
    silent_port,
    smtp_sink,
)

SECRET_ENV = "CX_TEST_HOOK_SECRET"
SECRET = "s3cret-for-the-local-sink"
NOW = dt.datetime(2024, 1, 3, 21, 5)
CAUSES = [
    {"cause": "batching_policy", "confidence": 0.98, "impact": -11.2, "change_id": "chg-7"},
    {"cause": "prep_time_drift", "confidence": 0.81, "impact": -3.1},
]


@pytest.fixture
def lite(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(f"sqlite:///{tmp_path / 'cx.db'}")


@pytest.fixture
def http() -> Iterator[HttpSink]:
    with http_sink() as sink:
        yield sink


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def sender(sleeps: list[float]) -> Sender:
    return Sender(sleep=sleeps.append, random=lambda: 0.0, environ={SECRET_ENV: SECRET})


def draft(**kw: object) -> IncidentDraft:
    base = dict(
        metric="cx_score",
        slice={"region": "SF", "category": "grocery", "daypart": "dinner"},
        window_start=dt.datetime(2024, 1, 3, 16),
        window_end=dt.datetime(2024, 1, 3, 21),
        detected_at=dt.datetime(2024, 1, 3, 21),
        severity="high",
        baseline=70.0,
        current=55.0,
        delta=-15.0,
        affected_orders=900,
        p_value=1e-8,
        q_value=1e-6,
        detector="ewma",
    )
    base.update(kw)
    return IncidentDraft(**base)  # type: ignore[arg-type]


def slack(http: HttpSink, **kw: object) -> SlackChannel:
    return SlackChannel(name="ops-slack", url=f"{http.url}/slack", **kw)  # type: ignore[arg-type]


def hook(http: HttpSink, **kw: object) -> WebhookChannel:
    return WebhookChannel(
        name="ops-hook",
        url=f"{http.url}/hook",
        secret_env=SECRET_ENV,
        **kw,  # type: ignore[arg-type]
    )


def mail(smtp: SmtpSink, **kw: object) -> EmailChannel:
    return EmailChannel(
        name="ops-mail",
        host="127.0.0.1",
        port=smtp.port,
        sender="CX Agent <cxagent@example.com>",
        to=("oncall@example.com", "pm@example.com"),
        **kw,  # type: ignore[arg-type]
    )


def current(factory: sessionmaker[Session], *ids: str) -> list[Incident]:
    return [get_incident(factory, i) for i in ids]


def outcomes(results: list[DispatchResult]) -> list[tuple[str, str, str, str | None, int | None]]:
    return [(r.incident_id, r.channel, r.outcome, r.event, r.sequence) for r in results]


def test_first_dispatch_sends_one_message_per_incident_per_channel_and_nothing_twice(
    factory: sessionmaker[Session], http: HttpSink, smtp: SmtpSink, sender: Sender
) -> None:
    sf, _ = upsert_incident(factory, draft())
    nyc, _ = upsert_incident(
        factory, draft(slice={"region": "NYC"}, severity="medium", current=66.0, delta=-4.0)
    )
    channels: list[Channel] = [slack(http), hook(http), mail(smtp)]

    results = dispatch(factory, current(factory, sf.id, nyc.id), channels, sender=sender, now=NOW)

    assert outcomes(results) == [
        (inc, ch, "sent", "opened", 1)
        for inc in (sf.id, nyc.id)
        for ch in ("ops-slack", "ops-hook", "ops-mail")
    ]
    assert len(http.at("/slack")) == 2 and len(http.at("/hook")) == 2 and len(smtp.messages) == 2
    events = [r.json() for r in http.at("/hook")]
    assert [(e["event"], e["sequence"], e["incident"]["id"]) for e in events] == [
        ("opened", 1, sf.id),
        ("opened", 1, nyc.id),
    ]
    assert events[0]["sent_at"] == "2024-01-03T21:05:00Z"
    assert events[0]["incident"]["delta"] == -15.0 and events[0]["incident"]["severity"] == "high"
    assert [r.headers["Idempotency-Key"] for r in http.at("/hook")] == [f"{sf.id}:1", f"{nyc.id}:1"]
    assert smtp.envelopes[0] == ("cxagent@example.com", ["oncall@example.com", "pm@example.com"])
    rows = list_deliveries(factory)
    assert len(rows) == 6
    assert {(r.sequence, r.last_event, r.attempts, r.last_error) for r in rows} == {
        (1, "opened", 1, None)
    }
    assert all(r.first_sent_at == r.last_sent_at == NOW for r in rows)
    mail_row = get_delivery(factory, sf.id, "ops-mail")
    assert mail_row is not None and mail_row.thread_ref == smtp.messages[0]["Message-ID"]

    again = dispatch(factory, current(factory, sf.id, nyc.id), channels, sender=sender)

    assert {r.outcome for r in again} == {"skipped"}
    assert all("no material change since update 1" in r.detail for r in again)
    assert len(http.requests) == 4 and len(smtp.messages) == 2


def test_updates_are_grouped_to_the_first_message(
    factory: sessionmaker[Session], http: HttpSink, smtp: SmtpSink, sender: Sender
) -> None:
    inc, _ = upsert_incident(factory, draft())
    channels: list[Channel] = [slack(http), hook(http), mail(smtp)]
    dispatch(factory, current(factory, inc.id), channels, sender=sender, now=NOW)

    # the next detection run: the regression deepened, and the investigation found its causes
    upsert_incident(
        factory, draft(window_end=dt.datetime(2024, 1, 4, 21), current=50.0, delta=-20.0)
    )
    later = NOW + dt.timedelta(days=1)
    results = dispatch(
        factory, current(factory, inc.id), channels, sender=sender, now=later,
        causes={inc.id: CAUSES},
    )  # fmt: skip

    assert outcomes(results) == [
        (inc.id, ch, "sent", "updated", 2) for ch in ("ops-slack", "ops-hook", "ops-mail")
    ]
    first, second = http.at("/hook")
    assert first.headers["Idempotency-Key"] == f"{inc.id}:1"
    assert second.headers["Idempotency-Key"] == f"{inc.id}:2"  # same stem, next sequence
    event = second.json()
    assert (event["event"], event["sequence"]) == ("updated", 2)
    assert event["changes"]["delta"] == {"from": -15.0, "to": -20.0}
    assert event["changes"]["causes"]["to"]["cause"] == "batching_policy"
    assert event["incident"]["causes"][0] == CAUSES[0]
    s1, s2 = (r.json()["text"].splitlines()[0] for r in http.at("/slack"))
    assert (s1, s2) == (f"CX incident {inc.id} · update 1", f"CX incident {inc.id} · update 2")
    m1, m2 = smtp.messages
    assert m2["In-Reply-To"] == m1["Message-ID"] and m2["References"] == m1["Message-ID"]
    assert m2["Message-ID"] != m1["Message-ID"]
    assert m2["Subject"] == f"Re: {m1['Subject']}"
    assert "In-Reply-To" not in m1

    # a re-estimate a tenth of a point away is not news
    upsert_incident(
        factory, draft(window_end=dt.datetime(2024, 1, 4, 21), current=49.6, delta=-20.4)
    )
    quiet = dispatch(factory, current(factory, inc.id), channels, sender=sender)
    assert {r.outcome for r in quiet} == {"skipped"} and len(smtp.messages) == 2

    set_status(factory, inc.id, status="resolved", actor="ana")
    done = dispatch(factory, current(factory, inc.id), channels, sender=sender)
    assert outcomes(done) == [
        (inc.id, ch, "sent", "resolved", 3) for ch in ("ops-slack", "ops-hook", "ops-mail")
    ]
    assert smtp.messages[2]["In-Reply-To"] == m1["Message-ID"]
    assert http.at("/hook")[2].json()["incident"]["status"] == "resolved"
    assert http.at("/hook")[2].json()["incident"]["causes"][0]["cause"] == "batching_policy"
    row = get_delivery(factory, inc.id, "ops-mail")
    assert row is not None
    assert (row.sequence, row.last_event, row.thread_ref) == (3, "resolved", m1["Message-ID"])
    assert row.first_sent_at == NOW and row.last_sent_at is not None and row.last_sent_at > later
    assert row.last_incident_version == get_incident(factory, inc.id).version
    assert {
        r.outcome for r in dispatch(factory, current(factory, inc.id), channels, sender=sender)
    } == {"skipped"}


def test_transient_failures_are_retried_with_backoff_then_delivered(
    lite: sessionmaker[Session], http: HttpSink, sender: Sender, sleeps: list[float]
) -> None:
    inc, _ = upsert_incident(lite, draft())
    http.fail(1, 500)
    http.fail(1, 429, {"Retry-After": "7"})

    (result,) = dispatch(lite, [inc], [hook(http, backoff_s=0.5)], sender=sender)

    assert (result.outcome, result.attempts) == ("sent", 3)
    assert sleeps == [0.5, 7.0]  # backoff first, then what the receiver asked for
    tries = http.at("/hook")
    assert len(tries) == 3
    assert len({r.body for r in tries}) == 1
    assert {r.headers["Idempotency-Key"] for r in tries} == {f"{inc.id}:1"}
    row = get_delivery(lite, inc.id, "ops-hook")
    assert row is not None and (row.sequence, row.attempts, row.last_error) == (1, 3, None)


def test_a_client_error_is_not_retried_and_the_message_goes_on_the_next_dispatch(
    lite: sessionmaker[Session], http: HttpSink, sender: Sender, sleeps: list[float]
) -> None:
    inc, _ = upsert_incident(lite, draft())
    http.fail(1, 400)

    (failed,) = dispatch(lite, [inc], [slack(http)], sender=sender)

    assert (failed.outcome, failed.event, failed.attempts) == ("failed", "opened", 1)
    assert "HTTP 400" in failed.detail and "ops-slack" in failed.detail
    assert http.url not in failed.detail  # a Slack URL carries its token
    assert sleeps == [] and len(http.requests) == 1
    row = get_delivery(lite, inc.id, "ops-slack")
    assert row is not None
    assert (row.sequence, row.first_sent_at, row.attempts) == (0, None, 1)
    assert row.last_error is not None and "HTTP 400" in row.last_error

    (sent,) = dispatch(lite, [inc], [slack(http)], sender=sender)

    assert (sent.outcome, sent.event, sent.sequence) == ("sent", "opened", 1)
    assert sent.detail == "sending again after a failure"
    row = get_delivery(lite, inc.id, "ops-slack")
    assert row is not None and (row.sequence, row.attempts, row.last_error) == (1, 2, None)


def test_a_failure_after_all_retries_is_recorded_and_sent_next_time(
    factory: sessionmaker[Session], http: HttpSink, sender: Sender, sleeps: list[float]
) -> None:
    inc, _ = upsert_incident(factory, draft())
    channel = hook(http, max_attempts=3)
    dispatch(factory, current(factory, inc.id), [channel], sender=sender)
    upsert_incident(factory, draft(severity="high", current=45.0, delta=-25.0))
    http.fail(3, 503)

    (failed,) = dispatch(factory, current(factory, inc.id), [channel], sender=sender)

    assert (failed.outcome, failed.event, failed.sequence, failed.attempts) == (
        "failed", "updated", 2, 3,
    )  # fmt: skip
    assert sleeps == [1.0, 2.0]
    row = get_delivery(factory, inc.id, "ops-hook")
    assert row is not None
    assert (row.sequence, row.last_event, row.attempts) == (1, "opened", 3)
    assert row.last_fingerprint is not None and row.last_fingerprint["delta"] == -15.0
    assert row.last_error is not None and "HTTP 503" in row.last_error

    (sent,) = dispatch(factory, current(factory, inc.id), [channel], sender=sender)

    assert (sent.outcome, sent.event, sent.sequence) == ("sent", "updated", 2)
    assert [r.headers["Idempotency-Key"] for r in http.at("/hook")] == [
        f"{inc.id}:1", *[f"{inc.id}:2"] * 4,
    ]  # fmt: skip
    row = get_delivery(factory, inc.id, "ops-hook")
    assert row is not None and (row.sequence, row.attempts, row.last_error) == (2, 4, None)


def test_connection_errors_and_timeouts_are_retried_then_recorded(
    lite: sessionmaker[Session], sender: Sender, sleeps: list[float]
) -> None:
    inc, _ = upsert_incident(lite, draft())
    refused = SlackChannel(
        name="refused", url=f"http://127.0.0.1:{closed_port()}/x", max_attempts=2
    )
    with silent_port() as port:
        hanging = WebhookChannel(
            name="hanging",
            url=f"http://127.0.0.1:{port}/x",
            secret_env=SECRET_ENV,
            max_attempts=2,
            timeout_s=0.2,
        )
        results = dispatch(lite, [inc], [refused, hanging], sender=sender)

    assert [(r.outcome, r.attempts) for r in results] == [("failed", 2), ("failed", 2)]
    assert "ConnectError" in results[0].detail
    assert "timed out after 0.2 s" in results[1].detail
    assert sleeps == [1.0, 1.0]
    assert all(get_delivery(lite, inc.id, ch) is not None for ch in ("refused", "hanging"))


def test_severity_threshold_holds_an_incident_back_until_it_rises(
    lite: sessionmaker[Session], http: HttpSink, sender: Sender
) -> None:
    inc, _ = upsert_incident(lite, draft(severity="medium", current=66.0, delta=-4.0))
    pager = slack(http, min_severity="high")
    feed = hook(http, min_severity="low")

    first = dispatch(lite, [inc], [pager, feed], sender=sender)

    assert [(r.channel, r.outcome, r.event) for r in first] == [
        ("ops-slack", "skipped", None),
        ("ops-hook", "sent", "opened"),
    ]
    assert "below the channel's minimum (high)" in first[0].detail
    assert http.at("/slack") == [] and get_delivery(lite, inc.id, "ops-slack") is None

    upsert_incident(lite, draft(severity="high", current=52.0, delta=-18.0))
    risen = dispatch(lite, current(lite, inc.id), [pager, feed], sender=sender)

    assert [(r.channel, r.outcome, r.event, r.sequence) for r in risen] == [
        ("ops-slack", "sent", "opened", 1),  # the pager hears of it now, as a new incident
        ("ops-hook", "sent", "updated", 2),
    ]
    assert "high severity" in http.at("/slack")[0].json()["text"]

    # a low incident resolved before it ever reached the pager is never sent to it
    low, _ = upsert_incident(lite, draft(slice={"region": "LA"}, severity="low", delta=-1.0))
    set_status(lite, low.id, status="resolved", actor="ana")
    (gone,) = dispatch(lite, current(lite, low.id), [pager], sender=sender)
    assert gone.outcome == "skipped" and "resolved before" in gone.detail


def test_pending_incidents_are_the_ones_a_channel_may_still_have_to_hear(
    factory: sessionmaker[Session], http: HttpSink, sender: Sender
) -> None:
    sf, _ = upsert_incident(factory, draft())
    nyc, _ = upsert_incident(
        factory, draft(slice={"region": "NYC"}, severity="medium", current=66.0, delta=-4.0)
    )
    low, _ = upsert_incident(factory, draft(slice={"region": "LA"}, severity="low", delta=-1.0))
    feed = hook(http, max_attempts=3)  # from medium severity up

    def pending() -> set[str]:
        return {
            i.id
            for i in pending_incidents(factory, current(factory, sf.id, nyc.id, low.id), [feed])
        }

    assert pending() == {sf.id, nyc.id}  # never told; the low one would not be sent
    dispatch(factory, current(factory, sf.id, nyc.id, low.id), [feed], sender=sender)
    assert pending() == set()  # told, unchanged: nothing to read again

    upsert_incident(factory, draft(current=50.0, delta=-20.0))  # SF changed
    save_analysis(factory, "incident", {"investigation": {"causes": CAUSES}}, incident_id=nyc.id)
    assert pending() == {sf.id, nyc.id}  # a new version; a newer investigation
    http.fail(3, 503)
    results = dispatch(factory, current(factory, sf.id, nyc.id), [feed], sender=sender,
                       causes=stored_causes(factory, [nyc.id]))  # fmt: skip
    assert sorted((r.incident_id, r.outcome) for r in results) == sorted(
        [(sf.id, "failed"), (nyc.id, "sent")]
    )
    assert pending() == {sf.id}  # its message failed: due until it is delivered
    dispatch(factory, current(factory, sf.id), [feed], sender=sender)
    assert pending() == set()

    set_status(factory, low.id, status="resolved", actor="ana")
    assert pending() == set()  # resolved before it was ever told: never due
    later = slack(http)  # a channel added later hears of the open ones
    assert {i.id for i in pending_incidents(factory, current(factory, sf.id, low.id), [later])} == {
        sf.id
    }


def test_webhook_signature_verifies_and_a_tampered_body_fails(
    lite: sessionmaker[Session], http: HttpSink
) -> None:
    inc, _ = upsert_incident(lite, draft())
    clock = 1_704_315_900.0
    sender = Sender(environ={SECRET_ENV: SECRET}, clock=lambda: clock)

    dispatch(lite, [inc], [hook(http)], sender=sender)

    (req,) = http.at("/hook")
    stamp, signature = req.headers["X-CXAgent-Timestamp"], req.headers["X-CXAgent-Signature"]
    assert stamp == "1704315900" and signature.startswith("sha256=")
    assert req.headers["Content-Type"] == "application/json"
    assert verify_signature(SECRET, stamp, req.body, signature, now=clock + 10)
    tampered = req.body.replace(b'"severity":"high"', b'"severity":"low"')
    assert tampered != req.body
    assert not verify_signature(SECRET, stamp, tampered, signature, now=clock)
    assert not verify_signature("another-secret", stamp, req.body, signature, now=clock)
    assert not verify_signature(SECRET, str(int(clock) + 1), req.body, signature, now=clock)
    assert not verify_signature(SECRET, stamp, req.body, signature, now=clock + 301)  # replay
    assert verify_signature(SECRET, stamp, req.body, signature, tolerance_s=600, now=clock + 301)


def test_a_missing_secret_names_the_channel_and_variable_and_sends_nothing(
    lite: sessionmaker[Session], http: HttpSink, smtp: SmtpSink
) -> None:
    inc, _ = upsert_incident(lite, draft())
    channels: list[Channel] = [
        slack(http),
        hook(http),
        mail(smtp, username="alerts", password_env="CX_TEST_SMTP_PASSWORD"),
    ]

    with pytest.raises(AlertConfigError) as err:
        dispatch(lite, [inc], channels, sender=Sender(environ={}))

    assert f"channel 'ops-hook': environment variable {SECRET_ENV}" in str(err.value)
    assert "channel 'ops-mail': environment variable CX_TEST_SMTP_PASSWORD" in str(err.value)
    assert http.requests == [] and smtp.messages == [] and list_deliveries(lite) == []
    with pytest.raises(AlertConfigError, match=SECRET_ENV):
        dispatch(lite, [inc], channels, sender=Sender(environ={SECRET_ENV: ""}))


def test_email_retries_a_transient_reply_and_gives_up_on_a_permanent_one(
    lite: sessionmaker[Session], smtp: SmtpSink, sender: Sender, sleeps: list[float]
) -> None:
    inc, _ = upsert_incident(lite, draft())
    smtp.replies += ["451 4.3.0 Try again later"] * 2

    (sent,) = dispatch(lite, [inc], [mail(smtp)], sender=sender)

    assert (sent.outcome, sent.attempts) == ("sent", 3) and sleeps == [1.0, 2.0]
    (message,) = smtp.messages
    assert message["X-CXAgent-Incident"] == inc.id

    other, _ = upsert_incident(lite, draft(slice={"region": "NYC"}))
    smtp.replies.append("550 5.7.1 Relaying denied")
    (failed,) = dispatch(lite, [other], [mail(smtp)], sender=sender)

    assert (failed.outcome, failed.attempts) == ("failed", 1)
    assert "SMTP 550" in failed.detail and len(smtp.messages) == 1


def test_email_over_starttls_with_a_login(
    lite: sessionmaker[Session], tmp_path: Path, sleeps: list[float]
) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    inc, _ = upsert_incident(lite, draft())
    env = {"CX_TEST_SMTP_PASSWORD": "hunter2"}
    with smtp_sink(tls=server_tls, credentials=("alerts", "hunter2")) as sink:
        channel = mail(sink, starttls=True, username="alerts", password_env="CX_TEST_SMTP_PASSWORD")
        sender = Sender(ssl_context=client_tls, environ=env, sleep=sleeps.append)
        (result,) = dispatch(lite, [inc], [channel], sender=sender)
        assert result.outcome == "sent", result.detail
        assert sink.logins == [("alerts", "hunter2")] and len(sink.messages) == 1

        other, _ = upsert_incident(lite, draft(slice={"region": "NYC"}))
        wrong = Sender(
            ssl_context=client_tls, environ={"CX_TEST_SMTP_PASSWORD": "nope"}, sleep=sleeps.append
        )
        (refused,) = dispatch(lite, [other], [channel], sender=wrong)
        assert (refused.outcome, refused.attempts) == ("failed", 1)  # a bad login is permanent
        assert "SMTP 535" in refused.detail


def test_messages_speak_business_with_the_numbers_and_link_the_workbench(
    lite: sessionmaker[Session], http: HttpSink, smtp: SmtpSink, sender: Sender
) -> None:
    inc, _ = upsert_incident(lite, draft())
    save_analysis(lite, "incident", {"investigation": {"causes": CAUSES}}, incident_id=inc.id)
    causes = stored_causes(lite, [inc.id, "inc-none"])
    assert causes == {inc.id: CAUSES}

    dispatch(
        lite, [inc], [slack(http), mail(smtp)], sender=sender, causes=causes,
        workbench_url="https://cx.example.internal/",
    )  # fmt: skip

    payload = http.at("/slack")[0].json()
    text = payload["text"]
    link = f"https://cx.example.internal/incidents/{inc.id}"
    assert text.splitlines()[0] == f"CX incident {inc.id} · update 1"
    assert "CX Score down 15.0 points in region=SF + category=grocery + daypart=dinner" in text
    assert "went from 70.0 to 55.0" in text and "900 orders" in text
    assert "between 2024-01-03 16:00 and 2024-01-03 21:00" in text
    assert "Severity high, status new." in text
    assert "Most likely cause: batching policy (confidence 98%), costing about 11.2 points" in text
    assert f"Open it in the workbench: {link}" in text
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"CX incident {inc.id} · update 1"},
    }
    assert any(link in str(b) for b in payload["blocks"])
    (message,) = smtp.messages
    assert message["Subject"] == (
        f"[CX incident {inc.id}] CX Score regression in "
        "region=SF + category=grocery + daypart=dinner"
    )
    body = message.get_content()
    assert "Most likely cause: batching policy (confidence 98%)" in body and link in body
