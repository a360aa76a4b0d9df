"""Property-based fuzzing of the JSON API from its own OpenAPI document (schemathesis).

Every operation of ``/api/openapi.json`` gets generated requests, valid and invalid, sent to
the in-process application; each answer must not be a server error and must conform to the
document (a declared status code, its content type and body schema). As the ML engineer
everything is reachable; as the product manager nothing but the dashboard, summary and
merchant reads ever succeeds. A third pass sends valid requests only, their path parameters
mixed with what the store holds (the seeded incidents, the ranks that have a plan), so they
reach the stored views and change incidents instead of answering 404. The store is a
module-scoped one of its own: fuzzing changes statuses and labels, which the shared
``seeded`` store must not see.

The schema is loaded at import time (schemathesis collects one test per operation) from an
application over an empty in-memory store: the document depends on the routes only.
``schemathesis.pytest.from_fixture`` would load it from the fixture instead, but schemathesis
4.32 reads ``request.node._nodeid``, which pytest 9 no longer has.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cxagent.web import create_app
from cxagent.workbench.reader import Workbench
from tests.web.conftest import ENGINEER_TOKEN, PM_TOKEN, Seeded, make_settings

ENGINEER = {"Authorization": f"Bearer {ENGINEER_TOKEN}"}
PM = {"Authorization": f"Bearer {PM_TOKEN}"}
PM_READS = {
    "health",
    "get_me",
    "get_overview",
    "list_incidents",
    "get_summary",
    "get_merchants",
    "get_accuracy",
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def load_schema() -> Any:
    app = create_app(make_settings("sqlite://"), Workbench.from_url("sqlite://"))
    return schemathesis.openapi.from_asgi("/api/openapi.json", app, headers=ENGINEER)


schema = load_schema()  # valid and invalid requests, path parameters as generated
stored = load_schema()  # valid requests only, on what the store holds (see known_paths)
stored.config.generation.update(modes=[GenerationMode.POSITIVE])
KNOWN: list[str] = []  # the seeded incidents' ids, filled in by the ``fuzzed`` fixture


@stored.hook("flatmap_path_parameters")
def known_paths(_context: Any, path: dict[str, Any] | None) -> Any:
    """Mix what the store holds into the generated path: a seeded incident, a rank with a
    plan, or what schemathesis generated. Valid requests only: a hook's edit is not
    revalidated, so an invalid generated id swapped for a real one would pass for invalid
    data the API wrongly accepted."""
    if not path or not KNOWN:
        return st.just(path)
    parts = {}
    if "incident_id" in path:
        parts["incident_id"] = st.sampled_from([*KNOWN, path["incident_id"]])
    if "rank" in path:
        parts["rank"] = st.sampled_from([1, 2, path["rank"]])
    return st.fixed_dictionaries(parts).map(lambda known: {**path, **known})


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    seeded = Seeded(tmp_path_factory.mktemp("fuzz"))
    KNOWN[:] = [seeded.ids[name] for name in ("sf", "store", "bare")]  # the planned one first
    return seeded


@schema.parametrize()
@FUZZ
def test_the_api_keeps_its_contract_for_the_engineer(case: Any, fuzzed: Seeded) -> None:
    case.call_and_validate(app=fuzzed.app, headers=ENGINEER)


@stored.parametrize()
@FUZZ
def test_the_stored_views_keep_the_contract(case: Any, fuzzed: Seeded) -> None:
    case.call_and_validate(app=fuzzed.app, headers=ENGINEER)


@schema.parametrize()
@settings(FUZZ, max_examples=20)
def test_the_product_manager_reads_and_changes_nothing(case: Any, fuzzed: Seeded) -> None:
    response = case.call_and_validate(app=fuzzed.app, headers=PM)
    if case.operation.definition.raw.get("operationId") not in PM_READS:
        assert response.status_code >= 400, f"{case.operation.label}: {response.status_code}"


# --- what fuzzing found, pinned ------------------------------------------------------------------


def test_a_body_that_is_not_utf8_is_a_422_naming_the_body(fuzzed: Seeded) -> None:
    """It was a 400 that the document did not declare, without the field at fault."""
    with fuzzed.client(ENGINEER_TOKEN) as client:
        for route in ("status", "feedback"):
            r = client.post(
                f"/api/incidents/{fuzzed.ids['store']}/{route}",
                content=b"\xff\xfeU",
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["type"] == "validation_error" and error["field"] == "body"
        status = client.get(f"/api/incidents/{fuzzed.ids['store']}").json()["incident"]["status"]
        assert status in {"new", "investigating", "monitoring", "resolved"}


def test_state_changes_declare_every_error_they_answer(fuzzed: Seeded) -> None:
    with fuzzed.client(ENGINEER_TOKEN) as client:
        spec = client.get("/api/openapi.json").json()
    for route in ("status", "feedback"):
        declared = spec["paths"][f"/api/incidents/{{incident_id}}/{route}"]["post"]["responses"]
        assert {"200", "401", "403", "404", "409", "422"} <= set(declared), route
