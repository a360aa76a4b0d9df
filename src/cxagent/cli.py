"""The ``cxagent`` command line."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import track
from rich.table import Table as RichTable

from cxagent.errors import CXAgentError, SpecError

app = typer.Typer(
    name="cxagent",
    help="CX-Fulfillment Agent: detect, localise and explain customer-experience regressions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(
    help="Map a real data source to the canonical tables.", no_args_is_help=True
)
app.add_typer(import_app, name="import")
experiment_app = typer.Typer(
    help="Run a recommended fix as an experiment and follow it to resolution.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")

console = Console(stderr=True)
OutOpt = Annotated[Path, typer.Option("--out", help="Directory to write the dataset to.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")]
DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Dataset directory, or its URL on object storage (s3://bucket/prefix; the cloud extra).",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Incident store URL (default: $CXAGENT_DB_URL or DATA/cxagent.db)."),
]

ExchangeOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="CX points one percent of efficiency (deliveries per dasher hour) is worth, "
        "for ranking fixes by net benefit.",
    ),
]
BootstrapOpt = Annotated[int, typer.Option(min=20, help="Bootstrap replicates for the intervals.")]
IncidentOpt = Annotated[
    str | None, typer.Option(help="Only this incident id (default: every incident).")
]


def _fail(exc: Exception) -> typer.Exit:
    """Print the error (it names the file, option or field at fault) and exit with 2."""
    # escaped: a message may hold brackets (pip install 'cxagent[cloud]') that are not markup
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="Dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a dataset against the canonical schema."""
    from cxagent.data.validate import validate_dataset

    report = validate_dataset(data)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "rows": report.rows,
                    "problems": [str(p) for p in report.problems],
                },
                indent=2,
            )
        )
    else:
        table = RichTable(title=f"{data}")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name, n in report.rows.items():
            table.add_row(name, f"{n:,}")
        Console().print(table)
        for p in report.problems:
            console.print(f"[red]problem:[/] {p}", highlight=False, soft_wrap=True)
        if report.ok:
            Console().print("[green]valid[/]")
    if not report.ok:
        raise typer.Exit(code=1)


