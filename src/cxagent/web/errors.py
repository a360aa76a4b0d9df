"""Errors as people and programs should see them.

Under ``/api`` every error is JSON ``{"error": {"type", "message", "field"}}`` naming the
field at fault when there is one; pages get an HTML error page, and a visitor who is not
signed in is sent to the sign-in form. No response ever carries a stack trace: unexpected
errors are logged on the server and answered with a short message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxagent.errors import CXAgentError
from cxagent.store.feedback import InvalidFeedbackError
from cxagent.store.repository import InvalidStatusError, NotFoundError
from cxagent.web.templating import render_error

log = logging.getLogger("cxagent.web")


class WebError(Exception):
    """An error answered with ``status_code``; ``field`` names the parameter at fault."""

    status_code = 400
    type = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidField(WebError):
    status_code = 422
    type = "validation_error"


class NotAuthenticated(WebError):
    status_code = 401
    type = "not_authenticated"


class Forbidden(WebError):
    status_code = 403
    type = "forbidden"


class NotFound(WebError):
    status_code = 404
    type = "not_found"


class CSRFError(WebError):
    status_code = 403
    type = "csrf_failed"


HTTP_TYPES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "validation_error",
}


def error_body(type_: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "field": field}}


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "status")`` -> ``status``; ``("query", "severity", 0)`` -> ``severity``."""
    parts = [str(p) for p in loc[1:] if not isinstance(p, int)] if len(loc) > 1 else []
    return ".".join(parts) or str(loc[0] if loc else "body")


def _respond(
    request: Request, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if is_api(request):
        return JSONResponse(body, status_code=status, headers=headers)
    response = render_error(request, status, body["error"])
    response.headers.update(headers)
    return response


async def on_web_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebError)
    if isinstance(exc, NotAuthenticated) and not is_api(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    return _respond(request, exc.status_code, error_body(exc.type, exc.message, exc.field))


async def on_store_error(request: Request, exc: Exception) -> Response:
    """The store's errors: an unknown incident, a status outside the list, a contended row."""
    if isinstance(exc, NotFoundError):  # an unknown incident, or a cause it does not rank
        field = getattr(exc, "field", "incident_id")
        return _respond(request, 404, error_body("not_found", str(exc), field))
    if isinstance(exc, InvalidStatusError):
        return _respond(request, 422, error_body("validation_error", str(exc), "status"))
    if isinstance(exc, InvalidFeedbackError):
        return _respond(request, 422, error_body("validation_error", str(exc), exc.field))
    # a contended row, or feedback that contradicts itself (naming its field)
    return _respond(request, 409, error_body("conflict", str(exc), getattr(exc, "field", None)))


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": _field(e.get("loc", ())), "message": str(e.get("msg", "invalid value"))}
        for e in exc.errors()
    ]
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    body = error_body("validation_error", f"{first['field']}: {first['message']}", first["field"])
    body["error"]["details"] = problems
    return _respond(request, 422, body)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    type_ = HTTP_TYPES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else type_.replace("_", " ")
    if exc.status_code == 404:
        message = f"nothing at {request.url.path}"
    if exc.status_code == 400:
        # the framework's only 400: a body it could not decode (bytes that are not UTF-8, a
        # broken form); answered like a body that is not JSON, a 422 naming the body
        body = error_body("validation_error", f"body: {message}", "body")
        body["error"]["details"] = [{"field": "body", "message": message}]
        return _respond(request, 422, body)
    # keep the exception's headers: a 405 must say which methods are allowed (Allow)
    return _respond(request, exc.status_code, error_body(type_, message), exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(
        request, 500, error_body("internal_error", "internal error: see the server log")
    )


def install(app: FastAPI) -> None:
    """Register the handlers: ours, the store's, validation, HTTP, and the last resort."""
    app.add_exception_handler(WebError, on_web_error)
    app.add_exception_handler(CXAgentError, on_store_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
