"""``python -m cxagent ...`` runs the command line, and ``spark-submit`` (which takes a
Python file) can run this file: ``spark-submit --master yarn .../cxagent/__main__.py detect
--data DIR --engine spark``."""

from cxagent.cli import app

if __name__ == "__main__":
    app(prog_name="cxagent")
