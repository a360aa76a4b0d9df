"""Starting the workbench: on a free port for browser tests, and from ``cxagent serve``."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cxagent.cli import app as cli
from cxagent.store.db import session_factory
from cxagent.web import app_for_store, running, serve
from cxagent.web.server import sign_in_url
from cxagent.web.settings import Settings
from tests.web.conftest import Seeded
from tests.web.payloads import seed


def test_running_serves_on_a_free_port_then_stops(seeded: Seeded) -> None:
    with running(app_for_store(seeded.url)) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/api/health", timeout=5) as r:
            assert json.load(r) == {"status": "ok"}
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/api/health", timeout=1)


def test_sign_in_link_only_in_development() -> None:
    dev = Settings(engineer_token="e" * 30, pm_token="p" * 30)
    assert (
        sign_in_url(dev, "http://127.0.0.1:8000/")
        == f"http://127.0.0.1:8000/login?token={'e' * 30}"
    )
    prod = Settings(
        env="production", secret_key="s" * 40, engineer_token="e" * 30, pm_token="p" * 30
    )
    assert sign_in_url(prod, "http://x") is None


def test_serve_announces_the_sign_in_link_and_runs_uvicorn(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "cxagent.web.server.uvicorn.run", lambda app, **kw: calls.append({"app": app, **kw})
    )
    serve(seeded.settings, seeded.workbench, host="127.0.0.1", port=8765)
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:8765/login?token={seeded.settings.engineer_token}" in out
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8765
    assert calls[0]["app"].state.workbench is seeded.workbench


def test_cli_serve_opens_the_store_next_to_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "cxagent.web.server.uvicorn.run", lambda app, **kw: calls.append({"app": app, **kw})
    )
    monkeypatch.delenv("CXAGENT_DB_URL", raising=False)
    seed(session_factory(f"sqlite:///{tmp_path / 'cxagent.db'}"))  # views already stored
    result = CliRunner().invoke(
        cli,
        ["serve", "--data", str(tmp_path), "--port", "8123"],
        env={"CXAGENT_ENV": "development"},
    )
    assert result.exit_code == 0, result.output
    assert "sign in as the ML engineer: http://127.0.0.1:8123/login?token=" in result.output
    assert "computing" not in result.output  # the stored views are served as they are
    assert calls[0]["port"] == 8123


def test_cli_serve_without_views_or_dataset_names_the_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--data", str(tmp_path)], env={"CXAGENT_ENV": "development"}
    )
    assert result.exit_code == 2
    assert "dataset.json" in result.output and str(tmp_path) in result.output.replace("\n", "")


def test_cli_serve_refuses_the_default_secret_in_production(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["serve", "--data", str(tmp_path)],
        env={"CXAGENT_ENV": "production", "CXAGENT_SECRET_KEY": None},
    )
    assert result.exit_code == 2
    assert "CXAGENT_SECRET_KEY" in result.output


def test_cli_serve_names_a_bad_store_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--data", str(tmp_path), "--db", "nonsense"], env={"CXAGENT_ENV": None}
    )
    assert result.exit_code == 2
    assert "--db: cannot open the store at 'nonsense'" in result.output