@app.command()
def generate(
    spec: Annotated[
        Path | None, typer.Argument(help="Scenario spec (YAML); see docs/scenario-spec.md.")
    ] = None,
    out: OutOpt = Path("demo-data"),
    demo: Annotated[bool, typer.Option("--demo", help="Generate the built-in demo story.")] = False,
    overwrite: OverwriteOpt = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (default: 2).")] = 2,
) -> None:
    """Generate a synthetic marketplace dataset with planted causes and its truth.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from cxagent.data.scenario.generator import generate as run
    from cxagent.data.scenario.spec import DEMO_SPEC, load_spec

    if demo == (spec is not None):
        console.print("[bold red]error:[/] give either a SPEC file or --demo, not both or neither")
        raise typer.Exit(code=2)
    try:
        scenario = load_spec(DEMO_SPEC if demo else spec)  # type: ignore[arg-type]
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(f"generating {scenario.name}", total=scenario.days)
            truth = run(
                scenario,
                out,
                overwrite=overwrite,
                workers=workers,
                progress=lambda done, total: bar.update(task, completed=done),
            )
    except CXAgentError as exc:
        raise _fail(exc) from exc
    rows = truth["rows"]
    console.print(
        f"wrote {out}: {rows.get('orders', 0):,} orders, {rows.get('items', 0):,} items; "
        f"planted causes in {out / 'truth.json'}"
    )


@app.command()
def demo(
    out: OutOpt = Path("demo-data"),
    overwrite: OverwriteOpt = False,
    plan_out: Annotated[
        Path, typer.Option("--plan-out", help="Where to write the experiment plan.")
    ] = Path("demo-plan.md"),
    experiment_out: Annotated[
        Path, typer.Option("--experiment-out", help="Where to write the rehearsed experiment.")
    ] = Path("demo-experiment"),
    open_workbench: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="Open the web workbench on the story at the end."),
    ] = True,
    port: Annotated[int, typer.Option(min=1, max=65535, help="The workbench's port.")] = 8000,
    engine_name: Annotated[
        str | None, typer.Option("--engine", help=EngineOpt.__metadata__[0].help)
    ] = None,
) -> None:
    """The demo journey on embedded defaults: generate the demo story, detect, investigate,
    recommend, export the plan of the best fix, rehearse its experiment, then open the web
    workbench signed in as the ML engineer."""
    from cxagent.data.io import load_manifest
    from cxagent.data.validate import validate_dataset

    _use_engine(engine_name)
    if overwrite or not (out / "dataset.json").exists():
        generate(spec=None, out=out, demo=True, overwrite=overwrite, workers=2)
    else:
        console.print(f"using the existing demo dataset in {out} (pass --overwrite to rebuild)")
    report = validate_dataset(out)
    for problem in report.problems:
        console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(code=1)
    manifest = load_manifest(out)
    Console().print(
        f"[green]valid[/] {manifest.source} dataset, {manifest.start} to {manifest.end}: "
        + ", ".join(f"{n:,} {t}" for t, n in report.rows.items() if n)
    )
    from cxagent.incidents import detect_incidents

    console.print("detecting regressions per cohort (last 7 days, window by window) ...")
    try:
        reports = detect_incidents(out)
    except CXAgentError as exc:
        raise _fail(exc) from exc
    _print_feed(reports)
    from cxagent.engine.connection import connect
    from cxagent.rca.investigate import investigate_reports

    progress = track(reports, description="investigating root causes", console=console)
    engine = connect(out)
    found = investigate_reports(engine, progress, recalibration=_recalibration(None, out))
    _print_investigations(found)
    recs = _recommended(engine, found, 1.0, 100, False)
    _print_recommendations(recs)
    _print_truth(out / "truth.json")
    from cxagent.store.db import default_url, session_factory
    from cxagent.workbench.build import dataset_info, store_views

    with console.status("storing the workbench views ..."):
        store_views(
            session_factory(default_url(out)), engine, found, recs, dataset=dataset_info(out)
        )
    _demo_experiment(out, recs, plan_out, experiment_out)
    if open_workbench:
        from cxagent.web import Settings

        settings = Settings.from_env()
        _serve(settings, _open_workbench(settings.db_url or default_url(out)), "127.0.0.1", port)


def _demo_experiment(data: Path, recs: list[Any], plan_out: Path, experiment_out: Path) -> None:
    """Of each incident's top fix, the one that gains the most CX points: its plan exported,
    its experiment rehearsed in the scenario engine."""
    from cxagent.experiments.plan import write_markdown
    from cxagent.experiments.run import status
    from cxagent.recommend.planning import plan_for
    from cxagent.store.db import default_url

    fixable = [r for r in recs if r.top is not None and r.top.estimate.delta["cx_score"] > 0]
    if not fixable:
        console.print("no fix to test: monitor, no action needed")
        return
    best = max(fixable, key=lambda r: r.top.estimate.delta["cx_score"])
    experiment = plan_for(best.frame, best.top, incident_id=best.incident_id)
    write_markdown(experiment, plan_out)
    console.print(f"wrote the experiment plan for '{best.top.action.title}' to {plan_out}")
    try:
        _rehearse(data, best.top.action, experiment, experiment_out, store_url=default_url(data))
    except CXAgentError as exc:  # a fix the engine cannot apply (a basket-size slice, say)
        console.print(f"no rehearsal: {exc}", highlight=False)
        return
    _print_status(status(experiment_out))


def _scenario(data: Path) -> tuple[dict[str, Any], Any]:
    """The generated scenario behind ``data``: its truth.json and spec."""
    from cxagent.data.scenario.spec import parse_spec

    truth_path = data / "truth.json"
    if not truth_path.exists():
        raise CXAgentError(
            f"--data: {data} is not a generated scenario (no truth.json); "
            "simulation needs the scenario engine"
        )
    truth = json.loads(truth_path.read_text())
    return truth, parse_spec(truth["spec"], source=str(truth_path))


def _rehearse(
    data: Path,
    action: Any,
    experiment: Any,
    out: Path,
    *,
    store_url: str,
    fails: bool = False,
    seed: int = 0,
) -> dt.datetime:
    """Run ``experiment`` (the plan of ``action``) in the scenario engine from the day after
    the data, phase by phase, into the experiment directory ``out``; returns its start."""
    from cxagent.experiments.run import simulate_plan
    from cxagent.recommend.in_engine import engine_fix, failing_fix

    truth, spec = _scenario(data)
    start: dt.datetime = spec.end_time
    fix = engine_fix(action, truth, start)
    if fix is None:
        raise CXAgentError(f"--rank: the engine cannot apply '{action.title}'")
    if fails:
        fix = failing_fix(fix)
    days = sum(p.min_days for p in experiment.phases)
    with console.status(f"rehearsing the experiment in the scenario engine ({days} days) ..."):
        simulate_plan(spec, experiment, fix, out, start=start, store_url=store_url, seed=seed)
    return start


def _print_truth(path: Path) -> None:
    """Show a generated scenario's planted causes: the answer key, not a finding."""
    truth = json.loads(path.read_text())
    table = RichTable(
        title=f"Planted causes in '{truth['scenario']}' (answer key, from truth.json)"
    )
    for col in ("cause", "scope", "from", "logged", "worst slice", "CX delta", "on-time delta"):
        table.add_column(col, no_wrap=col in ("cause", "from"))
    for iv in truth["interventions"]:
        cells = iv.get("effect", {}).get("cells", [])
        worst = cells[0] if cells else None
        table.add_row(
            iv["cause"],
            ", ".join(f"{k}={v}" for k, v in iv["scope"].items()) or "all",
            iv["start"].replace("T", " ")[:16],
            "yes" if iv["logged"] else "no",
            " / ".join(worst["slice"].values()) if worst else "-",
            f"{worst['delta']['cx_score']:+.1f}" if worst else "-",
            f"{100 * worst['delta']['on_time_rate']:+.1f} pts" if worst else "-",
        )
    Console().print(table)


ENGINE_HELP = (
    "duckdb (default) or spark (the project's spark extra and Java 17; where it runs: "
    "$CXAGENT_SPARK_MASTER, default local with 2 cores); default $CXAGENT_ENGINE."
)
EngineOpt = Annotated[str | None, typer.Option(help=ENGINE_HELP)]


def _use_engine(engine: str | None) -> None:
    """Make ``engine`` the one every connection of this run opens (checked first)."""
    from cxagent.engine.connection import ENGINE_ENV, check_engine

    if engine is None:
        return
    try:
        check_engine(engine, "--engine")
    except SpecError as exc:
        raise _fail(exc) from exc
    os.environ[ENGINE_ENV] = engine


def _store_url(data: Path, db: str | None) -> str | None:
    """--db as given; for a dataset on object storage without one, the default store in the
    working directory ($CXAGENT_DB_URL or ./cxagent.db): only reading goes to the bucket."""
    from cxagent.engine.storage import remote_url
    from cxagent.store.db import default_url

    if db is not None or remote_url(data) is None:
        return db
    return default_url()


