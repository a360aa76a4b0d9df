"""Persistence of incidents (and later investigations and experiments) through SQLAlchemy:
a SQLite file by default, PostgreSQL by URL."""
