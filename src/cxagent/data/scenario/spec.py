"""The scenario spec: a YAML document parsed once into typed, validated settings.

See ``docs/scenario-spec.md`` for every field. Errors name the field at fault, e.g.
``interventions[0].scope.daypart: 'brunch' is not one of breakfast, lunch, dinner, late_night``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxagent.data.cohorts import CATEGORIES, DAYPARTS, DEFAULT_REGIONS
from cxagent.errors import SpecError

CauseName = Literal[
    "batching_policy", "prep_time_drift", "dasher_shortage", "inventory_drop", "eta_model_bias"
]
CAUSES: tuple[str, ...] = CauseName.__args__  # type: ignore[attr-defined]
DEMO_SPEC = Path(__file__).with_name("demo.yaml")


class Scope(BaseModel):
    """Which orders an intervention touches; an omitted key means 'all'."""

    model_config = ConfigDict(extra="forbid")

    region: list[str] | None = None
    category: list[str] | None = None
    daypart: list[str] | None = None
    store: list[int] | None = None

    @field_validator("region", "category", "daypart", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("store", mode="before")
    @classmethod
    def _listify_int(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    @field_validator("category")
    @classmethod
    def _known_category(cls, v: list[str] | None) -> list[str] | None:
        for c in v or []:
            if c not in CATEGORIES:
                raise ValueError(f"{c!r} is not one of {', '.join(CATEGORIES)}")
        return v

    @field_validator("daypart")
    @classmethod
    def _known_daypart(cls, v: list[str] | None) -> list[str] | None:
        for d in v or []:
            if d not in DAYPARTS:
                raise ValueError(f"{d!r} is not one of {', '.join(DAYPARTS)}")
        return v

    def keys(self) -> list[str]:
        return [
            k for k in ("region", "category", "daypart", "store") if getattr(self, k) is not None
        ]

    def label(self) -> dict[str, Any]:
        """The scope as a slice: single values unwrapped, lists kept."""
        out: dict[str, Any] = {}
        for k in self.keys():
            v = getattr(self, k)
            out[k] = v[0] if len(v) == 1 else v
        return out


class Intervention(BaseModel):
    """A planted cause: what changes, where, when and how strongly."""

    model_config = ConfigDict(extra="forbid")

    cause: CauseName
    start: dt.datetime
    end: dt.datetime | None = None
    scope: Scope = Field(default_factory=Scope)
    magnitude: float = Field(1.0, gt=0.0, le=3.0)
    logged: bool = True

    @model_validator(mode="after")
    def _check(self) -> Intervention:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.cause == "dasher_shortage" and set(self.scope.keys()) - {"region", "daypart"}:
            raise ValueError(
                "dasher_shortage acts on the courier pool, so its scope may name only region and daypart"
            )
        return self


class ScenarioSpec(BaseModel):
    """A whole scenario."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    seed: int = Field(0, ge=0)
    start: dt.date
    days: int = Field(gt=0, le=3660)
    orders_per_day: int = Field(gt=0, le=5_000_000)
    regions: list[str] = Field(default_factory=lambda: list(DEFAULT_REGIONS), min_length=1)
    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES), min_length=1)
    interventions: list[Intervention] = Field(default_factory=list)
    background_changes: int = Field(
        3, ge=0, le=50, description="Logged changes with no effect, as in any real change log."
    )

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("regions must be distinct")
        for r in v:
            if not r or not r.replace("_", "").isalnum():
                raise ValueError(f"region {r!r} must be a short alphanumeric code")
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: list[str]) -> list[str]:
        for c in v:
            if c not in CATEGORIES:
                raise ValueError(f"{c!r} is not one of {', '.join(CATEGORIES)}")
        if len(set(v)) != len(v):
            raise ValueError("categories must be distinct")
        return v

    @model_validator(mode="after")
    def _scopes_within_world(self) -> ScenarioSpec:
        end = self.end_time
        for i, iv in enumerate(self.interventions):
            where = f"interventions[{i}]"
            for r in iv.scope.region or []:
                if r not in self.regions:
                    raise ValueError(
                        f"{where}.scope.region: {r!r} is not in regions {self.regions}"
                    )
            for c in iv.scope.category or []:
                if c not in self.categories:
                    raise ValueError(
                        f"{where}.scope.category: {c!r} is not in categories {self.categories}"
                    )
            if not (dt.datetime.combine(self.start, dt.time()) <= iv.start < end):
                raise ValueError(
                    f"{where}.start: {iv.start} is outside the scenario ({self.start} + {self.days} days)"
                )
        return self

    @property
    def start_time(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time())

    @property
    def end_time(self) -> dt.datetime:
        return self.start_time + dt.timedelta(days=self.days)

    @property
    def dates(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=d) for d in range(self.days)]


def _loc(err: Any) -> str:
    parts: list[str] = []
    for p in err["loc"]:
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]" if parts else f"[{p}]"
        elif p in CAUSES or p in {"function-after[_check(), Intervention]"}:
            continue
        else:
            parts.append(str(p))
    return ".".join(parts)


def parse_spec(raw: Any, *, source: str = "<spec>") -> ScenarioSpec:
    """Validate a spec given as a mapping; raises SpecError naming the field."""
    if not isinstance(raw, dict):
        raise SpecError("a scenario spec must be a mapping of fields", source=source)
    try:
        return ScenarioSpec.model_validate(raw)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            loc = _loc(err)
            msg = err["msg"].removeprefix("Value error, ")
            msgs.append(f"{loc}: {msg}" if loc else msg)
        raise SpecError("; ".join(msgs), source=source) from None


def load_spec(path: Path | str) -> ScenarioSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    if not path.exists():
        raise SpecError("spec file not found", source=str(path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML ({exc})", source=str(path)) from None
    return parse_spec(raw, source=str(path))