def _agent_config(path: Path | None) -> Any:
    """The configuration: --config, else the file $CXAGENT_CONFIG names, else every default."""
    from cxagent.config import load_agent_config

    try:
        return load_agent_config(path)
    except CXAgentError as exc:
        raise _fail(exc) from exc


def _detect_config(cfg: Any, **options: Any) -> Any:
    """The file's detection settings with the options given on the command line over them (a
    --detector other than the file's drops the file's detector_params: another detector's)."""
    given = {name: value for name, value in options.items() if value is not None}
    if given.get("detector", cfg.detection.detector) != cfg.detection.detector:
        given["detector_params"] = {}
    return dataclasses.replace(cfg.detection.to_detect_config(), **given)


@app.command()
def detect(
    data: DataOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print the feed as JSON.")] = False,
    db: DbOpt = None,
    detector: Annotated[
        str | None,
        typer.Option(help="ewma, scan, zscore or bocpd (default: detection.detector, else ewma)."),
    ] = None,
    monitor_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Last days monitored window by window (default: detection.monitor_days, else 7).",
        ),
    ] = None,
    state: Annotated[
        Path | None, typer.Option(help="Detector state file: later runs process only new windows.")
    ] = None,
    engine: EngineOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Detect CX regressions per cohort and print the incident feed."""
    from cxagent.incidents import detect_incidents

    cfg = _agent_config(config)
    _use_engine(engine or cfg.data.engine)
    db = _store_url(data, db or cfg.store.url)
    try:
        settings = _detect_config(cfg, detector=detector, monitor_days=monitor_days)
        with cfg.activated():
            reports = detect_incidents(data, store_url=db, config=settings, state_path=state)
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps({"incidents": [r.as_dict() for r in reports]}, indent=2, default=str))
    else:
        _print_feed(reports)


@app.command()
def investigate(
    data: DataOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    db: DbOpt = None,
    bootstrap: BootstrapOpt = 100,
    slice_: Annotated[
        list[str] | None,
        typer.Option(
            "--slice",
            help="Investigate this slice instead of detected incidents, e.g. "
            "--slice region=SF --slice category=grocery (needs --since).",
        ),
    ] = None,
    since: Annotated[
        dt.datetime | None,
        typer.Option(help="With --slice: when the regression started (local time)."),
    ] = None,
    exchange_rate: ExchangeOpt = 1.0,
    engine_name: Annotated[
        str | None, typer.Option("--engine", help=EngineOpt.__metadata__[0].help)
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Detect incidents, then investigate each one: ranked causes with evidence, and the
    fixes recommended for them."""
    from cxagent.engine.connection import connect
    from cxagent.incidents import detect_incidents
    from cxagent.rca.investigate import investigate_reports, requested_report

    cfg = _agent_config(config)
    _use_engine(engine_name or cfg.data.engine)
    db = _store_url(data, db or cfg.store.url)
    try:
        if (slice_ is None) != (since is None):
            raise CXAgentError("--slice and --since go together")
        with cfg.activated():
            engine = connect(data)
            if slice_ is not None and since is not None:
                reports = [requested_report(engine, _parse_slice(slice_), since)]
            else:
                detection = cfg.detection.to_detect_config()
                reports = detect_incidents(data, store_url=db, config=detection)
            progress = track(
                reports, description="investigating root causes", console=console, disable=as_json
            )
            found = investigate_reports(
                engine, progress, n_bootstrap=bootstrap, recalibration=_recalibration(db, data)
            )
            recs = _recommended(engine, found, exchange_rate, bootstrap, as_json)
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        incidents = []
        for inv, rec in zip(found, recs, strict=True):
            d = inv.as_dict()
            d["recommendations"] = rec.as_dict()
            incidents.append(d)
        typer.echo(json.dumps({"incidents": incidents}, indent=2, default=str))
    else:
        if slice_ is None:
            _print_feed(reports)
        _print_investigations(found)
        _print_recommendations(recs)


def _investigated(
    data: Path, db: str | None, incident: str | None, bootstrap: int, quiet: bool
) -> tuple[Any, list[Any]]:
    """Detect incidents (or the one asked for) and investigate them, with a progress bar."""
    from cxagent.engine.connection import connect
    from cxagent.incidents import detect_incidents
    from cxagent.rca.investigate import investigate_reports

    db = _store_url(data, db)
    engine = connect(data)
    if incident is not None:  # as stored, whatever its status (resolved ones too)
        from cxagent.incidents.feed import stored_report
        from cxagent.store.db import default_url
        from cxagent.store.repository import NotFoundError

        try:
            reports = [stored_report(db or default_url(data), incident)]
        except NotFoundError:
            raise CXAgentError(
                f"--incident: no incident {incident!r} in the store of {data} "
                "(run `cxagent detect` first)"
            ) from None
    else:
        reports = detect_incidents(data, store_url=db)
    progress = track(
        reports, description="investigating root causes", console=console, disable=quiet
    )
    return engine, investigate_reports(
        engine, progress, n_bootstrap=bootstrap, recalibration=_recalibration(db, data)
    )


def _recommended(
    engine: Any, found: list[Any], exchange_rate: float, bootstrap: int, quiet: bool
) -> list[Any]:
    from cxagent.recommend.recommend import recommend as run

    progress = track(found, description="estimating fixes", console=console, disable=quiet)
    return [
        run(engine, inv, exchange_rate=exchange_rate, n_bootstrap=bootstrap) for inv in progress
    ]


