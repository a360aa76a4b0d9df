"""Who is asking, and what they may do.

Two roles: the ML engineer (everything) and the product manager (read-only: the dashboard,
the PM summary with its tradeoffs and projections, the merchant report). A request is
authenticated by an API token (``Authorization: Bearer ...``, one token per role, compared in
constant time) or by the session cookie that signing in with a token sets: signed with
itsdangerous, expiring after ``session_max_age``, HttpOnly and SameSite=Strict. The cookie
carries a fingerprint of the token it was issued for, so rotating a token ends its sessions.

CSRF: state changes made with the cookie need a signed CSRF token bound to the session,
posted as the ``csrf_token`` form field by the pages' forms or sent as the ``X-CSRF-Token``
header by scripts. Bearer-token requests carry no ambient credential and need none.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from cxagent.web.errors import CSRFError, Forbidden, NotAuthenticated
from cxagent.web.settings import Settings
from cxagent.web.templating import render

Role = Literal["engineer", "pm"]
ROLES: tuple[Role, ...] = ("engineer", "pm")
ROLE_LABELS = {"engineer": "ML engineer", "pm": "Product manager"}
SESSION_COOKIE = "cxagent_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
NAME_PATTERN = re.compile(r"[^\w .@-]")


@dataclass(frozen=True)
class User:
    """The person behind a request. ``session_id`` is set for cookie sessions (their state
    changes need a CSRF token) and None for API tokens."""

    name: str
    role: Role
    session_id: str | None = None

    @property
    def is_engineer(self) -> bool:
        return self.role == "engineer"

    @property
    def role_label(self) -> str:
        return ROLE_LABELS[self.role]


def clean_name(name: str | None, role: Role) -> str:
    """The name recorded in the audit trail: what the person typed, tidied, or the role."""
    cleaned = NAME_PATTERN.sub("", (name or "").strip())[:40].strip()
    return cleaned or role


class Authenticator:
    """Checks tokens, issues and reads session cookies, issues and checks CSRF tokens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tokens: dict[Role, str] = {
            "engineer": settings.engineer_token,
            "pm": settings.pm_token,
        }
        self._sessions = URLSafeTimedSerializer(settings.secret_key, salt="cxagent.session")
        self._csrf = URLSafeTimedSerializer(settings.secret_key, salt="cxagent.csrf")

    def role_for_token(self, token: str) -> Role | None:
        """The role whose token this is; every token is compared, in constant time."""
        given = token.encode()
        found: Role | None = None
        for role, expected in self._tokens.items():
            if hmac.compare_digest(given, expected.encode()):
                found = role
        return found

    def _fingerprint(self, role: Role) -> str:
        key = self.settings.secret_key.encode()
        return hmac.new(key, self._tokens[role].encode(), hashlib.sha256).hexdigest()[:16]

    def issue_session(self, role: Role, name: str) -> str:
        return self._sessions.dumps(
            {
                "sid": secrets.token_urlsafe(16),
                "role": role,
                "name": name,
                "fp": self._fingerprint(role),
            }
        )

    def read_session(self, value: str) -> User | None:
        try:
            data = self._sessions.loads(value, max_age=self.settings.session_max_age)
        except BadSignature:  # also an expired signature
            return None
        if not isinstance(data, dict) or data.get("role") not in ROLES:
            return None
        role = cast(Role, data["role"])
        if not hmac.compare_digest(str(data.get("fp", "")), self._fingerprint(role)):
            return None
        return User(name=str(data.get("name") or role), role=role, session_id=str(data["sid"]))

    def authenticate(self, request: Request) -> User | None:
        """The bearer token when there is one (a wrong one is refused, never ignored),
        else the session cookie; None when neither is there."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            role = self.role_for_token(token.strip()) if scheme.lower() == "bearer" else None
            if role is None:
                raise NotAuthenticated("the API token is not valid", field="Authorization")
            return User(name=role, role=role)
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.read_session(cookie) if cookie else None

    def peek(self, request: Request) -> User | None:
        """Whoever the request authenticates as, None for visitors and wrong tokens alike
        (for an error page, which may come before any dependency ran)."""
        try:
            return self.authenticate(request)
        except NotAuthenticated:
            return None

    def csrf_token(self, user: User) -> str:
        """The CSRF token of a cookie session ('' for API tokens, which need none)."""
        return self._csrf.dumps(user.session_id) if user.session_id else ""

    def check_csrf(self, user: User, token: str | None) -> None:
        """Cookie sessions must prove the request came from our page; API tokens need not."""
        if user.session_id is None:
            return
        try:
            ok = token is not None and hmac.compare_digest(
                str(self._csrf.loads(token, max_age=self.settings.session_max_age)),
                user.session_id,
            )
        except BadSignature:
            ok = False
        if not ok:
            raise CSRFError(
                "the CSRF token is missing or not valid: reload the page and try again",
                field=CSRF_FIELD,
            )


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def current_user(request: Request) -> User:
    """Dependency: the signed-in user; 401 (API) or the sign-in form (pages) otherwise."""
    user = authenticator(request).authenticate(request)
    if user is None:
        raise NotAuthenticated("sign in: send 'Authorization: Bearer <token>' or use /login")
    request.state.user = user
    return user


def require_engineer(user: Annotated[User, Depends(current_user)]) -> User:
    """Dependency: only the ML engineer; product managers get a clear 403."""
    if not user.is_engineer:
        raise Forbidden(
            "product managers have read-only access to the dashboard, the summary and the "
            "merchant report; this needs the ML engineer role"
        )
    return user


def require_engineer_csrf(
    request: Request, user: Annotated[User, Depends(require_engineer)]
) -> User:
    """Dependency of API state changes: the engineer, and for cookie sessions the header."""
    authenticator(request).check_csrf(user, request.headers.get(CSRF_HEADER))
    return user


CurrentUser = Annotated[User, Depends(current_user)]
Engineer = Annotated[User, Depends(require_engineer)]


# --- signing in and out ------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative ``//``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _signed_in(request: Request, role: Role, name: str | None, target: str | None) -> Response:
    auth = authenticator(request)
    response = RedirectResponse(safe_next(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        auth.issue_session(role, clean_name(name, role)),
        max_age=auth.settings.session_max_age,
        httponly=True,
        samesite="strict",
        secure=auth.settings.secure_cookies,
        path="/",
    )
    return response


def _login_form(request: Request, target: str, error: str | None, status: int) -> Response:
    return render(
        request, "login.html", {"next": target, "error": error}, status_code=status, user=None
    )


@router.get("/login")
def login_page(
    request: Request,
    token: Annotated[str | None, Query()] = None,
    next: Annotated[str | None, Query()] = None,
) -> Response:
    """The sign-in form; ``?token=`` signs in at once (the demo's sign-in link)."""
    if token is not None:
        role = authenticator(request).role_for_token(token)
        if role is not None:
            return _signed_in(request, role, None, next)
        return _login_form(request, safe_next(next), "That token is not valid.", 401)
    return _login_form(request, safe_next(next), None, 200)


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form()],
    name: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    role = authenticator(request).role_for_token(token)
    if role is None:
        return _login_form(request, safe_next(next), "That token is not valid.", 401)
    return _signed_in(request, role, name, next)


@router.post("/logout")
def logout(
    request: Request, user: CurrentUser, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    authenticator(request).check_csrf(user, csrf_token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", samesite="strict")
    return response
