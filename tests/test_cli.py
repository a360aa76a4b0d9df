import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.store.db import default_url, session_factory
from cxagent.store.repository import get_analysis, list_incidents


def test_generate_writes_a_valid_dataset_with_truth(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: cli\nseed: 1\nstart: 2024-02-01\ndays: 3\norders_per_day: 400\n"
        "interventions:\n  - cause: inventory_drop\n    start: 2024-02-02T00:00\n"
        "    scope: {region: LA}\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", str(spec), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "3/3" in result.output  # the progress bar reached the end
    truth = json.loads((out / "truth.json").read_text())
    assert truth["interventions"][0]["cause"] == "inventory_drop"
    again = CliRunner().invoke(app, ["generate", str(spec), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    valid = CliRunner().invoke(app, ["validate", str(out)])
    assert valid.exit_code == 0 and "valid" in valid.output


def test_demo_tells_the_story_end_to_end(demo_dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = demo_dataset
    plan, experiment = tmp_path / "plan.md", tmp_path / "experiment"
    args = [
        "demo",
        "--out",
        str(root),
        "--plan-out",
        str(plan),
        "--experiment-out",
        str(experiment),
        "--no-serve",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "batching_policy" in result.output and "SF / grocery / dinner" in result.output
    assert "Most likely cause: batching_policy" in result.output  # the investigation
    assert "investigating root causes" in result.output  # with a progress bar
    assert "Reduce batching in SF grocery dinner" in result.output  # the recommended fix
    assert plan.read_text().startswith("# Experiment plan: reduce_batching")  # exported
    assert (experiment / "experiment.parquet").exists()
    assert "resolved" in result.output  # the rehearsed experiment resolves the incident
    store = session_factory(default_url(root))  # the workbench's views, and the experiment's
    sf = [i for i in list_incidents(store) if i.slice.get("region") == "SF"]
    assert sf and get_analysis(store, "overview") is not None
    assert get_analysis(store, "incident", sf[0].id) is not None
    assert get_analysis(store, "experiment", sf[0].id)["report"]["status"] == "resolved"


def test_detect_prints_the_feed_as_json(demo_dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = demo_dataset
    db = f"sqlite:///{tmp_path / 'cx.db'}"
    result = CliRunner().invoke(app, ["detect", "--data", str(root), "--json", "--db", db])
    assert result.exit_code == 0, result.output
    feed = json.loads(result.stdout)["incidents"]
    sf = [i for i in feed if i["slice"] == {"region": "SF", "category": "grocery"}]
    assert sf and sf[0]["severity"] == "high" and sf[0]["metric"] == "cx_score"
    assert sf[0]["top_slices"][0]["slice"] == {
        "region": "SF",
        "category": "grocery",
        "daypart": "dinner",
    }
    again = CliRunner().invoke(app, ["detect", "--data", str(root), "--json", "--db", db])
    assert len(json.loads(again.stdout)["incidents"]) == len(feed)  # updated, not duplicated


def test_detect_reports_bad_input_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["detect", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_investigate_reports_bad_requests_clearly(small_dataset: Path) -> None:
    runner = CliRunner()
    data = ["investigate", "--data", str(small_dataset)]
    result = runner.invoke(app, [*data, "--slice", "regionSF", "--since", "2024-03-06"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output
    result = runner.invoke(app, [*data, "--slice", "region=SF"])
    assert result.exit_code == 2 and "--slice and --since go together" in result.output
    result = runner.invoke(app, [*data, "--slice", "city=SF", "--since", "2024-03-06"])
    assert result.exit_code == 2 and "unknown dimension" in result.output
    result = runner.invoke(app, [*data, "--slice", "region=SF", "--since", "2030-01-01"])
    assert result.exit_code == 2 and "before or after" in result.output


def test_storefront_serve_refuses_a_bad_impressions_mode_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "storefront", "serve", "--port", "0", "--db", f"sqlite:///{tmp_path / 'sf.db'}",
            "--impressions", "sometimes",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "impressions" in result.output and "reported" in result.output


def test_python_dash_m_runs_the_command_line() -> None:
    # what spark-submit runs (it takes a Python file: the package's __main__.py)
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cxagent", "detect", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--engine" in done.stdout


def test_config_check_prints_the_effective_settings_or_names_the_key(tmp_path: Path) -> None:
    import yaml

    good = tmp_path / "agent.yaml"
    good.write_text("detection:\n  top_slices: 3\n")
    result = CliRunner().invoke(app, ["config", "check", str(good)], env={"CXAGENT_CONFIG": ""})
    assert result.exit_code == 0, result.output
    effective = yaml.safe_load(result.stdout)
    assert effective["detection"]["top_slices"] == 3  # the file's
    assert effective["detection"]["detector"] == "ewma" and effective["channels"] == []  # defaults
    named = CliRunner().invoke(app, ["config", "check"], env={"CXAGENT_CONFIG": str(good)})
    assert named.exit_code == 0 and yaml.safe_load(named.stdout) == effective
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "detection:\n  fdr_alpha: 1.5\nchannels:\n  - {name: a, kind: webhook, url: 'https://h/x'}\n"
    )
    result = CliRunner().invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {bad}:2: detection.fdr_alpha: must lie in (0, 1), got 1.5",
        f"error: {bad}:4: channels[0].secret_env: field required",
    ]
    assert result.stdout == ""


def test_detect_takes_detection_weights_and_store_from_the_config_under_its_options(
    demo_dataset: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = demo_dataset
    db = tmp_path / "from-config.db"
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{db}'}}\n"
        "detection: {detector: zscore, top_slices: 1}\n"
        "metrics:\n  cx_weights: {on_time: 1.0, item_accuracy: 0, cancellation: 0, refund: 0,\n"
        "               support_contact: 0, rating: 0}\n"
    )
    detect = ["detect", "--data", str(root), "--json"]
    result = CliRunner().invoke(app, [*detect, "--config", str(config)])
    assert result.exit_code == 0, result.output
    feed = json.loads(result.stdout)["incidents"]
    # the file's detector (beside the driver checks, on by default)
    assert feed and {i["detector"].removesuffix("+drivers") for i in feed} == {"zscore"}
    assert all(len(i["top_slices"]) == 1 for i in feed)  # and its top_slices (default 8)
    assert db.exists() and len(list_incidents(session_factory(f"sqlite:///{db}"))) == len(feed)
    # the file's weights, on time alone: CX Scores are on-time scores (200 points per late rate)
    late = [i for i in feed if "late_rate" in i["components"]]
    assert late
    for i in late:
        assert i["delta"] == pytest.approx(-200 * i["components"]["late_rate"]["delta"], abs=0.03)
    # $CXAGENT_CONFIG names the file when --config does not; an option wins over the file
    env = {"CXAGENT_CONFIG": str(config)}
    again = CliRunner().invoke(app, [*detect, "--detector", "ewma"], env=env)
    assert again.exit_code == 0, again.output
    feed = json.loads(again.stdout)["incidents"]
    assert feed and {i["detector"].removesuffix("+drivers") for i in feed} == {"ewma"}
    assert all(len(i["top_slices"]) == 1 for i in feed)