config_app = typer.Typer(help="The agent's YAML configuration file.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="The configuration file (default: the one $CXAGENT_CONFIG names, else none).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate a configuration file: print every effective setting as YAML, or every problem
    with the file, line and key of each (exit status 2)."""
    from cxagent.config import check_config

    raise typer.Exit(check_config(file))


@app.command()
def recommend(
    data: DataOpt,
    incident: IncidentOpt = None,
    exchange_rate: ExchangeOpt = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    db: DbOpt = None,
    bootstrap: BootstrapOpt = 100,
) -> None:
    """Recommend fixes per incident: what-if CX gain and efficiency cost with 90% intervals,
    ranked by net benefit."""
    try:
        engine, found = _investigated(data, db, incident, bootstrap, as_json)
        recs = _recommended(engine, found, exchange_rate, bootstrap, as_json)
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps({"incidents": [r.as_dict() for r in recs]}, indent=2, default=str))
    else:
        _print_recommendations(recs)


RankOpt = Annotated[int, typer.Option(min=1, help="Which recommendation (1 = the top).")]


def _planned(
    data: Path,
    db: str | None,
    incident: str,
    rank: int,
    exchange_rate: float,
    bootstrap: int,
) -> tuple[Any, Any]:
    """The recommendation of ``rank`` for ``incident`` and its experiment plan."""
    from cxagent.recommend.planning import plan_for

    engine, found = _investigated(data, db, incident, bootstrap, False)
    (recs,) = _recommended(engine, found, exchange_rate, bootstrap, False)
    estimated = [r for r in recs.items if r.estimate is not None]
    if not estimated:
        raise CXAgentError(
            f"--incident: {incident} has no estimated fix to plan"
            + (f" ({recs.message})" if recs.message else "")
        )
    if rank > len(estimated):
        raise CXAgentError(f"--rank: {incident} has {len(estimated)} estimated fix(es)")
    chosen = estimated[rank - 1]
    return chosen, plan_for(recs.frame, chosen, incident_id=incident)


@app.command()
def plan(
    data: DataOpt,
    incident: Annotated[str, typer.Option(help="The incident id (see `cxagent detect`).")],
    out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("experiment-plan.md"),
    rank: RankOpt = 1,
    exchange_rate: ExchangeOpt = 1.0,
    db: DbOpt = None,
    bootstrap: BootstrapOpt = 100,
) -> None:
    """Write the experiment plan of a recommended fix to a markdown file."""
    from cxagent.experiments.plan import write_markdown

    try:
        chosen, experiment = _planned(data, db, incident, rank, exchange_rate, bootstrap)
        write_markdown(experiment, out)
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    console.print(f"wrote the plan for '{chosen.action.title}' to {out}")


@experiment_app.command("simulate")
def experiment_simulate(
    data: DataOpt,
    incident: Annotated[str, typer.Option(help="The incident id (see `cxagent detect`).")],
    out: Annotated[Path, typer.Option(help="Experiment directory to write.")],
    outcome: Annotated[
        str,
        typer.Option(
            help="'works': the fix as recommended; 'fails': deployed the wrong way round "
            "(to rehearse the rollback)."
        ),
    ] = "works",
    rank: RankOpt = 1,
    exchange_rate: ExchangeOpt = 1.0,
    seed: Annotated[int, typer.Option(min=0, help="Assignment seed.")] = 0,
    db: DbOpt = None,
    bootstrap: BootstrapOpt = 100,
) -> None:
    """Simulate the plan of a recommended fix in the scenario engine, from the day after the
    data, phase by phase (generated scenarios only: the engine rehearses the fix)."""
    from cxagent.store.db import default_url

    try:
        if outcome not in ("works", "fails"):
            raise CXAgentError(f"--outcome: expected 'works' or 'fails', got {outcome!r}")
        _scenario(data)  # before the investigation: a dataset the engine did not make fails fast
        chosen, experiment = _planned(data, db, incident, rank, exchange_rate, bootstrap)
        start = _rehearse(
            data,
            chosen.action,
            experiment,
            out,
            store_url=db or default_url(data),
            fails=outcome == "fails",
            seed=seed,
        )
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    console.print(
        f"simulated '{chosen.action.title}' ({outcome}) from {start:%Y-%m-%d} over "
        f"{len(experiment.phases)} phases in {out}; see `cxagent experiment status --experiment {out}`"
    )


@experiment_app.command("status")
def experiment_status(
    experiment: Annotated[Path, typer.Option(help="Experiment directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    db: DbOpt = None,
) -> None:
    """An experiment's progress against its plan, phase by phase, with always-valid
    intervals, SRM and guardrails; records the outcome on the incident."""
    from cxagent.experiments.run import status

    try:
        report = status(experiment, store_url=db)
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_status(report)


def _print_status(report: Any) -> None:
    table = RichTable(title=report.title)
    table.add_column("phase", min_width=10)
    table.add_column("day", no_wrap=True)
    table.add_column("CX change (95% always-valid)", min_width=14)
    table.add_column("guardrails", min_width=14)
    table.add_column("SRM p", no_wrap=True)
    table.add_column("next step", min_width=8)
    for p in report.phases:
        look = p.last
        if look is None:
            table.add_row(p.name, "-", "-", "", "", p.status)
            continue
        av = look.primary.always_valid
        guards = "\n".join(f"{g.name}: {g.state}" for g in look.guardrails)
        table.add_row(
            p.name,
            f"{look.day}/{p.planned_days}",
            f"{av.estimate:+.1f} ({_interval(av.lower, av.upper)})",
            guards,
            f"{look.srm.p_value:.3f}",
            f"{p.recommendation or p.status}",
        )
    Console().print(table)
    colour = {"resolved": "green", "rolled back": "red"}.get(report.status, "yellow")
    Console().print(f"[bold {colour}]{report.status}[/]", highlight=False)
    for line in report.evidence:
        Console().print(f"- {line}", highlight=False, soft_wrap=True)


def _interval(lo: float | None, hi: float | None, scale: float = 1.0, fmt: str = "+.1f") -> str:
    if lo is None or hi is None or not (abs(lo) < float("inf") and abs(hi) < float("inf")):
        return "-"
    return f"{scale * lo:{fmt}} to {scale * hi:{fmt}}"


def _print_recommendations(recs: list[Any]) -> None:
    for rec in recs:
        d = rec.as_dict()
        where = " + ".join(f"{k}={v}" for k, v in d["slice"].items())
        if d["message"]:
            Console().print(f"[bold]{d['incident_id']}[/] {where}: {d['message']}", soft_wrap=True)
            continue
        table = RichTable(title=f"Fixes for {d['incident_id']}: {where}")
        table.add_column("#", no_wrap=True)
        table.add_column("action", min_width=24)
        table.add_column("CX gain (90%)", min_width=9)
        table.add_column("efficiency (90%)", min_width=9)
        table.add_column("net", no_wrap=True)
        table.add_column("effort", no_wrap=True)
        for i, r in enumerate(d["recommendations"], start=1):
            e = r["estimate"]
            if e is None:
                table.add_row(
                    str(i),
                    f"{r['title']}\n[dim]{r['not_estimated']}[/]",
                    "-",
                    "-",
                    "-",
                    r["complexity"],
                )
                continue
            lo, hi = e["efficiency_change_interval"]
            table.add_row(
                str(i),
                r["title"],
                f"{e['cx_gain']:+.1f}\n({_interval(*e['cx_gain_interval'][:2])})",
                f"{100 * e['efficiency_change']:+.1f}%\n({_interval(lo, hi, 100.0)}%)",
                f"{r['net_benefit']:+.1f}",
                r["complexity"],
            )
        Console().print(table)


def _parse_slice(items: list[str]) -> dict[str, Any]:
    """``["region=SF", "store_id=1002"]`` -> ``{"region": "SF", "store_id": 1002}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise CXAgentError(f"--slice: expected KEY=VALUE, got {item!r}")
        out[key] = int(value) if key == "store_id" and value.isdigit() else value
    return out


def _print_investigations(found: list[Any]) -> None:
    for inv in found:
        d = inv.as_dict()
        where = " + ".join(f"{k}={v}" for k, v in inv.slice.items())
        kind = (
            "requested investigation"
            if d.get("detector") == "requested"
            else f"{d['severity']} incident {d.get('id') or ''}"
        )
        table = RichTable(title=f"{kind}: {where}")
        for col in ("cause", "confidence", "CX impact", "90% interval", "evidence"):
            table.add_column(col, no_wrap=col in ("cause", "confidence", "CX impact"))
        for c in d["causes"]:
            lo, hi = c["impact_interval"]
            table.add_row(
                c["cause"],
                f"{c['confidence']:.2f}",
                f"{c['impact']:+.1f}",
                f"{lo:+.1f} to {hi:+.1f}",
                "\n".join(f"- {e}" for e in c["evidence"]),
            )
        for r in d["ruled_out"]:
            table.add_row(f"[dim]{r['cause']}[/]", "-", "ruled out", "", f"[dim]{r['reason']}[/]")
        for name in d["not_testable"]:
            table.add_row(
                f"[dim]{name}[/]", "-", "not testable", "", "[dim]the data lacks its fields[/]"
            )
        Console().print(table)
        Console().print(d["narrative"], soft_wrap=True)


def _print_feed(reports: list[Any]) -> None:
    from cxagent.incidents import as_table

    rows = as_table(reports)
    table = RichTable(title=f"Incident feed ({len(rows)} incidents, most severe first)")
    columns = ["severity", "slice", "detected_at", "cx_score", "orders", "top_slice", "id"]
    for col in columns:
        table.add_column(col.replace("_", " "), no_wrap=col in ("severity", "detected_at", "id"))
    colour = {"high": "bold red", "medium": "yellow", "low": "dim"}
    for row in rows:
        table.add_row(
            *[
                f"[{colour.get(str(row['severity']), '')}]{row['severity']}[/]"
                if c == "severity"
                else str(row.get(c, ""))
                for c in columns
            ]
        )
    Console().print(table)
    if not rows:
        Console().print("no incidents: monitor, no action needed")


def _run_import(source: str, src: Path, out: Path, overwrite: bool) -> None:
    import importlib

    run = getattr(importlib.import_module(f"cxagent.data.importers.{source}"), f"import_{source}")
    try:
        manifest = run(src, out, overwrite=overwrite)
    except CXAgentError as exc:
        raise _fail(exc) from exc
    console.print(f"wrote {out} (missing: {manifest.missing_tables or 'none'})")


@import_app.command("olist")
def import_olist(
    src: Annotated[
        Path, typer.Argument(help="Olist folder (with full/ and sample_*/ subfolders).")
    ],
    out: OutOpt,
    overwrite: OverwriteOpt = False,
) -> None:
    """Import the Olist e-commerce tables."""
    _run_import("olist", src, out, overwrite)


@import_app.command("doordash")
def import_doordash(
    src: Annotated[Path, typer.Argument(help="DoorDash folder or historical_data CSV(.gz) file.")],
    out: OutOpt,
    overwrite: OverwriteOpt = False,
) -> None:
    """Import the DoorDash delivery-duration data."""
    _run_import("doordash", src, out, overwrite)


@app.command()
def serve(
    data: DataOpt,
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Recompute the stored views before serving.")
    ] = False,
    bootstrap: BootstrapOpt = 100,
    engine: EngineOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the web workbench and its JSON API over the stored views (see docs/web.md),
    computing them first when the store has none (with the configuration's detection
    settings and CX weights); in development, print the ML engineer's sign-in link."""
    from cxagent.store.db import default_url
    from cxagent.web import Settings

    cfg = _agent_config(config)
    _use_engine(engine or cfg.data.engine)
    db = db or cfg.store.url or _store_url(data, None)
    try:
        settings = Settings.from_env(db_url=db)
        url = settings.db_url or default_url(data)
        workbench = _open_workbench(url)
        if rebuild or workbench.get_analysis("overview") is None:
            with cfg.activated():
                _build_views(data, url, bootstrap, cfg.detection.to_detect_config())
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    _serve(settings, workbench, host, port)


def _open_workbench(url: str) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from cxagent.workbench.reader import Workbench

    try:
        return Workbench.from_url(url)
    except SQLAlchemyError as exc:
        raise CXAgentError(f"--db: cannot open the store at {url!r}: {exc}") from exc


def _build_views(data: Path, url: str, bootstrap: int, config: Any = None) -> None:
    """Detect, investigate, recommend and store every view, with progress bars."""
    from cxagent.workbench.build import build

    def progress(items: Any, description: str) -> Any:
        return track(items, description=description, console=console)

    console.print("computing the workbench views (detect, investigate, recommend) ...")
    build(data, store_url=url, n_bootstrap=bootstrap, progress=progress, config=config)


def _serve(settings: Any, workbench: Any, host: str, port: int) -> None:
    from cxagent.web import serve as run

    run(settings, workbench, host=host, port=port)


# --- feedback on incidents and causes (issue 9) --------------------------------------------------

alerts_app = typer.Typer(help="Alert channels: preview what a configuration would send.")
app.add_typer(alerts_app, name="alerts")
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="The agent's YAML configuration (default: $CXAGENT_CONFIG, if set)."
    ),
]


