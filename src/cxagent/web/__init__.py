"""The web workbench: server-rendered pages and their JSON API over the stored views.

``create_app(settings, workbench)`` builds the application; ``serve`` runs it (``cxagent
serve``); ``app_for_store`` and ``running`` start it on a store URL and a free port for tests.
See docs/web.md.
"""

from cxagent.web.app import create_app
from cxagent.web.server import app_for_store, running, serve
from cxagent.web.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError", "app_for_store", "create_app", "running", "serve"]
