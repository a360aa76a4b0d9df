from pathlib import Path

from typer.testing import CliRunner

import cxagent
from cxagent.cli import app
from cxagent.data.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_data_model_doc_is_generated_from_the_schema() -> None:
    assert (ROOT / "docs" / "data-model.md").read_text() == render(), (
        "docs/data-model.md is stale: run `make docs`"
    )


def test_readme_names_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_spec_field_is_documented() -> None:
    from cxagent.data.scenario.spec import Intervention, ScenarioSpec, Scope

    doc = (ROOT / "docs" / "scenario-spec.md").read_text()
    for model in (ScenarioSpec, Intervention, Scope):
        for name in model.model_fields:
            assert f"`{name}`" in doc, f"{model.__name__}.{name} is not documented"


def test_public_api_exports_the_whole_exception_tree() -> None:
    import inspect

    from cxagent import errors

    tree = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, Exception)}
    assert tree <= set(cxagent.__all__)
    assert all(hasattr(cxagent, n) for n in cxagent.__all__)


def test_cli_help_lists_the_commands() -> None:
    out = CliRunner().invoke(app, ["--help"]).output
    for command in ("generate", "validate", "import", "demo"):
        assert command in out