def _watch_setup(data: Path | None, config: Path | None, db: str | None) -> tuple[Any, Path, str]:
    """(the configuration, the dataset, the store URL): command-line options over the file."""
    from cxagent.store.db import default_url

    cfg = _agent_config(config)
    if data is None:
        if cfg.data.path is None:
            raise _fail(SpecError("--data: no dataset given (nor data.path in the configuration)"))
        data = Path(cfg.data.path)
    _use_engine(cfg.data.engine)
    url = db or cfg.store.url or _store_url(data, None) or default_url(data)
    return cfg, data, url


@app.command()
def watch(
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset (default: data.path).")
    ] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    interval: Annotated[
        str | None, typer.Option(help="Time between ticks, e.g. 15m, 1h (default: watch.interval).")
    ] = None,
    ticks: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many ticks (default: run until stopped)."),
    ] = None,
    investigate: Annotated[
        bool | None,
        typer.Option(
            "--investigate/--no-investigate",
            help="Investigate new and changed incidents (default: watch.investigate).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per tick.")] = False,
) -> None:
    """Watch the dataset: detect on new windows every interval, update incidents, investigate,
    alert the configured channels. Its state lives in the store: a restart goes on from the
    last tick. Stop with Ctrl-C (or SIGTERM): the tick in progress finishes first."""
    import signal
    import threading

    from cxagent.config.schema import parse_duration
    from cxagent.watch import TickReport, WatchSettings
    from cxagent.watch import watch as run_watch

    cfg, data, url = _watch_setup(data, config, db)
    try:
        every = parse_duration(interval).total_seconds() if interval else cfg.watch.interval_s
        settings = WatchSettings(
            interval_s=every,
            investigate=cfg.watch.investigate if investigate is None else investigate,
            workbench_url=None if cfg.workbench.base_url is None else str(cfg.workbench.base_url),
        )
        detect_config = cfg.detection.to_detect_config()
        cfg.check_env()  # every channel's secret is there before the first tick
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def report(r: TickReport) -> None:
        if as_json:
            typer.echo(json.dumps(r.as_dict(), default=str))
            return
        if r.error:
            console.print(f"[red]tick failed[/] ({escape(r.error)}); trying again next tick")
            return
        sent = sum(a["outcome"] == "sent" for a in r.alerts)
        failed = len(r.alerts) - sent
        console.print(
            f"tick {r.tick}: {r.windows} new windows (data to {r.data_until}), "
            f"{len(r.created)} new and {len(r.updated)} updated incidents, "
            f"{len(r.investigated)} investigated, {sent} alerts sent"
            + (f", [red]{failed} failed[/] (retried next tick)" if failed else "")
            + (f"; refit: {r.refit}" if r.refit else ""),
            highlight=False,
        )

    console.print(f"watching {data} every {every:g} s; store {url}", highlight=False)
    try:
        with cfg.activated():  # the configuration's CX weights, for every tick
            run_watch(
                data,
                url,
                detect_config,
                list(cfg.channels),
                settings=settings,
                max_ticks=ticks,
                stop=stop,
                on_tick=report,
            )
    except KeyboardInterrupt:
        console.print("stopped")
    except CXAgentError as exc:
        raise _fail(exc) from exc


