"""The one exception tree of the project.

Every error a user can cause (a bad file, a bad spec, a bad request) is a ``CXAgentError``
whose message names the file, column, field or parameter at fault. Programming errors stay
ordinary Python exceptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class CXAgentError(Exception):
    """Base class of every error the user can act on."""


class DataValidationError(CXAgentError):
    """A dataset file breaks the canonical schema.

    The message names the file, the column and an example offending row.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        column: str | None = None,
        example: dict[str, Any] | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.column = column
        self.example = example
        parts = []
        if self.file:
            parts.append(f"{self.file}")
        if column:
            parts.append(f"column '{column}'")
        where = ", ".join(parts)
        text = f"{where}: {message}" if where else message
        if example:
            text += f" (example row: {example})"
        super().__init__(text)


class SpecError(CXAgentError):
    """A scenario spec or configuration is invalid; the message names the field."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class SourceDataError(CXAgentError):
    """A real-data source (Olist, DoorDash) is missing files or columns."""


class OutputExistsError(CXAgentError):
    """The output directory exists and overwriting was not requested."""
