"""Settings refuse to run a server that could be signed into with a known secret."""

from __future__ import annotations

import pytest

from cxagent.web.settings import DEV_SECRET_KEY, Settings, SettingsError

SECRET = "s" * 40
TOKENS = {"CXAGENT_ENGINEER_TOKEN": "e" * 30, "CXAGENT_PM_TOKEN": "p" * 30}


def test_development_makes_up_tokens_that_differ() -> None:
    settings = Settings.from_env({})
    assert settings.development and settings.secret_key == DEV_SECRET_KEY
    assert len(settings.engineer_token) >= 24 and len(settings.pm_token) >= 24
    assert settings.engineer_token != settings.pm_token
    assert not settings.secure_cookies


def test_production_refuses_the_default_secret_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="CXAGENT_SECRET_KEY"):
        Settings.from_env({"CXAGENT_ENV": "production", **TOKENS})


def test_production_refuses_a_short_secret() -> None:
    env = {"CXAGENT_ENV": "production", "CXAGENT_SECRET_KEY": "short", **TOKENS}
    with pytest.raises(SettingsError, match="CXAGENT_SECRET_KEY must be at least 32"):
        Settings.from_env(env)


@pytest.mark.parametrize("missing", ["CXAGENT_ENGINEER_TOKEN", "CXAGENT_PM_TOKEN"])
def test_production_needs_both_tokens(missing: str) -> None:
    env = {"CXAGENT_ENV": "production", "CXAGENT_SECRET_KEY": SECRET, **TOKENS}
    env[missing] = "too-short"
    with pytest.raises(SettingsError, match=missing):
        Settings.from_env(env)


def test_production_with_everything_set_starts_with_secure_cookies() -> None:
    env = {"CXAGENT_ENV": "production", "CXAGENT_SECRET_KEY": SECRET, **TOKENS}
    settings = Settings.from_env(
        {**env, "CXAGENT_DB_URL": "sqlite:///x.db"}, db_url="sqlite:///y.db"
    )
    assert settings.secure_cookies and settings.db_url == "sqlite:///y.db"
    assert Settings.from_env({**env, "CXAGENT_DB_URL": "sqlite:///x.db"}).db_url == "sqlite:///x.db"


def test_bad_values_name_their_variable() -> None:
    with pytest.raises(SettingsError, match="CXAGENT_ENV"):
        Settings.from_env({"CXAGENT_ENV": "staging"})
    with pytest.raises(SettingsError, match="CXAGENT_SESSION_HOURS"):
        Settings.from_env({"CXAGENT_SESSION_HOURS": "soon"})
    with pytest.raises(SettingsError, match="must differ"):
        Settings(engineer_token="x" * 30, pm_token="x" * 30)


def test_tokens_do_not_show_in_the_repr() -> None:
    settings = Settings(engineer_token="e" * 30, pm_token="p" * 30)
    assert "eeee" not in repr(settings) and "pppp" not in repr(settings)
