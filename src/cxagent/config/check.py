"""Check a configuration file: its effective settings, or every problem with it. What
``cxagent config check [FILE]`` and ``python -m cxagent.config [FILE]`` run."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from cxagent.config.errors import ConfigError
from cxagent.config.load import dump_config, find_config, load_config
from cxagent.config.schema import AgentConfig


def check_config(
    path: Path | str | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Read the configuration (``path``, else the file ``$CXAGENT_CONFIG`` names, else none)
    and write every effective setting as YAML to ``out`` (default stdout), which
    ``parse_config`` reads back; or one ``error:`` line per problem to ``err`` (default
    stderr). Returns the exit status: 0, or 2 when there are problems."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        found = find_config(path, environ)
        config = load_config(found) if found is not None else AgentConfig()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=err)
        return 2
    source = f"{found}: valid" if found is not None else "no configuration file: every default"
    out.write(f"# {source}; the effective settings, defaults included\n")
    out.write(dump_config(config))
    return 0
