"""The error of a configuration file: every problem with the file, the dotted key and the line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cxagent.errors import CXAgentError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration: the dotted key at fault (``""`` for the whole
    file), what is wrong, and where in the file when known (1-based line and column)."""

    key: str
    message: str
    line: int | None = None
    column: int | None = None

    def render(self, source: str | None) -> str:
        where = source or ""
        if where and self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{self.key}: {self.message}" if self.key else self.message
        return f"{where}: {text}" if where else text


class ConfigError(CXAgentError):
    """The agent's configuration file is missing, not YAML, or has invalid settings.

    One line per problem, each naming the file (and line, when known) and the dotted key,
    e.g. ``agent.yaml:7: detection.fdr_alpha: must lie in (0, 1), got 1.5``.
    """

    def __init__(
        self, problems: str | Problem | Sequence[Problem], *, source: str | None = None
    ) -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        super().__init__("\n".join(p.render(source) for p in self.problems))

    @property
    def keys(self) -> list[str]:
        """The dotted keys at fault, in the order of the problems."""
        return [p.key for p in self.problems]
