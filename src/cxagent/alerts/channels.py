"""Sending one alert to one channel: Slack incoming webhook, signed JSON webhook, email.

``Sender`` holds everything that touches the outside world (the HTTP client, the SMTP
connection, the clock, sleeping, randomness, the environment), each injectable, so tests run
against local servers without waiting.
"""

from __future__ import annotations

import json
import os
import random as _random
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from secrets import token_hex

import httpx

from cxagent.alerts import messages
from cxagent.alerts.events import Alert
from cxagent.alerts.retry import Attempted, DeliveryError, parse_retry_after, with_retries
from cxagent.alerts.settings import Channel, EmailChannel, SlackChannel, WebhookChannel
from cxagent.alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

USER_AGENT = "cxagent-alerts/1"
SmtpFactory = Callable[[str, int, float], smtplib.SMTP]


def _smtp(host: str, port: int, timeout: float) -> smtplib.SMTP:
    return smtplib.SMTP(host, port, timeout=timeout)


def _http_error(response: httpx.Response, channel: Channel) -> DeliveryError:
    """A non-2xx reply: 429 and 5xx may pass, other codes will not."""
    code = response.status_code
    excerpt = response.text[:200].strip()
    message = f"{channel.kind} channel {channel.name!r}: HTTP {code}" + (
        f" ({excerpt})" if excerpt else ""
    )
    transient = code == 429 or code >= 500
    retry_after = parse_retry_after(response.headers.get("Retry-After")) if transient else None
    return DeliveryError(message, transient=transient, retry_after=retry_after)


def _smtp_error(exc: Exception, channel: EmailChannel) -> DeliveryError:
    """SMTP 4xx replies and lost connections may pass; 5xx, TLS and protocol errors will not."""
    where = f"email channel {channel.name!r}"
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"{where}: TLS failed ({exc})", transient=False)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        refused = ", ".join(f"{a} ({c})" for a, (c, _) in exc.recipients.items())
        return DeliveryError(
            f"{where}: recipients refused: {refused}", transient=all(400 <= c < 500 for c in codes)
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        code, text = exc.smtp_code, exc.smtp_error
        reply = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        return DeliveryError(
            f"{where}: SMTP {code} {reply}".strip(),
            transient=code < 0 or 400 <= code < 500 or isinstance(exc, smtplib.SMTPConnectError),
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(f"{where}: server disconnected ({exc})", transient=True)
    if isinstance(exc, smtplib.SMTPException):
        return DeliveryError(f"{where}: {exc}", transient=False)
    return DeliveryError(f"{where}: {type(exc).__name__}: {exc}", transient=True)


@dataclass(frozen=True)
class Sent:
    """A delivered message; ``thread_ref`` is the email's Message-ID (None elsewhere)."""

    thread_ref: str | None = None


@dataclass
class Sender:
    """Delivers alerts, with retries. The defaults are the real world; tests inject theirs."""

    client: httpx.Client | None = None  # default: a fresh client per message
    smtp: SmtpFactory = _smtp
    ssl_context: ssl.SSLContext | None = None  # STARTTLS; default: system trust store
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = _random.random
    clock: Callable[[], float] = time.time  # the webhook signature's timestamp
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # default os.environ

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def deliver(self, channel: Channel, alert: Alert, *, thread_ref: str | None) -> Attempted[Sent]:
        """Send ``alert`` to ``channel``, retrying transient failures. ``thread_ref`` is the
        first message's reference on this channel (an email Message-ID), if any."""
        if isinstance(channel, SlackChannel):
            payload = json.dumps(messages.slack_payload(alert), ensure_ascii=False).encode()
            return self._retry(channel, lambda: self._post(channel, payload, {}))
        if isinstance(channel, WebhookChannel):
            return self._webhook(channel, alert)
        return self._email(channel, alert, thread_ref)

    def _retry(self, channel: Channel, attempt: Callable[[], Sent]) -> Attempted[Sent]:
        return with_retries(attempt, channel, sleep=self.sleep, random=self.random)

    def _post(
        self, channel: SlackChannel | WebhookChannel, body: bytes, headers: dict[str, str]
    ) -> Sent:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        try:
            if self.client is not None:
                response = self.client.post(
                    channel.url, content=body, headers=headers, timeout=channel.timeout_s
                )
            else:
                with httpx.Client(timeout=channel.timeout_s, follow_redirects=False) as client:
                    response = client.post(channel.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"{channel.kind} channel {channel.name!r}: timed out after "
                f"{channel.timeout_s:g} s ({type(exc).__name__})",
                transient=True,
            ) from None
        except httpx.TransportError as exc:
            raise DeliveryError(
                f"{channel.kind} channel {channel.name!r}: {type(exc).__name__}: {exc}",
                transient=True,
            ) from None
        if not response.is_success:
            raise _http_error(response, channel)
        return Sent()

    def _webhook(self, channel: WebhookChannel, alert: Alert) -> Attempted[Sent]:
        secret = channel.secret(self.env)
        body = json.dumps(
            alert.as_event(), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode()

        def attempt() -> Sent:
            stamp = str(int(self.clock()))  # signed afresh: a retry is not a stale request
            return self._post(
                channel,
                body,
                {
                    TIMESTAMP_HEADER: stamp,
                    SIGNATURE_HEADER: sign(secret, stamp, body),
                    IDEMPOTENCY_HEADER: alert.idempotency_key,
                },
            )

        return self._retry(channel, attempt)

    def _email(
        self, channel: EmailChannel, alert: Alert, thread_ref: str | None
    ) -> Attempted[Sent]:
        password = channel.password(self.env)
        msg = EmailMessage()
        msg["Subject"] = messages.email_subject(alert, reply=thread_ref is not None)
        msg["From"] = channel.sender
        msg["To"] = ", ".join(channel.to)
        msg["Date"] = formatdate(self.clock(), usegmt=True)
        domain = parseaddr(channel.sender)[1].rsplit("@", 1)[-1]
        # the same Message-ID on every retry, so a duplicate delivery is recognisable; short,
        # so the header is never folded
        msg["Message-ID"] = f"<{alert.incident_id}.{alert.sequence}.{token_hex(6)}@{domain}>"
        if thread_ref is not None:
            msg["In-Reply-To"] = thread_ref
            msg["References"] = thread_ref
        msg["X-CXAgent-Incident"] = alert.incident_id
        msg["X-CXAgent-Event"] = alert.event
        msg.set_content(messages.plain_text(alert))

        def attempt() -> Sent:
            try:
                with self.smtp(channel.host, channel.port, channel.timeout_s) as smtp:
                    if channel.starttls:
                        smtp.ehlo()
                        smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                        smtp.ehlo()
                    if channel.username is not None and password is not None:
                        smtp.login(channel.username, password)
                    smtp.send_message(msg, from_addr=channel.sender, to_addrs=list(channel.to))
            except (smtplib.SMTPException, OSError) as exc:
                raise _smtp_error(exc, channel) from None
            return Sent(thread_ref=str(msg["Message-ID"]))

        return self._retry(channel, attempt)
