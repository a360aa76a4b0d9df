"""What every settings model is built from: the configuration file's sections
(``cxagent.config``) and the alert channels (``cxagent.alerts.settings``).

``Settings`` is the strict base (unknown keys are errors, ``"7"`` is not a number, values are
final); ``NonEmpty``, ``HttpUrl``, ``EnvName`` and ``Address`` are checked strings; a
validator raises ``FieldProblem`` to name a key below the one it validates (``at_least``
compares two keys).
"""

from __future__ import annotations

import re
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict


class Settings(BaseModel):
    """Base of every settings model: unknown keys are errors, types are strict, values final."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class FieldProblem(ValueError):
    """A validator's error about a key below the one being validated (``path`` is relative to
    it), so the message names the exact key: ``channels[3].name``, not ``channels``."""

    def __init__(self, path: tuple[str | int, ...] | str, message: str) -> None:
        self.path: tuple[str | int, ...] = (path,) if isinstance(path, str) else path
        super().__init__(message)


def at_least(name: str, value: float, floor_name: str, floor: float) -> None:
    """A check that compares two keys: FieldProblem on ``name`` unless ``value >= floor``
    (``max_backoff_s`` against ``backoff_s``, say)."""
    if value < floor:
        raise FieldProblem(name, f"must be >= {floor_name} ({floor:g}), got {value:g}")


_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# a plausible address: local part, @, a domain with at least one dot
_ADDRESS: Final = re.compile(
    r"[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_NAMED: Final = re.compile(r"[^<>@]*<(?P<address>[^<>]*)>")  # CX Agent <cx@example.com>


def _non_empty(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _http_url(value: str) -> str:
    """An http(s) URL with a host and no credentials. The URL itself is never echoed: a
    Slack webhook URL is a credential."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        host = parts.hostname
        has_userinfo = "@" in parts.netloc
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        scheme = f" (got scheme '{parts.scheme}')" if parts.scheme else ""
        raise ValueError(f"must be an http:// or https:// URL{scheme}")
    if not host:
        raise ValueError("must be an http(s) URL with a host")
    if has_userinfo:
        raise ValueError(
            "must not hold credentials (user:password@); secrets never live in the file"
        )
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable (letters, digits and underscores, "
            "e.g. CXAGENT_WEBHOOK_SECRET) that holds the secret, never the secret itself"
        )
    return value


def _address(value: str) -> str:
    """``name@example.com``, or with a display name: ``CX Agent <name@example.com>``."""
    value = value.strip()
    named = _NAMED.fullmatch(value)
    if not _ADDRESS.fullmatch(named.group("address").strip() if named else value):
        raise ValueError(f"{value!r} is not an email address (name@example.com)")
    return value


NonEmpty = Annotated[str, AfterValidator(_non_empty)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Address = Annotated[str, AfterValidator(_address)]
