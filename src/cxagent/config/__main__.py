"""``python -m cxagent.config [FILE]``: check a configuration file (default: the one
``$CXAGENT_CONFIG`` names, else every default) and print the effective settings as YAML.
Exit status 2 with one line per problem when the file is invalid. The same as
``cxagent config check [FILE]``."""

from __future__ import annotations

import sys

from cxagent.config.check import check_config


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print(__doc__, file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return check_config(args[0] if args else None)


if __name__ == "__main__":
    raise SystemExit(main())
