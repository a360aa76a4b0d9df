"""Find, read and validate the agent's YAML configuration file.

Every problem becomes a ``ConfigError`` line naming the file, the line and the dotted key:
``agent.yaml:7: detection.fdr_alpha: must lie in (0, 1), got 1.5``,
``agent.yaml:31: channels[1].url: field required``. YAML syntax errors give line and column,
a key written twice is an error (YAML would silently keep the last one), and an unknown key
suggests the closest known one.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError

from cxagent.alerts.settings import CHANNEL_KINDS, ChannelBase
from cxagent.config.errors import ConfigError, Problem
from cxagent.config.schema import AgentConfig, section_model
from cxagent.fields import FieldProblem

CONFIG_ENV: Final = "CXAGENT_CONFIG"
SECTIONS: Final = tuple(AgentConfig.model_fields)
_CHANNELS: Final = object()  # the walk is inside the channel list
_CHANNEL: Final = object()  # ... at one channel, before its kind is known

# --- YAML ------------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: yaml.Mark, again: yaml.Mark) -> None:
        self.key, self.first, self.again = key, first, again
        super().__init__(key)


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], yaml.Mark] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise _DuplicateKey(key_node.value, seen[ident], key_node.start_mark)
                seen[ident] = key_node.start_mark
        return super().construct_mapping(node, deep)  # type: ignore[arg-type]


def _parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _DuplicateKey as dup:
        raise ConfigError(
            Problem(
                "",
                f"key '{dup.key}' is written twice in the same mapping (first on line "
                f"{dup.first.line + 1}); YAML would silently keep only the last one",
                dup.again.line + 1,
                dup.again.column + 1,
            ),
            source=source,
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(
            Problem(
                "",
                f"not valid YAML: {problem}{context}",
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
            ),
            source=source,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    return node, data


def _locate(root: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the value at ``path`` (or of the deepest mapping or list on the
    way to it, for a key that is missing)."""
    if root is None:
        return None
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    node = value_node
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
        else:
            break
    return int(node.start_mark.line) + 1


# --- pydantic's errors, in the file's terms ----------------------------------------------------


def dotted(path: Sequence[str | int]) -> str:
    """``("channels", 1, "url")`` -> ``channels[1].url``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _undotted(key: str) -> list[str | int]:
    """``channels[1].url`` -> ``["channels", 1, "url"]``."""
    path: list[str | int] = []
    for piece in key.split(".") if key else []:
        name, *indexes = piece.split("[")
        if name:
            path.append(name)
        for index in indexes:
            text = index.rstrip("]")
            path.append(int(text) if text.isdigit() else text)
    return path


def _walk(loc: Sequence[str | int]) -> tuple[list[str | int], Any]:
    """``loc`` as the file names it (channel kind tags dropped) and the model at its end
    (None below a plain value)."""
    path: list[str | int] = []
    here: Any = AgentConfig
    for part in loc:
        if here is _CHANNELS:
            path.append(part)
            here = _CHANNEL if isinstance(part, int) else None
        elif here is _CHANNEL:
            here = CHANNEL_KINDS.get(str(part))  # the discriminator's tag: not a key
            if here is None:
                path.append(part)
        elif isinstance(here, type) and issubclass(here, BaseModel):
            path.append(part)
            if here is AgentConfig and part == "channels":
                here = _CHANNELS
            else:
                field = here.model_fields.get(str(part))
                here = section_model(field.annotation) if field is not None else None
        else:
            path.append(part)
            here = None
    return path, here


def _show(value: Any) -> str:
    """A value as the YAML file wrote it."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _unknown_key(key: str, model: Any) -> str:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "unknown key"
    known = list(model.model_fields)
    where = ""
    if issubclass(model, ChannelBase):
        kind = model.model_fields["kind"].default
        where = f" for {'an' if kind[0] in 'aeiou' else 'a'} {kind} channel"
    if f"{key}_env" in known:
        return (
            f"unknown key{where}: secrets never live in the file; put it in an environment "
            f"variable and name that variable in {key}_env"
        )
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key{where}; did you mean '{close[0]}'?"
    return f"unknown key{where}; known keys: {', '.join(known)}"


_COMPARISONS: Final = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}
_TYPES: Final = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "datetime_type": "a date and time like 2024-01-03 16:00",
    "datetime_parsing": "a date and time like 2024-01-03 16:00",
    "datetime_from_date_parsing": "a date and time like 2024-01-03 16:00",
}


