"""A seeded store, the application over it, and clients signed in as each role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cxagent.store.db import session_factory
from cxagent.web import Settings, create_app
from cxagent.workbench.reader import Workbench
from tests.web.payloads import seed

ENGINEER_TOKEN = "engineer-token-for-the-tests-0123456789"
PM_TOKEN = "pm-token-for-the-tests-0123456789abcdef"


def make_settings(url: str) -> Settings:
    return Settings(db_url=url, engineer_token=ENGINEER_TOKEN, pm_token=PM_TOKEN)


class Seeded:
    """A seeded store and the application serving it."""

    def __init__(self, folder: Path) -> None:
        self.url = f"sqlite:///{folder / 'cxagent.db'}"
        factory = session_factory(self.url)
        self.ids = seed(factory)
        self.workbench = Workbench(factory)
        self.settings = make_settings(self.url)
        self.app = create_app(self.settings, self.workbench)

    def client(self, token: str | None = None) -> TestClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return TestClient(self.app, headers=headers, follow_redirects=False)

    def browser(self, token: str = ENGINEER_TOKEN, name: str = "") -> TestClient:
        """A client signed in through the login form: it holds the session cookie."""
        client = self.client()
        response = client.post("/login", data={"token": token, "name": name, "next": "/"})
        assert response.status_code == 303, response.text
        return client


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Shared by the read-only tests of a module."""
    return Seeded(tmp_path_factory.mktemp("web"))


@pytest.fixture
def fresh(tmp_path: Path) -> Seeded:
    """A store of its own, for tests that change incidents."""
    return Seeded(tmp_path)


@pytest.fixture(scope="module")
def engineer(seeded: Seeded) -> Iterator[TestClient]:
    with seeded.client(ENGINEER_TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def pm(seeded: Seeded) -> Iterator[TestClient]:
    with seeded.client(PM_TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(seeded: Seeded) -> Iterator[TestClient]:
    with seeded.client() as client:
        yield client
