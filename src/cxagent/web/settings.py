"""Settings of the web workbench, read from the environment.

A ``Settings`` object is always valid: outside development it refuses the development secret
and missing or short API tokens, so a misconfigured server fails at start-up with the name of
the variable to set, never later with a forgeable session.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from cxagent.errors import CXAgentError

ENVIRONMENTS = ("development", "production")
DEV_SECRET_KEY = "cxagent-development-secret-do-not-use-in-production"
MIN_SECRET_LENGTH = 32
MIN_TOKEN_LENGTH = 24
DEFAULT_SESSION_HOURS = 12


class SettingsError(CXAgentError):
    """A setting is missing or unsafe; the message names the environment variable."""


@dataclass(frozen=True)
class Settings:
    """What the server needs: its environment, the secret that signs sessions and CSRF
    tokens, one API token per role, the store URL and the session lifetime."""

    env: str = "development"
    secret_key: str = DEV_SECRET_KEY
    engineer_token: str = field(default="", repr=False)
    pm_token: str = field(default="", repr=False)
    db_url: str | None = None
    session_max_age: int = DEFAULT_SESSION_HOURS * 3600

    def __post_init__(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise SettingsError(
                f"CXAGENT_ENV must be one of {', '.join(ENVIRONMENTS)}, not {self.env!r}"
            )
        if self.session_max_age <= 0:
            raise SettingsError("CXAGENT_SESSION_HOURS must be positive")
        if self.development:
            # tokens nobody set are made up for this run: the sign-in link prints them
            for name in ("engineer_token", "pm_token"):
                if not getattr(self, name):
                    object.__setattr__(self, name, secrets.token_urlsafe(24))
        else:
            self._check_production()
        if self.engineer_token == self.pm_token:
            raise SettingsError("CXAGENT_ENGINEER_TOKEN and CXAGENT_PM_TOKEN must differ")

    def _check_production(self) -> None:
        if self.secret_key == DEV_SECRET_KEY:
            raise SettingsError(
                f"CXAGENT_SECRET_KEY is the development default; set a random secret of at "
                f"least {MIN_SECRET_LENGTH} characters to run with CXAGENT_ENV={self.env}"
            )
        if len(self.secret_key) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"CXAGENT_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters "
                f"with CXAGENT_ENV={self.env}"
            )
        for var, token in (
            ("CXAGENT_ENGINEER_TOKEN", self.engineer_token),
            ("CXAGENT_PM_TOKEN", self.pm_token),
        ):
            if len(token) < MIN_TOKEN_LENGTH:
                raise SettingsError(
                    f"{var} must be set to at least {MIN_TOKEN_LENGTH} characters "
                    f"with CXAGENT_ENV={self.env}"
                )

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def secure_cookies(self) -> bool:
        """Cookies go over HTTPS only outside development (the dev server speaks HTTP)."""
        return not self.development

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, db_url: str | None = None
    ) -> Settings:
        """Settings from the ``CXAGENT_*`` variables; ``db_url`` (a command-line option) wins
        over ``CXAGENT_DB_URL``."""
        env = os.environ if environ is None else environ
        hours = env.get("CXAGENT_SESSION_HOURS", str(DEFAULT_SESSION_HOURS))
        try:
            max_age = int(float(hours) * 3600)
        except ValueError:
            raise SettingsError(f"CXAGENT_SESSION_HOURS must be a number, not {hours!r}") from None
        return cls(
            env=env.get("CXAGENT_ENV", "development"),
            secret_key=env.get("CXAGENT_SECRET_KEY", DEV_SECRET_KEY),
            engineer_token=env.get("CXAGENT_ENGINEER_TOKEN", ""),
            pm_token=env.get("CXAGENT_PM_TOKEN", ""),
            db_url=db_url or env.get("CXAGENT_DB_URL") or None,
            session_max_age=max_age,
        )
