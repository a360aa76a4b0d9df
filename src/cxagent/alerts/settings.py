"""Alert channel settings: one frozen model per kind, the ``channels`` of the configuration file.

These are the only channel models: ``cxagent.config`` validates the file's ``channels`` list
with them (its errors name the key and line: ``agent.yaml:13: channels[1].url: field
required``) and the senders take them. Secrets never live in them: a webhook names the
environment variable that holds its signing secret (``secret_env``, required: every webhook
is signed) and an SMTP login the one that holds its password (``password_env``); both are
read when alerts are sent, so a rotated secret needs no new configuration. A Slack
incoming-webhook URL carries its own token: it is kept out of reprs and error messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from cxagent.errors import SpecError
from cxagent.fields import (
    Address,
    EnvName,
    FieldProblem,
    HttpUrl,
    NonEmpty,
    Settings,
    at_least,
)
from cxagent.store.models import SEVERITIES

Severity = Literal["low", "medium", "high"]
_SECRETS: Final = {  # each secret a channel names, by its field
    "secret_env": "the webhook's signing secret",
    "password_env": "the SMTP password",
}


class AlertConfigError(SpecError):
    """An alert channel cannot be used as given (a secret missing from the environment, two
    channels with one name); the message names the channel and the variable or field."""


def severity_rank(severity: str) -> int:
    """0 for low, 1 for medium, 2 for high."""
    return SEVERITIES.index(severity)


class ChannelBase(Settings):
    """What every channel has: its name (the key of its delivery records), the lowest
    severity it is sent, and how a failed delivery is retried: at most ``max_attempts``
    attempts, each within ``timeout_s``, waiting ``backoff_s`` before the first retry and
    twice as long each time after, up to ``max_backoff_s``."""

    name: NonEmpty = Field(max_length=64)
    min_severity: Severity = "medium"
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)  # cap of a wait, Retry-After included
    timeout_s: float = Field(default=10.0, gt=0)  # of one attempt (connect, send, reply)

    @model_validator(mode="after")
    def _backoff(self) -> ChannelBase:
        at_least("max_backoff_s", self.max_backoff_s, "backoff_s", self.backoff_s)
        return self

    def accepts(self, severity: str) -> bool:
        """Whether an incident of this severity reaches the channel's threshold."""
        return severity_rank(severity) >= severity_rank(self.min_severity)

    def env_names(self) -> dict[str, str]:
        """Field -> the environment variable it names (secrets, read at send time)."""
        return {}

    def _read_env(self, field: str, environ: Mapping[str, str] | None) -> str:
        name = self.env_names()[field]
        value = (os.environ if environ is None else environ).get(name, "")
        if not value:
            raise AlertConfigError(_unset(self, field, name))
        return value


class SlackChannel(ChannelBase):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...)."""

    kind: Literal["slack"] = "slack"
    url: HttpUrl = Field(repr=False)  # holds the webhook's token


class WebhookChannel(ChannelBase):
    """A generic JSON webhook, signed with HMAC-SHA256 (see ``cxagent.alerts.signing``)."""

    kind: Literal["webhook"] = "webhook"
    url: HttpUrl
    secret_env: EnvName  # the environment variable holding the signing secret

    def env_names(self) -> dict[str, str]:
        return {"secret_env": self.secret_env}

    def secret(self, environ: Mapping[str, str] | None = None) -> str:
        """The signing secret, from the environment; raises AlertConfigError naming the
        channel and the variable when it is unset or empty."""
        return self._read_env("secret_env", environ)


class EmailChannel(ChannelBase):
    """Email through an SMTP relay, optionally with STARTTLS and a login."""

    kind: Literal["email"] = "email"
    host: NonEmpty
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: NonEmpty | None = None
    password_env: EnvName | None = None  # the environment variable holding the SMTP password
    sender: Address
    to: tuple[Address, ...] = Field(min_length=1)

    @field_validator("to", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        """One address may be written alone; a list (as YAML has it) is kept as a tuple."""
        if isinstance(value, str):
            return (value,)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("host")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if "://" in value or "/" in value or " " in value or ":" in value:
            raise ValueError(
                "must be a host name or address only (the port goes in port), e.g. smtp.internal"
            )
        return value

    @model_validator(mode="after")
    def _login(self) -> EmailChannel:
        both = "username and password_env go together: an SMTP login needs both"
        if self.password_env is not None and self.username is None:
            raise FieldProblem("username", f"field required when password_env is set ({both})")
        if self.username is not None and self.password_env is None:
            raise FieldProblem("password_env", f"field required when username is set ({both})")
        return self

    def env_names(self) -> dict[str, str]:
        return {"password_env": self.password_env} if self.password_env else {}

    def password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The SMTP password (None without a login); raises AlertConfigError naming the
        channel and the variable when it is unset or empty."""
        if self.password_env is None:
            return None
        return self._read_env("password_env", environ)


Channel = Annotated[SlackChannel | WebhookChannel | EmailChannel, Field(discriminator="kind")]
CHANNEL_KINDS: Final[dict[str, type[ChannelBase]]] = {
    "slack": SlackChannel,
    "webhook": WebhookChannel,
    "email": EmailChannel,
}


def parse_channels(raw: Any, *, source: str | None = None) -> list[Channel]:
    """Validate a list of channel mappings (as read from YAML) as the configuration file's
    ``channels`` section is: raises ``cxagent.config.ConfigError`` naming each key at fault
    (``alerts.yaml: channels[1].secret_env: field required``); names must be unique."""
    from cxagent.config.load import validate_config  # the file's checks (config imports us)

    return list(validate_config({"channels": raw}, source=source or "").channels)


def duplicate_name(channels: Sequence[ChannelBase]) -> tuple[int, str] | None:
    """The index of the first channel that repeats an earlier one's name and what is wrong,
    or None: names key the delivery records, so they are unique."""
    seen: dict[str, int] = {}
    for i, c in enumerate(channels):
        if c.name in seen:
            return i, (
                f"duplicate name {c.name!r}: channels[{seen[c.name]}] and channels[{i}] both use "
                "it (names must be unique)"
            )
        seen[c.name] = i
    return None


def check_names(channels: Iterable[ChannelBase]) -> None:
    """Channel names are unique (they key the delivery records); AlertConfigError if not."""
    found = duplicate_name(list(channels))
    if found is not None:
        index, message = found
        raise AlertConfigError(f"channels[{index}].name: {message}")


def missing_secrets(
    channels: Iterable[ChannelBase], environ: Mapping[str, str] | None = None
) -> list[tuple[int, ChannelBase, str, str]]:
    """(index, channel, field, variable) of every ``*_env`` whose variable is unset or empty."""
    env = os.environ if environ is None else environ
    return [
        (i, c, field, var)
        for i, c in enumerate(channels)
        for field, var in c.env_names().items()
        if not env.get(var)
    ]


def check_secrets(
    channels: Iterable[ChannelBase],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Every secret the channels name is set in the environment; raises AlertConfigError
    naming each channel and variable that is not (call at start-up to fail early)."""
    problems = [_unset(c, field, var) for _, c, field, var in missing_secrets(channels, environ)]
    if problems:
        raise AlertConfigError("; ".join(problems))


def _unset(channel: ChannelBase, field: str, var: str) -> str:
    return (
        f"channel {channel.name!r}: environment variable {var} ({field}, {_SECRETS[field]}) "
        "is not set"
    )
