"""Canonical data model: schema, cohort definitions, validated Parquet I/O, sources."""
