"""The agent's configuration: one typed, validated object per section of the YAML file.

Every model forbids unknown keys (a misspelt key is an error, never silently ignored) and is
strict about types (``"7"`` is not a number, ``yes`` is not ``true``). ``docs/configuration.md``
documents every setting; ``tests/test_config.py`` fails when one is missing there.

Sections: ``data`` (the dataset and the engine), ``store`` (incident store, Redis), ``metrics``
(CX Score weights), ``detection`` (every ``DetectConfig`` setting), ``watch`` (the loop's
schedule), ``channels`` (alert channels: slack, webhook, email) and ``workbench``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import os
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from cxagent.alerts.settings import (
    CHANNEL_KINDS,
    Channel,
    ChannelBase,
    SlackChannel,
    duplicate_name,
    missing_secrets,
)
from cxagent.config.errors import ConfigError, Problem
from cxagent.errors import SpecError
from cxagent.fields import FieldProblem, HttpUrl, NonEmpty, Settings, at_least
from cxagent.metrics.definitions import DEFAULT_COMPONENTS, Component, using_components

if TYPE_CHECKING:
    from cxagent.incidents.config import DetectConfig


class Section(Settings):
    """Base of every section: unknown keys are errors, types are strict, values final."""


# --- durations -------------------------------------------------------------------------------

_UNITS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION: Final = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
MIN_WATCH_INTERVAL: Final = dt.timedelta(seconds=10)


def parse_duration(value: object) -> dt.timedelta:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"2d"``, ``"1h30m"``, ``"1.5h"`` as a timedelta (units
    d, h, m, s, largest first, each at most once). A bare number is refused: its unit would be
    a guess. Raises ValueError with the accepted forms."""
    if isinstance(value, dt.timedelta):
        return value
    hint = "a duration is a number with a unit (s, m, h, d), like '90s', '15m', '1h' or '1h30m'"
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"{hint}; got the bare number {value!r} (did you mean '{value}s'?)")
        raise ValueError(f"{hint}; got {value!r}")
    text = value.strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{hint}; got {value!r}")
    seconds = sum(float(v) * _UNITS[u] for u, v in match.groupdict().items() if v is not None)
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """The string ``parse_duration`` reads back as ``value``: ``"15m"``, ``"1h30m"``, ``"90s"``
    is written ``"1m30s"``."""
    seconds = value.total_seconds()
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m"):
        count = int(seconds // _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
            seconds -= count * _UNITS[unit]
    if seconds > 1e-9:
        parts.append(f"{round(seconds, 6):g}s")
    return "".join(parts)


# --- paths ------------------------------------------------------------------------------------


def _resolve(value: str | None, base_dir: Path | None) -> str | None:
    """A local path made absolute against ``base_dir`` (the config file's folder); URLs
    (``scheme://...``) and absolute paths are kept as written."""
    if value is None or "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


# --- data, store -----------------------------------------------------------------------------


class DataSection(Section):
    """Where the dataset is and which engine reads it."""

    path: NonEmpty | None = None
    engine: Literal["duckdb", "spark"] | None = None
    spark_master: NonEmpty | None = None

    @property
    def is_url(self) -> bool:
        return self.path is not None and "://" in self.path

    @property
    def local_path(self) -> Path | None:
        """The dataset directory, when ``path`` is a local path (not a URL)."""
        return None if self.path is None or self.is_url else Path(self.path).expanduser()


class StoreSection(Section):
    """The incident store and the optional Redis."""

    url: NonEmpty | None = None
    redis_url: NonEmpty | None = None

    @field_validator("url")
    @classmethod
    def _sqlalchemy_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "is not a SQLAlchemy URL (e.g. sqlite:////var/lib/cxagent/cxagent.db or "
                "postgresql+psycopg://cxagent@db.internal/cxagent)"
            ) from None
        if url.password:
            raise ValueError(
                "holds a password; secrets never live in the file: use PGPASSWORD or "
                "~/.pgpass for PostgreSQL, or set the whole URL in $CXAGENT_DB_URL instead"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            parts = urlsplit(value)
            password = parts.password
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if password:
            raise ValueError(
                "holds a password; secrets never live in the file: set the whole URL in "
                "$CXAGENT_REDIS_URL instead"
            )
        return value

    def resolved_url(self, data_dir: Path | str | None = None) -> str:
        """``url``, else ``$CXAGENT_DB_URL``, else the SQLite file ``cxagent.db`` in
        ``data_dir`` (what the command line uses without ``--db``)."""
        if self.url is not None:
            return self.url
        from cxagent.store.db import default_url

        return default_url(data_dir)

    def resolved_redis_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """``redis_url``, else ``$CXAGENT_REDIS_URL``, else None (in-process stream)."""
        env = os.environ if environ is None else environ
        return self.redis_url or env.get("CXAGENT_REDIS_URL") or None


# --- metrics ---------------------------------------------------------------------------------

DEFAULT_WEIGHTS: Final = {c.name: c.weight for c in DEFAULT_COMPONENTS}
WEIGHT_SUM_TOLERANCE: Final = 1e-3


class CXWeights(Section):
    """The CX Score's weight per component; an omitted component keeps its default weight.

    The score is a weighted mean of components scored 0-100, so the weights are shares of the
    score and must sum to 1 (within 0.001; they are then rescaled to exactly 1). Code that
    turns a component's change into CX points takes each weight as that share. A weight of 0
    leaves a component out.
    """

    on_time: float = Field(default=DEFAULT_WEIGHTS["on_time"], ge=0)
    item_accuracy: float = Field(default=DEFAULT_WEIGHTS["item_accuracy"], ge=0)
    cancellation: float = Field(default=DEFAULT_WEIGHTS["cancellation"], ge=0)
    refund: float = Field(default=DEFAULT_WEIGHTS["refund"], ge=0)
    support_contact: float = Field(default=DEFAULT_WEIGHTS["support_contact"], ge=0)
    rating: float = Field(default=DEFAULT_WEIGHTS["rating"], ge=0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> CXWeights:
        weights = self.weights(normalise=False)
        total = sum(weights.values())
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            terms = " + ".join(f"{k} {v:g}" for k, v in weights.items())
            raise ValueError(
                f"must sum to 1 (each weight is a share of the CX Score), got {total:g} = {terms}"
            )
        return self

    def weights(self, *, normalise: bool = True) -> dict[str, float]:
        """Component name -> weight, in the score's order (rescaled to sum to exactly 1)."""
        raw = {name: float(getattr(self, name)) for name in DEFAULT_WEIGHTS}
        if not normalise:
            return raw
        total = sum(raw.values())
        return {k: v / total for k, v in raw.items()}

    def components(self) -> tuple[Component, ...]:
        """The components ``CXStats.metrics`` and ``SliceSeries.cx_score`` take: the default
        ones (the same object) when the weights are the defaults, else copies with these
        weights (worst and best values unchanged)."""
        weights = self.weights()
        if all(abs(weights[c.name] - c.weight) < 1e-12 for c in DEFAULT_COMPONENTS):
            return DEFAULT_COMPONENTS
        return tuple(replace(c, weight=weights[c.name]) for c in DEFAULT_COMPONENTS)


class MetricsSection(Section):
    """How the CX Score weighs its components."""

    cx_weights: CXWeights = Field(default_factory=CXWeights)

    def components(self) -> tuple[Component, ...]:
        return self.cx_weights.components()


def weighted_components(weights: Mapping[str, float] | None = None) -> tuple[Component, ...]:
    """The CX Score's components with ``weights`` (component -> weight; omitted ones keep
    their defaults), validated as ``metrics.cx_weights`` is; ``DEFAULT_COMPONENTS`` for None."""
    if weights is None:
        return DEFAULT_COMPONENTS
    from pydantic import ValidationError

    from cxagent.config.load import problems_of

    raw = {"metrics": {"cx_weights": dict(weights)}}
    try:
        return AgentConfig.model_validate(raw).metrics.components()
    except ValidationError as exc:
        raise ConfigError(problems_of(exc)) from None


# --- detection -------------------------------------------------------------------------------


class DetectionSection(Section):
    """Every setting of ``cxagent.incidents.DetectConfig``, with the same defaults.

    The checks ``DetectConfig`` makes are repeated here, so that one pass reports every
    problem of the file; ``to_detect_config`` still names the key when ``DetectConfig`` (or the
    detector, for ``detector_params``) refuses a value, e.g. a detector that is not registered.
    """

    detector: NonEmpty = "ewma"
    detector_params: dict[str, Any] = Field(default_factory=dict)
    own_history_lam: float | None = Field(default=None, gt=0, le=1)
    monitor_days: int = Field(default=7, ge=1)
    history_days: int = Field(default=28, ge=1)
    min_history_days: int = 14
    period: int = 4
    monitor_from: dt.datetime | None = Field(default=None, strict=False)
    fdr_alpha: float = 0.01
    min_trials: float = Field(default=100.0, ge=0)
    min_excess: float = Field(default=10.0, ge=0)
    shock_edges: list[float] = Field(default_factory=lambda: [1.25, 2.0, 4.0])
    residual_alpha: float = Field(default=0.01, gt=0, lt=1)
    high_points: float = Field(default=5.0, ge=0)
    high_impact: float = Field(default=0.5, ge=0)
    medium_points: float = Field(default=2.0, ge=0)
    medium_impact: float = Field(default=0.1, ge=0)
    top_slices: int = Field(default=8, ge=1)
    driver_checks: bool = True
    driver_z: float = Field(default=7.0, gt=0)
    supply_driver_z: float = Field(default=5.5, gt=0)
    driver_outcome_z: float = Field(default=3.0, gt=0)

    @field_validator("fdr_alpha")
    @classmethod
    def _level(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"must lie in (0, 1), got {value:g}")
        return value

    @field_validator("min_history_days")
    @classmethod
    def _enough_history(cls, value: int) -> int:
        if value < 7:
            raise ValueError(f"must be >= 7 (a week is needed to calibrate), got {value}")
        return value

    @field_validator("period")
    @classmethod
    def _period(cls, value: int) -> int:
        if value not in (4, 28):
            raise ValueError(f"must be 4 (daypart of day) or 28 (daypart of week), got {value}")
        return value

    @field_validator("monitor_from", mode="before")
    @classmethod
    def _not_a_number(cls, value: object) -> object:
        if isinstance(value, int | float):  # pydantic would read it as Unix time
            raise ValueError(f"must be a date and time like 2024-01-03 16:00, got {value!r}")
        return value

    @field_validator("monitor_from")
    @classmethod
    def _naive(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            raise ValueError("must be a wall-clock time without a time zone, like the data")
        return value

    @field_validator("shock_edges")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        for i, edge in enumerate(value):
            if edge <= 0:
                raise FieldProblem((i,), f"must be > 0, got {edge}")
            if i and edge <= value[i - 1]:
                raise FieldProblem((i,), f"must be above the edge before it ({value[i - 1]})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DetectionSection:
        at_least("history_days", self.history_days, "min_history_days", self.min_history_days)
        at_least("high_points", self.high_points, "medium_points", self.medium_points)
        at_least("high_impact", self.high_impact, "medium_impact", self.medium_impact)
        return self

    def to_detect_config(self) -> DetectConfig:
        """The pipeline's ``DetectConfig``; its refusals (and the detector's, for
        ``detector_params``) become a ConfigError naming the ``detection.*`` key."""
        from cxagent.incidents.config import DetectConfig

        values = self.model_dump()
        values["shock_edges"] = tuple(self.shock_edges)
        values["detector_params"] = dict(self.detector_params)
        try:
            config = DetectConfig(**values)
        except SpecError as exc:
            name, sep, message = str(exc).partition(": ")
            if sep and name in type(self).model_fields:
                raise ConfigError(Problem(f"detection.{name}", message)) from None
            raise ConfigError(Problem("detection", str(exc))) from None
        _check_detector_params(config.detector, self.detector_params, config.detector_kwargs())
        return config


def _detector_class(name: str) -> type:
    from cxagent.detect import Detector

    stack: list[type] = [Detector]
    while stack:
        cls = stack.pop()
        if getattr(cls, "name", None) == name and cls is not Detector:
            return cls
        stack.extend(cls.__subclasses__())
    raise ConfigError(Problem("detection.detector", f"{name!r} is not a registered detector"))


def _check_detector_params(detector: str, given: Mapping[str, Any], merged: dict[str, Any]) -> None:
    """Unknown parameters and values the detector refuses, each naming its key."""
    import difflib

    from cxagent.detect import get_detector

    cls = _detector_class(detector)
    signature = inspect.signature(cls)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    allowed = sorted(
        n
        for n, p in signature.parameters.items()
        if n not in ("self", "direction") and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )
    problems = []
    for key in given:
        if key == "direction":
            problems.append(
                Problem(
                    "detection.detector_params.direction",
                    "is set by the pipeline (always 'increase': a rise in a bad-event rate)",
                )
            )
        elif not accepts_any and key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(
                Problem(
                    f"detection.detector_params.{key}",
                    f"not a parameter of {detector}; {hint}its parameters: {', '.join(allowed)}",
                )
            )
    if problems:
        raise ConfigError(problems)
    try:
        get_detector(detector, direction="increase", **merged)
    except (TypeError, ValueError) as exc:
        name, _, rest = str(exc).partition(" ")
        if name in given and rest:
            raise ConfigError(Problem(f"detection.detector_params.{name}", rest)) from None
        raise ConfigError(Problem("detection.detector_params", str(exc))) from None


# --- watch -----------------------------------------------------------------------------------


class WatchSection(Section):
    """The watch loop: how often it looks for new data and what it does then."""

    interval: dt.timedelta = dt.timedelta(minutes=15)
    investigate: bool = True

    @field_validator("interval", mode="before")
    @classmethod
    def _parse_interval(cls, value: object) -> dt.timedelta:
        interval = parse_duration(value)
        if interval < MIN_WATCH_INTERVAL:
            raise ValueError(
                f"must be at least {format_duration(MIN_WATCH_INTERVAL)}, got {value!r}"
            )
        return interval

    @field_serializer("interval")
    def _write_interval(self, value: dt.timedelta) -> str:
        return format_duration(value)

    @property
    def interval_s(self) -> float:
        return self.interval.total_seconds()


# --- workbench, the whole file ---------------------------------------------------------------


class WorkbenchSection(Section):
    """The web workbench, as alert messages link to it."""

    base_url: HttpUrl | None = None

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value is not None else None

    def incident_url(self, incident_id: str) -> str | None:
        """The incident's page on the workbench, or None without ``base_url``."""
        return f"{self.base_url}/incidents/{incident_id}" if self.base_url else None


class AgentConfig(Section):
    """The whole configuration file; every section is optional (its defaults apply)."""

    data: DataSection = Field(default_factory=DataSection)
    store: StoreSection = Field(default_factory=StoreSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    detection: DetectionSection = Field(default_factory=DetectionSection)
    watch: WatchSection = Field(default_factory=WatchSection)
    channels: list[Channel] = Field(default_factory=list)
    workbench: WorkbenchSection = Field(default_factory=WorkbenchSection)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, value: Any) -> Any:
        """``detection:`` with nothing under it (YAML null) means the defaults."""
        if isinstance(value, dict):
            value = dict(value)
            for name in cls.model_fields:
                if name in value and value[name] is None:
                    value[name] = [] if name == "channels" else {}
        return value

    @model_validator(mode="after")
    def _unique_channel_names(self) -> AgentConfig:
        found = duplicate_name(self.channels)
        if found is not None:
            index, message = found
            raise FieldProblem(("channels", index, "name"), message)
        return self

    def resolve_paths(self, base_dir: Path | None) -> AgentConfig:
        """A relative local ``data.path`` made absolute against ``base_dir``, the
        configuration file's folder; ``~`` expanded."""
        data = self.data.model_copy(update={"path": _resolve(self.data.path, base_dir)})
        return self.model_copy(update={"data": data})

    def channel(self, name: str) -> ChannelBase:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def check_env(self, environ: Mapping[str, str] | None = None) -> None:
        """ConfigError naming every ``channels[i].*_env`` whose variable is unset: call it at
        start-up, so a missing secret fails then, not at the first alert."""
        problems = [
            Problem(f"channels[{i}].{field}", f"environment variable {var} is not set")
            for i, _, field, var in missing_secrets(self.channels, environ)
        ]
        if problems:
            raise ConfigError(problems)

    @contextlib.contextmanager
    def activated(self) -> Iterator[AgentConfig]:
        """Run the block with this configuration's run-wide settings in force: the CX Score's
        components with ``metrics.cx_weights`` (``cxagent.metrics.definitions.cx_components``
        returns them inside, on this thread)."""
        with using_components(self.metrics.components()):
            yield self


# --- the settings, as the documentation lists them -------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One documented key: ``detection.fdr_alpha``, ``channels[].url`` (``kind`` names the
    channel kind of a kind-specific channel field, None elsewhere)."""

    key: str
    kind: str | None
    model: type[BaseModel]
    name: str
    field: FieldInfo


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``annotation`` (``X``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = section_model(arg)
            if found is not None:
                return found
    return None


def _walk(model: type[BaseModel], prefix: str) -> Iterator[Setting]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield Setting(key, None, model, name, field)
        if model is AgentConfig and name == "channels":
            yield from _channel_settings(f"{key}[].")
            continue
        nested = section_model(field.annotation)
        if nested is not None:
            yield from _walk(nested, f"{key}.")


def _channel_settings(prefix: str) -> Iterator[Setting]:
    common = set.intersection(*(set(m.model_fields) for m in CHANNEL_KINDS.values()))
    for name, field in SlackChannel.model_fields.items():
        if name in common:
            yield Setting(f"{prefix}{name}", None, ChannelBase, name, field)
    for kind, model in CHANNEL_KINDS.items():
        for name, field in model.model_fields.items():
            if name not in common:
                yield Setting(f"{prefix}{name}", kind, model, name, field)


def settings() -> list[Setting]:
    """Every key of the configuration file, sections first then their fields, recursively
    (each channel kind's own fields separately)."""
    return list(_walk(AgentConfig, ""))
