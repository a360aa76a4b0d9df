"""Import adapters: map a real data source to the canonical tables.

``olist.import_olist`` and ``doordash.import_doordash`` read a source folder, apply the
documented mapping (``docs/importers.md``), drop and count rows that cannot be mapped, and
write a validated-schema dataset atomically with a Manifest naming what the source lacks.
"""
