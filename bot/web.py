"""What the web process's parts share (`server` builds the root application, `api` the staff
API): typed application keys, JSON errors, and the middlewares that answer for a dependency
that is away, turn every error of the staff sub-applications into JSON, and check staff tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Handler

from consulta.bot.runtime import Runtime, Unavailable
from consulta.storage.errors import is_unavailable
from consulta.storage.staff import Staff

__all__ = [
    "MEMBER",
    "RUNTIME",
    "STAFF",
    "Member",
    "error",
    "json_error",
    "json_errors",
    "member",
    "public",
    "require_admin",
    "route_name",
    "staff_tokens",
    "unavailable",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """The planning-team member behind a request's bearer token."""

    name: str
    role: str  # "admin" or "analyst"

    @property
    def admin(self) -> bool:
        return self.role == "admin"


RUNTIME = web.AppKey("runtime", Runtime)
STAFF = web.AppKey("staff", Staff)
MEMBER = web.RequestKey("staff_member", Member)

RETRY_AFTER = "5"  # seconds: a webhook's sender, or a script, tries again after this
_PUBLIC = "_consulta_public"

_H = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(reason: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    """The one shape of every error the staff API and the simulator answer: `{"error": …}`."""
    return web.json_response({"error": reason}, status=status, headers=headers)


def error(
    status: type[web.HTTPException], reason: str, headers: dict[str, str] | None = None
) -> web.HTTPException:
    """An HTTP error to raise, with a JSON body `{"error": reason}`."""
    return status(
        text=json.dumps({"error": reason}, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


def query_text(request: web.Request, name: str) -> str | None:
    """A free-text query parameter; no database column takes a NUL character."""
    value = request.query.get(name) or None
    if value is not None and "\x00" in value:
        raise error(web.HTTPBadRequest, f"{name} must not contain a NUL character")
    return value


def query_whole(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter from `low` to `high` (400 otherwise)."""
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise error(web.HTTPBadRequest, f"{name} must be a whole number from {low} to {high}")
    return value


def rfc3339(value: datetime | None) -> str | None:
    """A time as the API gives it, with its offset (SQLite hands times back naive, in UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def route_name(request: web.Request) -> str:
    """The route a request matched, as registered (`/api/v1/contacts/{address}`): for metrics
    and logs, which never carry an address from a path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _away(request: web.Request, exc: Exception) -> web.Response | None:
    """503 with Retry-After when `exc` says a dependency is away; None for anything else."""
    if isinstance(exc, Unavailable):
        log.error("refused %s: %s", route_name(request), exc)
    elif is_unavailable(exc):
        log.warning("%s: a dependency is unavailable (%s)", route_name(request), type(exc).__name__)
    else:
        return None
    return json_error("temporarily unavailable", 503, {"Retry-After": RETRY_AFTER})


@web.middleware
async def unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A dependency that is away answers 503 (with Retry-After), never a 500 and a traceback:
    the webhook's sender may retry, and the log says what is away, once per outage."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        away = _away(request, exc)
        if away is None:
            raise
        return away


# Headers an error keeps when it is rewritten as JSON: which methods, which credentials.
_KEPT = ("Allow", "WWW-Authenticate", "Retry-After")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every 4xx and 5xx of a staff sub-application as `{"error": reason}`: an unknown route
    404, a wrong method 405 (with Allow), a body too large 413, a dependency away 503 (with
    Retry-After), and a bug 500 — logged here, once, with its traceback, which never reaches
    the body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        default = f"{exc.status}: {exc.reason}"
        reason = exc.text if exc.text and exc.text != default else exc.reason.lower()
        kept = {h: exc.headers[h] for h in _KEPT if h in exc.headers}
        return json_error(reason, exc.status, kept or None)
    except Exception as exc:
        away = _away(request, exc)
        if away is not None:
            return away
        log.exception("%s %s failed", request.method, route_name(request))
        return json_error("internal error", 500)


def public(handler: _H) -> _H:
    """Marks a handler of a staff sub-application that needs no token."""
    setattr(handler, _PUBLIC, True)
    return handler


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@web.middleware
async def staff_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route of a staff sub-application, unless marked `public`, needs a valid bearer
    token: 401 with `WWW-Authenticate: Bearer` otherwise. Who it is goes on the request
    (`member(request)`); handlers decide what needs an admin."""
    match = request.match_info
    if match.http_exception is None and not getattr(match.handler, _PUBLIC, False):
        found = await request.config_dict[STAFF].authenticate(_bearer(request))
        if found is None:
            raise error(
                web.HTTPUnauthorized,
                "a valid staff token is required",
                {"WWW-Authenticate": "Bearer"},
            )
        request[MEMBER] = Member(*found)
    return await handler(request)


def staff_app(runtime: Runtime) -> web.Application:
    """A sub-application for staff: JSON errors, and a staff token on every route not `public`."""
    app = web.Application(middlewares=[json_errors, staff_tokens])
    app[RUNTIME] = runtime
    app[STAFF] = Staff(runtime.store)
    return app


def member(request: web.Request) -> Member:
    """Who made a request that `staff_tokens` let through."""
    return request[MEMBER]


def require_admin(request: web.Request) -> Member:
    """The admin behind the request; 403 for an analyst."""
    who = member(request)
    if not who.admin:
        raise error(web.HTTPForbidden, "this needs an admin token")
    return who
