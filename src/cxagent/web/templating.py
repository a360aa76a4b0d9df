"""The Jinja2 environment of the pages and the one way to render them.

``render`` adds what every page needs (the user and role, what they may do, the CSRF token
of their session, the URL of the served plotly.js) so route functions pass only their data.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from cxagent.web.format import FILTERS

_UNSET: Any = object()


def make_templates() -> Jinja2Templates:
    folder = resources.files("cxagent.web") / "templates"
    templates = Jinja2Templates(directory=str(folder))
    templates.env.filters.update(FILTERS)
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
    return templates


def _user(request: Request) -> Any:
    """The user a dependency already found, else whoever the request authenticates as."""
    user = getattr(request.state, "user", None)
    return user if user is not None else request.app.state.auth.peek(request)


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    user: Any = _UNSET,
) -> HTMLResponse:
    """Render a page with the common context; ``user=None`` renders it for a visitor."""
    user = _user(request) if user is _UNSET else user
    engineer = bool(user is not None and user.is_engineer)
    auth = request.app.state.auth
    common = {
        "request": request,
        "user": user,
        "can_edit": engineer,
        "csrf_token": auth.csrf_token(user) if user is not None else "",
        "plotly_url": request.app.state.plotly_url,
    }
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, name, {**common, **context}, status_code=status_code
    )
    return response


ERROR_TITLES = {
    401: "Sign in needed",
    403: "Not allowed",
    404: "Not found",
    409: "Try again",
    422: "Invalid request",
    500: "Something went wrong",
}


def render_error(request: Request, status: int, error: dict[str, Any]) -> HTMLResponse:
    """The HTML error page: what went wrong and the field at fault, never a stack trace."""
    title = ERROR_TITLES.get(status, "Error")
    return render(
        request,
        "error.html",
        {"status": status, "title": title, "error": error},
        status_code=status,
    )
