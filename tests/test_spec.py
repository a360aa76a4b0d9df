from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.data.scenario.spec import DEMO_SPEC, load_spec, parse_spec
from cxagent.errors import SpecError

from .conftest import small_spec


def test_given_the_demo_spec_when_loaded_then_it_tells_the_design_story() -> None:
    spec = load_spec(DEMO_SPEC)
    assert spec.days == 33 and str(spec.start) == "2023-12-04"
    first = spec.interventions[0]
    assert first.cause == "batching_policy" and first.logged
    assert first.scope.category == ["grocery"]
    assert first.start.isoformat() == "2024-01-03T00:00:00"
    assert {iv.cause for iv in spec.interventions} == {
        "batching_policy",
        "prep_time_drift",
        "inventory_drop",
    }
    assert str(spec.dates[-1]) == "2024-01-05"


def test_scope_accepts_single_values_and_lists() -> None:
    spec = parse_spec(
        small_spec(
            interventions=[
                {
                    "cause": "eta_model_bias",
                    "start": "2024-03-05T00:00",
                    "scope": {"region": ["SF", "LA"], "daypart": "dinner", "store": 1001},
                }
            ]
        )
    )
    scope = spec.interventions[0].scope
    assert scope.region == ["SF", "LA"] and scope.daypart == ["dinner"] and scope.store == [1001]
    assert scope.label() == {"region": ["SF", "LA"], "daypart": "dinner", "store": 1001}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"days": 0}, "days"),
        ({"orders_per_day": "many"}, "orders_per_day"),
        ({"colour": "blue"}, "colour"),
        ({"categories": ["grocery", "pharmacy"]}, "categories"),
        ({"regions": ["SF", "SF"]}, "regions"),
        (
            {"interventions": [{"cause": "aliens", "start": "2024-03-05T00:00"}]},
            "interventions[0].cause",
        ),
        (
            {
                "interventions": [
                    {
                        "cause": "batching_policy",
                        "start": "2024-03-05T00:00",
                        "scope": {"daypart": "brunch"},
                    }
                ]
            },
            "interventions[0].scope.daypart",
        ),
        (
            {
                "interventions": [
                    {"cause": "batching_policy", "start": "2024-03-05T00:00", "magnitude": -1}
                ]
            },
            "interventions[0].magnitude",
        ),
        (
            {
                "interventions": [
                    {
                        "cause": "batching_policy",
                        "start": "2024-03-05T00:00",
                        "end": "2024-03-04T00:00",
                    }
                ]
            },
            "end must be after start",
        ),
        (
            {
                "interventions": [
                    {
                        "cause": "batching_policy",
                        "start": "2024-03-05T00:00",
                        "scope": {"region": "PARIS"},
                    }
                ]
            },
            "interventions[0].scope.region",
        ),
        (
            {"interventions": [{"cause": "batching_policy", "start": "2030-01-01T00:00"}]},
            "interventions[0].start",
        ),
        (
            {
                "interventions": [
                    {
                        "cause": "dasher_shortage",
                        "start": "2024-03-05T00:00",
                        "scope": {"category": "grocery"},
                    }
                ]
            },
            "only region and daypart",
        ),
    ],
)
def test_given_a_bad_spec_when_parsed_then_the_error_names_the_field(
    change: dict, field: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(small_spec(**change), source="bad.yaml")
    assert field in str(info.value)
    assert str(info.value).startswith("bad.yaml: ")


def test_bad_yaml_and_missing_files_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(bad)


def test_given_a_bad_spec_when_generating_then_nothing_is_written(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: x\nstart: 2024-01-01\ndays: 2\norders_per_day: 100\n"
        "interventions:\n  - cause: batching_policy\n    start: 2024-01-01T05:00\n"
        "    scope: {daypart: brunch}\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", str(spec), "--out", str(out)])
    assert result.exit_code == 2
    assert "interventions[0].scope.daypart" in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [spec]
