"""Render ``docs/data-model.md`` from the schema: ``python -m cxagent.data.docs [PATH]``.

The document is generated so that it cannot drift from the code; a test compares the two.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from cxagent.data import cohorts
from cxagent.data.schema import TABLES, Manifest, Table
from cxagent.metrics import definitions

HEADER = """# Canonical data model

Every analysis reads these tables. They are stored as Parquet, one directory per table,
partitioned by date (`date=YYYY-MM-DD`) where large, with a `dataset.json` manifest that says
where the data came from and which tables or columns its source lacks (analyses report a
cause that needs them as "not testable"). `cxagent validate DIR` checks types, nulls, ranges,
allowed values, keys, foreign keys, time order and the derived cohort columns, and names the
file, column and an example row of every problem. Writes are atomic: a dataset is written to
a temporary directory and renamed into place.

*This file is generated from `src/cxagent/data/schema.py` by `python -m cxagent.data.docs`;
edit the code, not this file.*
"""


def _table_md(t: Table) -> str:
    lines = [f"## `{t.name}`", "", t.description, ""]
    facts = []
    if t.primary_key:
        facts.append(f"key `{t.primary_key}`")
    if t.partition_time:
        facts.append(f"partitioned by the date of `{t.partition_time}`")
    facts.append("required" if t.required else "optional (a source may list it as missing)")
    for fk in t.foreign_keys:
        facts.append(f"`{fk.column}` references `{fk.table}.{fk.ref_column}`")
    for rule in t.time_order:
        other = f"the order's `{rule.earlier}`" if rule.via_order else f"`{rule.earlier}`"
        facts.append(f"`{rule.later}` is not before {other}")
    lines += ["; ".join(facts) + ".", ""]
    lines += ["| column | type | null | constraint | meaning |", "| --- | --- | --- | --- | --- |"]
    for c in t.columns:
        limits = []
        if c.min is not None:
            limits.append(f">= {c.min:g}")
        if c.max is not None:
            limits.append(f"<= {c.max:g}")
        if c.allowed:
            limits.append(", ".join(c.allowed))
        null = "yes" if c.nullable else "no"
        lines.append(f"| `{c.name}` | {c.type} | {null} | {'; '.join(limits)} | {c.description} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    cohort_doc = (cohorts.__doc__ or "").strip().split("\n", 1)[1].strip()
    metrics_doc = (definitions.__doc__ or "").strip().split("\n", 1)[1].strip()
    manifest_doc = inspect.getdoc(Manifest) or ""
    parts = [
        HEADER,
        "## Cohorts\n\n" + cohort_doc + "\n",
        "## CX metrics\n\n" + metrics_doc + "\n",
        "## `dataset.json`\n\n" + manifest_doc + "\n",
    ]
    parts += [_table_md(t) for t in TABLES.values()]
    return "\n".join(parts)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/data-model.md")
    path.write_text(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