@alerts_app.command("preview")
def alerts_preview(
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset (default: data.path).")
    ] = None,
    config: ConfigOpt = None,
    days: Annotated[int, typer.Option(min=1, help="Replay the last N days.")] = 14,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What the configuration's detectors would have raised over the last N days, by severity
    and per channel, before you save it. Nothing is stored and nothing is sent."""
    from cxagent.watch import preview

    cfg, data, _ = _watch_setup(data, config, None)
    try:
        found = preview(data, cfg.detection.to_detect_config(), list(cfg.channels), days=days)
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    counts = ", ".join(f"{n} {s}" for s, n in found["by_severity"].items())
    console.print(
        f"{len(found['incidents'])} incidents over {days} days ({counts}); "
        f"detector {found['detector']}, {found['from']} to {found['until']}",
        highlight=False,
    )
    for name, n in found["per_channel"].items():
        console.print(f"  channel {name}: {n} incidents would be sent", highlight=False)
    table = RichTable("severity", "slice", "detected", "CX change", "orders")
    for i in found["incidents"]:
        table.add_row(
            i["severity"],
            i["label"],
            i["detected_at"][:16],
            f"{i['delta']:+.1f}",
            str(i["affected_orders"]),
        )
    Console().print(table)


feedback_app = typer.Typer(
    help="Label incidents and their ranked causes; report the agent's precision and accuracy.",
    no_args_is_help=True,
)
app.add_typer(feedback_app, name="feedback")
FeedbackDataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Dataset directory: its store DATA/cxagent.db, unless --db is given."
    ),
]
ActorOpt = Annotated[
    str | None, typer.Option(help="Who gives the feedback, for the audit trail (default: $USER).")
]
NoteOpt = Annotated[str | None, typer.Option(help="A note for the audit trail.")]


def _recalibration(db: str | None, data: Path) -> Any:
    """The store's cause feedback as a recalibration of the shipped confidence model, or
    None when the store holds none (confidences then stay exactly the model's)."""
    from cxagent.store.db import default_url
    from cxagent.store.feedback import stored_recalibration

    return stored_recalibration(db or default_url(data))


def _feedback_store(db: str | None, data: Path | None) -> Any:
    """The session factory of the store named by --db, else $CXAGENT_DB_URL, else --data's."""
    from cxagent.store.db import DEFAULT_URL_ENV, default_url

    if db is None and data is None and not os.environ.get(DEFAULT_URL_ENV):
        raise CXAgentError(
            "--db: name the incident store (or give --data DIR, or set $CXAGENT_DB_URL)"
        )
    return _open_workbench(db or default_url(data)).factory


def _actor(actor: str | None) -> str:
    return (actor or os.environ.get("USER") or "engineer").strip()[:64] or "engineer"


@feedback_app.command("incident")
def feedback_incident(
    incident: Annotated[str, typer.Argument(help="The incident id (see `cxagent detect`).")],
    true_positive: Annotated[
        bool | None,
        typer.Option(
            "--true-positive/--false-positive",
            help="A real regression, or a false alarm (feeds detection precision).",
            show_default=False,
        ),
    ] = None,
    note: NoteOpt = None,
    actor: ActorOpt = None,
    db: DbOpt = None,
    data: FeedbackDataOpt = None,
) -> None:
    """Label an incident a true or a false positive."""
    from cxagent.store.feedback import label_incident

    try:
        if true_positive is None:
            raise CXAgentError("give --true-positive or --false-positive")
        factory = _feedback_store(db, data)
        label_incident(
            factory, incident, false_positive=not true_positive, actor=_actor(actor), note=note
        )
    except CXAgentError as exc:
        raise _fail(exc) from exc
    console.print(f"{incident}: labelled a {'true' if true_positive else 'false'} positive")


@feedback_app.command("cause")
def feedback_cause(
    incident: Annotated[str, typer.Argument(help="The incident id (see `cxagent detect`).")],
    cause: Annotated[
        str,
        typer.Argument(
            help="A ranked cause: batching_policy, prep_time_drift, dasher_shortage, "
            "eta_model_bias, inventory_drop or normal_variance."
        ),
    ],
    confirmed: Annotated[
        bool | None,
        typer.Option(
            "--confirmed/--wrong",
            help="The cause is right, or it is not (feeds cause accuracy and calibration).",
            show_default=False,
        ),
    ] = None,
    actual: Annotated[
        str | None,
        typer.Option(
            "--actual",
            help="With --wrong: what it actually was (a cause above, or 'other').",
        ),
    ] = None,
    note: NoteOpt = None,
    actor: ActorOpt = None,
    db: DbOpt = None,
    data: FeedbackDataOpt = None,
) -> None:
    """Mark a ranked cause of an incident confirmed or wrong (the latest verdict wins; every
    one is kept in the incident's audit trail)."""
    from cxagent.store.feedback import set_cause_feedback

    try:
        if confirmed is None:
            raise CXAgentError("give --confirmed or --wrong")
        factory = _feedback_store(db, data)
        stored = set_cause_feedback(
            factory,
            incident,
            cause=cause,
            verdict="confirmed" if confirmed else "wrong",
            actual_cause=actual,
            actor=_actor(actor),
            note=note,
        )
    except CXAgentError as exc:
        raise _fail(exc) from exc
    shown = (
        f" (ranked {stored['rank']}, confidence {stored['confidence']:.2f})"
        if stored["rank"] is not None and stored["confidence"] is not None
        else ""
    )
    actually = f"; actually {actual}" if actual else ""
    console.print(f"{incident}: {cause}{shown} marked {stored['verdict']}{actually}")


def _share(value: float | None, interval: list[float] | None = None) -> str:
    """A proportion as a percentage, with its interval when given ('-' when undefined)."""
    if value is None:
        return "-"
    return f"{value:.0%}" + (f" ({interval[0]:.0%} to {interval[1]:.0%})" if interval else "")


def _number(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else f"{value:{fmt}}"


@feedback_app.command("report")
def feedback_report(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    db: DbOpt = None,
    data: FeedbackDataOpt = None,
) -> None:
    """The agent's own record from the labels: detection precision (95% Wilson interval),
    top-1 cause accuracy, the calibration table and Brier score, by week of detection, and
    the recalibration of the confidence the labels support."""
    from cxagent.store.feedback import report

    try:
        found = report(_feedback_store(db, data))
    except CXAgentError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    out = Console()
    det, causes, recal = found["detection"], found["causes"], found["recalibration"]
    out.print(
        f"[bold]Detection precision[/]: {_share(det['precision'], det['interval'])} "
        f"of {det['labelled']} labelled incidents ({det['true_positives']} true, "
        f"{det['false_positives']} false positives; 95% Wilson interval)",
        highlight=False,
    )
    top1 = causes["top1"]
    out.print(
        f"[bold]Top-1 cause accuracy[/]: {_share(top1['accuracy'], top1['interval'])} of "
        f"{top1['incidents']} incidents whose first cause is labelled; "
        f"{causes['confirmed']} of {causes['labelled']} labelled causes confirmed; "
        f"Brier score {_number(causes['brier'])}, ECE {_number(causes['ece'])}",
        highlight=False,
    )
    weeks: dict[str, dict[str, Any]] = {}
    for row in det["by_week"]:
        weeks.setdefault(row["week"], {})["det"] = row
    for row in causes["by_week"]:
        weeks.setdefault(row["week"], {})["cause"] = row
    if weeks:
        table = RichTable(title="By week of detection")
        for col in ("week", "incidents labelled", "precision", "causes labelled", "top-1", "Brier"):
            table.add_column(col, no_wrap=True)
        for week in sorted(weeks):
            d, c = weeks[week].get("det"), weeks[week].get("cause")
            table.add_row(
                week,
                str(d["labelled"]) if d else "0",
                _share(d["precision"]) if d else "-",
                str(c["labelled"]) if c else "0",
                f"{_share(c['top1_accuracy'])} of {c['top1_incidents']}" if c else "-",
                _number(c["brier"]) if c else "-",
            )
        out.print(table)
    table = RichTable(title="Calibration: confidence shown against the confirmed rate")
    for col in ("confidence", "causes", "mean confidence", "confirmed", "95% interval"):
        table.add_column(col, no_wrap=True)
    for row in causes["calibration"]:
        lo, hi = row["bin"]
        iv = row["interval"]
        table.add_row(
            f"{lo:.0%}-{hi:.0%}",
            str(row["n"]),
            _share(row["mean_confidence"]),
            _share(row["confirmed_rate"]),
            f"{iv[0]:.0%} to {iv[1]:.0%}" if iv else "-",
        )
    out.print(table)
    if causes["actual_causes"]:
        named = ", ".join(f"{k} {v}" for k, v in causes["actual_causes"].items())
        out.print(f"Wrong causes were actually: {named}", highlight=False)
    out.print(
        f"[bold]Recalibration[/] of the confidence, p' = sigmoid(a + b logit(p)): "
        f"a = {recal['a']:+.3f} (sd {recal['a_sd']:.3f}), b = {recal['b']:.3f} "
        f"(sd {recal['b_sd']:.3f}) from n = {recal['n']} labelled causes "
        f"(prior: identity, sd {recal['prior_sd']})"
        + ("; not applied (no labels)" if recal["n"] == 0 else "; applied to new investigations"),
        highlight=False,
    )


# --- the storefront persona agent (issue 7) ------------------------------------------------------

storefront_app = typer.Typer(
    help="The storefront persona agent: demo shop, concierge widget and its HTTP service.",
    no_args_is_help=True,
)
app.add_typer(storefront_app, name="storefront")
StorefrontHostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
StorefrontPortOpt = Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")]
StorefrontDbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Experiment log URL (default: $CXAGENT_STOREFRONT_DB_URL or ./storefront.db).",
    ),
]
StorefrontRedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis", help="Redis URL (default: $CXAGENT_REDIS_URL; unset: in-process stream)."
    ),
]
HoldoutOpt = Annotated[
    float | None,
    typer.Option(min=0.0, max=0.99, help="Share of sessions in the control holdout (default 0.1)."),
]