def _problem(err: Mapping[str, Any], root: yaml.Node | None) -> Problem:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    path, model = _walk(err["loc"])
    # never echo what may be a secret (URLs, *_env values)
    last = str(path[-1]) if path else ""
    secret = last.endswith("_env") or last.endswith("url")
    got = "" if secret else f", got {_show(value)}"
    if kind == "missing":
        message = "field required"
    elif kind == "invalid_key":
        path[-1] = str(path[-1])
        message = "unknown key (keys are names, not numbers)"
    elif kind == "extra_forbidden":
        _, parent = _walk(err["loc"][:-1])
        message = _unknown_key(last, parent)
    elif kind in _COMPARISONS:
        op, name = _COMPARISONS[kind]
        limit = ctx.get(name)
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
        message = f"must be {op} {shown}{got}"
    elif kind in _TYPES:
        message = f"must be {_TYPES[kind]}{got}"
    elif kind == "literal_error":
        message = f"{_show(value)} is not one of {ctx.get('expected')}"
    elif kind == "too_short":
        size = ctx.get("min_length", 1)
        message = "must not be empty" if size == 1 else f"needs at least {size} items"
    elif kind == "union_tag_not_found":
        path.append("kind")
        message = f"field required: one of {', '.join(CHANNEL_KINDS)}"
    elif kind == "union_tag_invalid":
        path.append("kind")
        message = f"{_show(ctx.get('tag'))} is not one of {', '.join(CHANNEL_KINDS)}"
    elif kind in ("value_error", "assertion_error"):
        error = ctx.get("error")
        if isinstance(error, FieldProblem):
            path.extend(error.path)
        message = str(error) if error is not None else err["msg"].removeprefix("Value error, ")
    else:
        text = str(err["msg"])
        message = (text[:1].lower() + text[1:]) + got
    return Problem(dotted(path), message, _locate(root, path))


def problems_of(exc: ValidationError, root: yaml.Node | None = None) -> list[Problem]:
    """Each of pydantic's errors as a Problem naming the dotted key (and its line in the
    file whose node tree is ``root``)."""
    return [_problem(err, root) for err in exc.errors()]


# --- reading a configuration -----------------------------------------------------------------


def _validate(raw: Any, source: str, root: yaml.Node | None, base_dir: Path | None) -> AgentConfig:
    if not isinstance(raw, dict):
        what = _show(raw) if not isinstance(raw, str) else f"the text {raw[:40]!r}"
        raise ConfigError(
            Problem(
                "",
                f"the top level must be a mapping of sections ({', '.join(SECTIONS)}), got {what}",
                _locate(root, []),
            ),
            source=source,
        )
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_of(exc, root), source=source) from None
    try:
        config.detection.to_detect_config()
    except ConfigError as exc:
        located = [
            Problem(p.key, p.message, _locate(root, _undotted(p.key)) if p.key else None)
            for p in exc.problems
        ]
        raise ConfigError(located, source=source) from None
    return config.resolve_paths(base_dir) if base_dir is not None else config


def validate_config(
    raw: Any, *, source: str = "<config>", base_dir: Path | str | None = None
) -> AgentConfig:
    """The configuration in ``raw`` (the parsed YAML: a mapping of sections), validated,
    with ``DetectConfig``'s own checks; relative paths resolved against ``base_dir`` when
    given. Raises ConfigError naming ``source`` and each key at fault."""
    return _validate(raw, source, None, Path(base_dir) if base_dir is not None else None)


def parse_config(
    text: str, *, source: str = "<config>", base_dir: Path | str | None = None
) -> AgentConfig:
    """The configuration written in the YAML ``text``; errors give the line of each key."""
    root, raw = _parse_yaml(text, source)
    if raw is None:
        raise ConfigError(
            Problem("", "the file holds no settings; write {} to run on every default", 1),
            source=source,
        )
    return _validate(raw, source, root, Path(base_dir) if base_dir is not None else None)


def load_config(path: Path | str) -> AgentConfig:
    """Read and validate the configuration file at ``path``. Relative paths in it
    (``data.path``) is relative to the file's folder."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("configuration file not found", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=source) from None
    return parse_config(text, source=source, base_dir=path.parent.resolve())


def find_config(
    explicit: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The configuration file to use: ``explicit`` (a command-line option), else
    ``$CXAGENT_CONFIG``, else None (every default applies; no file is searched for).
    A file named but missing is a ConfigError, naming the variable when it came from there."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError("configuration file not found", source=str(path))
        return path
    env = os.environ if environ is None else environ
    value = env.get(CONFIG_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"configuration file not found (named by ${CONFIG_ENV})", source=str(path)
        )
    return path


def load_agent_config(
    explicit: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """``load_config(find_config(explicit))``, or the defaults when no file is named."""
    path = find_config(explicit, environ)
    return load_config(path) if path is not None else AgentConfig()


def dump_config(config: AgentConfig) -> str:
    """The effective configuration as YAML (every setting, defaults included), which
    ``parse_config`` reads back to the same configuration."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
