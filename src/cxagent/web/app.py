"""The web application: pages, the JSON API, sign-in, static files and plotly.js.

``create_app`` wires everything from a ``Settings`` and a ``Workbench`` and nothing else, so a
test, the ``serve`` command and the demo build the same application. Every response but the
static assets is marked uncacheable (it shows incident data) and carries the usual
browser-hardening headers; the OpenAPI document needs a signed-in user like everything else.
"""

from __future__ import annotations

import functools
import gzip
from importlib import metadata, resources

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cxagent import __version__
from cxagent.web import api, auth, errors, pages
from cxagent.web.auth import CurrentUser
from cxagent.web.settings import Settings
from cxagent.web.templating import make_templates
from cxagent.workbench.reader import Workbench

PLOTLY_PATH = "/vendor/plotly.min.js"
LONG_CACHE = "public, max-age=31536000, immutable"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; frame-ancestors 'none'; form-action 'self'"
    ),
}


class HeadersMiddleware:
    """Adds the security headers to every response, and ``Cache-Control`` where a route did
    not set one. Plain ASGI: it edits the response start and passes the body through
    untouched (no re-streaming, so small answers leave in one write)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "public, max-age=3600" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


@functools.cache
def plotly_js() -> tuple[bytes, bytes]:
    """plotly.js as the installed ``plotly`` package bundles it, plain and gzipped (once)."""
    raw = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    return raw, gzip.compress(raw, compresslevel=6)


def create_app(settings: Settings, workbench: Workbench) -> FastAPI:
    """The application serving ``workbench`` with ``settings``."""
    app = FastAPI(
        title="CX-Fulfillment Agent workbench",
        version=__version__,
        description="Incidents, root causes, recommendations and experiments, read from the store.",
        docs_url=None,  # the interactive docs load assets from a CDN: not offline
        redoc_url=None,
        openapi_url=None,  # served below, behind authentication
    )
    app.state.settings = settings
    app.state.workbench = workbench
    app.state.auth = auth.Authenticator(settings)
    app.state.templates = make_templates()
    app.state.plotly_url = f"{PLOTLY_PATH}?v={metadata.version('plotly')}"
    errors.install(app)

    app.include_router(api.public)
    app.include_router(api.router)
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(packages=[("cxagent.web", "static")]), name="static")

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(_: CurrentUser) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(PLOTLY_PATH, include_in_schema=False)
    def plotly(request: Request) -> Response:
        raw, zipped = plotly_js()
        headers = {"Cache-Control": LONG_CACHE, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(zipped, media_type="text/javascript", headers=headers)
        return Response(raw, media_type="text/javascript", headers=headers)

    app.add_middleware(HeadersMiddleware)
    return app