ImpressionsOpt = Annotated[
    str | None,
    typer.Option(
        help="'reported': an impression is the page's impression event (the slot came into "
        "view); 'served': serving counts as the impression (default: "
        "$CXAGENT_STOREFRONT_IMPRESSIONS or reported)."
    ),
]


def _storefront(
    host: str,
    port: int,
    db: str | None,
    redis: str | None,
    holdout: float | None,
    seed: int,
    impressions: str | None = None,
) -> None:
    from cxagent.storefront.service import StorefrontSettings, serve

    try:
        settings = StorefrontSettings.from_env(
            db_url=db, redis_url=redis, holdout=holdout, impressions=impressions
        )
    except (CXAgentError, ValueError) as exc:
        raise _fail(exc) from exc
    serve(settings, host=host, port=port, seed_sessions=seed)


@storefront_app.command("serve")
def storefront_serve(
    host: StorefrontHostOpt = "127.0.0.1",
    port: StorefrontPortOpt = 8100,
    db: StorefrontDbOpt = None,
    redis: StorefrontRedisOpt = None,
    holdout: HoldoutOpt = None,
    impressions: ImpressionsOpt = None,
) -> None:
    """Serve the storefront service, demo shop and analytics (see docs/storefront.md)."""
    _storefront(host, port, db, redis, holdout, 0, impressions)


@storefront_app.command("demo")
def storefront_demo(
    host: StorefrontHostOpt = "127.0.0.1",
    port: StorefrontPortOpt = 8100,
    db: StorefrontDbOpt = None,
    sessions: Annotated[
        int, typer.Option(min=0, max=20000, help="Synthetic sessions to seed first.")
    ] = 400,
) -> None:
    """Seed synthetic sessions and decisions (so analytics has data), then serve in process."""
    _storefront(host, port, db, None, None, sessions)


def main() -> None:  # pragma: no cover - console entry
    app()
