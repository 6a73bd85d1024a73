"""The API's protective layers, installed around the routers by `install_security(app, settings)`.

From the outside in:
0. `ClientAddressMiddleware`: the real client address (X-Forwarded-For believed only from TRUSTED_PROXIES);
   `install_client_address(app, settings)` adds it, last, so that every layer (the audit trail's too) reads it.
1. `SecurityHeadersMiddleware`: nosniff, no framing, no referrer, a strict CSP (relaxed for the docs pages),
   no-store caching unless a handler chose otherwise, HSTS on HTTPS.
2. CORS (Starlette's), only for the exact origins in CORS_ORIGINS; none by default.
3. `RequestTimeoutMiddleware`: a request still running after REQUEST_TIMEOUT_S gets 504.
4. `AuthenticationMiddleware`: every route the table does not make public needs a valid token or API key; 401
   is answered before the request body is even read. Stores the `Principal` for `authorize` and `current_user`.
5. `RateLimitMiddleware`: RATE_LIMIT per user or API key (anonymous callers: per client address), 429 with
   Retry-After; the probes (/health, /ready) are exempt; RATE_LIMIT_ENABLED=false leaves it out. Failed logins
   have their own, stricter budget per client address and username (`LoginThrottle`, LOGIN_RATE_LIMIT).
6. `JsonBodyLimitMiddleware` (api/json_limits.py): size and nesting limits on JSON bodies, 422.
7. `authorize`, an app-wide dependency (`FastAPI(dependencies=[AUTHORIZE])`): looks up the route FastAPI selected
   in api/permissions.py and answers 403 to a role it does not list, and to everyone on a route it does not list.
Also: query strings are removed from uvicorn's access log (they can carry patient ids), and the OpenAPI document
states each operation's security and roles.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItem
from limits import parse as parse_rate_limit
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import (
    API_KEY_HEADER,
    BEARER_CHALLENGE,
    AuthenticationError,
    ConfigurationError,
    Principal,
    bearer_credential,
    check_security_settings,
)
from api.json_limits import JsonBodyLimitMiddleware
from api.permissions import ROUTE_PERMISSIONS, Access, access_for
from settings import Settings
from storage import StorageError, normalize_username

logger = logging.getLogger("cxr.security")

PROBE_PATHS = frozenset({"/health", "/ready"})  # exempt from rate limiting: monitors poll them
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")

SECURITY_HEADERS: dict[str, str] = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The Swagger/ReDoc pages FastAPI serves load their scripts from jsDelivr and run one inline script.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; font-src https://fonts.gstatic.com; "
    "worker-src blob:; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def _json(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


# --- 1. security headers ----------------------------------------------------------------------------------------------


class SecurityHeadersMiddleware:
    """Adds the headers above to every HTTP answer (a handler's own Cache-Control or CSP wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_docs = scope.get("path", "") in DOCS_PATHS
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy", DOCS_CSP if is_docs else API_CSP)
                headers.setdefault("cache-control", "no-store")
                if https:
                    headers.setdefault("strict-transport-security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- 2. CORS ----------------------------------------------------------------------------------------------------------


def parse_cors_origins(text: str) -> list[str]:
    """CORS_ORIGINS -> exact origins; '*' and malformed entries are refused (this API serves patient data)."""
    origins = [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ConfigurationError(
                f"CORS_ORIGINS entry {origin!r} is not an origin like https://workstation.example.org ('*' is refused)."
            )
    return origins


# --- 3. request timeout -----------------------------------------------------------------------------------------------


class RequestTimeoutMiddleware:
    """Answers 504 when the app has not started its answer within `timeout_s` seconds.

    The app runs in its own task so the 504 goes out on time even while a worker thread is busy (threads cannot be
    interrupted: the task is cancelled and whatever it sends afterwards is dropped). An answer that has already
    started streaming is left to finish.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout_s <= 0:
            await self.app(scope, receive, send)
            return
        started, abandoned = asyncio.Event(), False

        async def guarded_send(message: Message) -> None:
            if abandoned:
                return
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.create_task(self.app(scope, receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        if task in done or started.is_set():
            await task  # finished, or streaming its answer: let it complete (and raise what it raises)
            return
        abandoned = True
        task.cancel()
        task.add_done_callback(_consume_result)
        logger.warning("request timed out after %.1f s: %s %s", self.timeout_s, scope["method"], scope["path"])
        detail = f"The request took longer than {self.timeout_s:g} s (REQUEST_TIMEOUT_S) and was stopped."
        await _json(status.HTTP_504_GATEWAY_TIMEOUT, detail)(scope, receive, send)


def _consume_result(task: asyncio.Task[Any]) -> None:
    """Retrieve an abandoned task's outcome so asyncio does not report it as never retrieved."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("abandoned request ended with %s", type(task.exception()).__name__)


# --- 0. who is really calling ----------------------------------------------------------------------------------------

UNVERIFIED_CLIENT = "unverified-forwarded"  # one shared address for requests whose address came from a header


class ClientAddressMiddleware:
    """Sets `scope["client"]` to the real caller: the connecting address, or, only when that is one of
    TRUSTED_PROXIES, the nearest X-Forwarded-For entry that is not a trusted proxy. Everything after it (rate limits,
    the login throttle, the audit trail) reads that address.

    uvicorn itself believes X-Forwarded-For from 127.0.0.1 unless started with --no-proxy-headers, so anyone on the
    machine could name any address. A client address that appears in the request's own X-Forwarded-For was taken
    from it by the server: it is not believed, and all such requests share the address `UNVERIFIED_CLIENT` (one
    budget), so rotating the header gains nothing.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: str) -> None:
        self.app = app
        self.trusted = parse_trusted_proxies(trusted_proxies)
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            host, port = scope["client"]
            scope["client"] = (self.resolve(host, forwarded_for(scope)), port)
        await self.app(scope, receive, send)

    def resolve(self, host: str, forwarded: list[str]) -> str:
        if forwarded and host in forwarded:
            if not self._warned:
                logger.warning(
                    "The server took client addresses from X-Forwarded-For; they are not believed. Start uvicorn with "
                    "--no-proxy-headers and list real proxies in TRUSTED_PROXIES."
                )
                self._warned = True
            return UNVERIFIED_CLIENT
        if not self._is_trusted(host):
            return host
        for hop in reversed(forwarded):
            if not self._is_trusted(hop):
                return hop
        return forwarded[0] if forwarded else host

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)


def install_client_address(app: FastAPI, settings: Settings) -> None:
    """Add `ClientAddressMiddleware` outside every layer added so far (call it after the last `add_middleware`)."""
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=settings.trusted_proxies)


def parse_trusted_proxies(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """TRUSTED_PROXIES: comma-separated addresses or CIDR networks; ConfigurationError names a bad entry."""
    networks = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigurationError(f"TRUSTED_PROXIES entry {part!r} is not an IP address or network.") from None
    return networks


def forwarded_for(scope: Scope) -> list[str]:
    """The hosts in X-Forwarded-For, first (client side) to last, without ports or IPv6 brackets."""
    values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"]
    return [_host_only(hop.strip()) for hop in ",".join(values).split(",") if hop.strip()]


def _host_only(hop: str) -> str:
    if hop.startswith("["):  # [v6]:port
        return hop[1:].split("]", 1)[0]
    host, _, port = hop.rpartition(":")
    return host if host and port.isdigit() and host.count(":") == 0 else hop


# --- 4. authentication (middleware) and authorisation (app-wide dependency) -------------------------------------------


def _route_path(scope: Scope) -> str:
    """The request path relative to the app (without a proxy's root_path), as routes see it."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def public_routes() -> list[tuple[str, re.Pattern[str]]]:
    """(method, compiled template) of every route the table opens to anyone."""
    return [(method, compile_path(path)[0]) for (method, path), access in ROUTE_PERMISSIONS.items() if access.public]


def loopback_routes() -> list[tuple[str, re.Pattern[str]]]:
    """(method, compiled template) of every route the table opens to anonymous callers on this machine."""
    return [(method, compile_path(path)[0]) for (method, path), access in ROUTE_PERMISSIONS.items() if access.loopback]


def _route_in(routes: list[tuple[str, re.Pattern[str]]], scope: Scope) -> bool:
    method = "GET" if scope["method"] == "HEAD" else scope["method"]
    path = _route_path(scope)
    return any(method == allowed and pattern.match(path) for allowed, pattern in routes)


_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_anonymous_loopback(scope: Scope) -> bool:
    """No credentials, from a loopback address, and not relayed by a proxy (whose own address would be loopback)."""
    headers = Headers(scope=scope)
    if any(name in headers for name in ("authorization", API_KEY_HEADER.lower(), *_PROXY_HEADERS)):
        return False
    client = scope.get("client")
    try:
        return bool(client) and ipaddress.ip_address(client[0]).is_loopback
    except ValueError:  # a unix socket or another non-IP peer
        return False


class AuthenticationMiddleware:
    """Who is calling, decided before the request body is read: public routes pass; everything else needs a valid
    token or API key (401 otherwise), and the `Principal` is stored for `authorize` and `current_user`.

    Unknown paths also answer 401 to anonymous callers: which URLs exist is no business of someone not logged in.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.public = public_routes()
        self.loopback = loopback_routes() if settings.metrics_loopback_anonymous else []

    def is_public(self, scope: Scope) -> bool:
        return _route_in(self.public, scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or self.is_public(scope):
            await self.app(scope, receive, send)  # OPTIONS: CORS preflight (answered outside) or 405
            return
        if _route_in(self.loopback, scope) and is_anonymous_loopback(scope):
            scope.setdefault("state", {})["anonymous_loopback"] = True  # `authorize` lets it through
            await self.app(scope, receive, send)
            return
        answer = await self._authenticate(scope)
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = answer
        await self.app(scope, receive, send)

    @staticmethod
    async def _authenticate(scope: Scope) -> Principal | Response:
        auth = getattr(scope["app"].state, "auth", None)
        if auth is None:
            return _json(status.HTTP_503_SERVICE_UNAVAILABLE, "The API is starting; try again in a moment.")
        headers = Headers(scope=scope)
        try:
            credential = bearer_credential(headers.get("authorization"), headers.get(API_KEY_HEADER))
            if credential is None:
                raise AuthenticationError(
                    f"Authentication required: send `Authorization: Bearer <token>` (POST /v1/auth/login) "
                    f"or `{API_KEY_HEADER}: <key>`."
                )
            return await run_in_threadpool(auth.authenticate, credential)
        except AuthenticationError as exc:
            return _json(status.HTTP_401_UNAUTHORIZED, str(exc), BEARER_CHALLENGE)
        except StorageError as exc:
            logger.error("authentication failed on storage: %s", type(exc).__name__)
            return _json(status.HTTP_503_SERVICE_UNAVAILABLE, "Accounts cannot be checked right now; try again.")


def route_template(request: Request) -> str | None:
    """The path template of the route FastAPI selected, with the prefixes of the routers it was included through."""
    effective = request.scope.get("fastapi", {}).get("effective_route_context")  # FastAPI's own http.route
    route = request.scope.get("route")
    return getattr(effective, "path_format", None) or getattr(route, "path_format", None)


def authorize(request: Request) -> None:
    """App-wide dependency (create_app passes it to FastAPI): the selected route's line in api/permissions.py
    against the caller's role. Unlisted routes are denied to everyone."""
    template = route_template(request)
    access = access_for(request.method, template) if template else None
    if access is None:
        logger.error("denied %s %s: the route is not in api/permissions.py", request.method, template)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "This endpoint is not in the permission table, so it is closed to everyone."
        )
    if access.public or (access.loopback and getattr(request.state, "anonymous_loopback", False)):
        return
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # a route the middleware took for public: fail closed
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Authentication required.", headers=BEARER_CHALLENGE)
    if not access.allows(principal.role):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"Your role ({principal.role.value}) may not call {request.method} {template}."
        )


# --- 5. rate limiting -------------------------------------------------------------------------------------------------
# `limits` (the engine behind slowapi) used directly: slowapi 0.1.10 finds the route to limit through `route.endpoint`,
# which FastAPI 0.165's included routers no longer expose, so its middleware silently exempted every /v1 route.


class WindowLimiter:
    """A moving-window limit such as "300/minute" over any key, kept in a `limits` storage (memory:// by default;
    redis:// and others let several API replicas share the counts)."""

    def __init__(self, limit: str, storage_uri: str = "memory://") -> None:
        self.item = parse_rate_limit(limit)
        self.strategy = MovingWindowRateLimiter(storage_from_string(storage_uri))

    def hit(self, *key: str) -> bool:
        """Count one event; False when it is over the limit (and then it is not counted)."""
        return self.strategy.hit(self.item, *key)

    def allows(self, *key: str) -> bool:
        return self.strategy.test(self.item, *key)

    def remaining_and_reset(self, *key: str) -> tuple[int, int]:
        """(events left in the window, whole seconds until the oldest counted event leaves it)."""
        stats = self.strategy.get_window_stats(self.item, *key)
        return max(0, stats.remaining), max(0, math.ceil(stats.reset_time - time.time()))

    def clear(self, *key: str) -> None:
        self.strategy.clear(self.item, *key)


@dataclass(frozen=True)
class Lockout:
    """A wait that one failed login has just imposed (recorded in the audit trail as `login.lockout`)."""

    scope: Literal["address", "account"]  # this address and username, or the username from any address
    failures: int
    wait_s: int


class LoginThrottle:
    """Failed logins counted per (client address, username) within LOGIN_RATE_LIMIT's window and per username from
    any address within LOGIN_ACCOUNT_RATE_LIMIT's. When a count reaches its limit, every further failure makes the
    next attempt on that key wait twice as long as the last (1 s, 2 s, 4 s ... LOGIN_BACKOFF_MAX_S): attempts during
    the wait get 429 without being checked or counted. A guesser gets about one guess per LOGIN_BACKOFF_MAX_S per
    account, however many addresses it uses, and cannot lock the real user out: the wait after its last guess is at
    most LOGIN_BACKOFF_MAX_S, from any address. A success clears the (address, username) count."""

    COUNT_CAP = 10_000  # the failure counter's own limit: far above any count that matters

    def __init__(self, settings: Settings) -> None:
        self.storage = storage_from_string(settings.rate_limit_storage_uri)
        self.limits = {"address": parse_rate_limit(settings.login_rate_limit)}
        self.limits["account"] = parse_rate_limit(settings.login_account_rate_limit)
        self.counter = MovingWindowRateLimiter(self.storage)
        self.max_backoff_s = settings.login_backoff_max_s

    @staticmethod
    def _keys(client: str, username: str) -> dict[str, str]:
        name = normalize_username(username)[:64]
        return {"address": f"login/{client}/{name}", "account": f"login-account/{name}"}

    def retry_after_s(self, client: str, username: str) -> int | None:
        """Seconds until another attempt is allowed, or None when attempts are allowed now."""
        waits = [self._wait_left(key) for key in self._keys(client, username).values()]
        return max(waits) if max(waits) > 0 else None

    def failed(self, client: str, username: str) -> list[Lockout]:
        """Count a failure; the waits it starts (none while a count is under its limit)."""
        lockouts = []
        for scope, key in self._keys(client, username).items():
            item = self._counter_item(scope)
            self.counter.hit(item, key)
            failures = item.amount - self.counter.get_window_stats(item, key).remaining
            if failures >= self.limits[scope].amount:
                wait_s = min(self.max_backoff_s, 2 ** min(failures - self.limits[scope].amount, 20))
                self.storage.clear(f"{key}/wait")
                self.storage.incr(f"{key}/wait", wait_s)  # exists, expiring, for wait_s seconds
                lockouts.append(Lockout(scope, failures, wait_s))  # type: ignore[arg-type]
        return lockouts

    def succeeded(self, client: str, username: str) -> None:
        key = self._keys(client, username)["address"]
        self.counter.clear(self._counter_item("address"), key)
        self.storage.clear(f"{key}/wait")

    def _counter_item(self, scope: str) -> RateLimitItem:
        limit = self.limits[scope]
        return type(limit)(self.COUNT_CAP, limit.multiples, namespace="LOGIN")

    def _wait_left(self, key: str) -> int:
        if self.storage.get(f"{key}/wait") <= 0:
            return 0
        return max(1, math.ceil(self.storage.get_expiry(f"{key}/wait") - time.time()))


def rate_limit_key(scope: Scope) -> str:
    """One budget per user or API key; anonymous callers (login, docs) share one per client address."""
    principal = scope.get("state", {}).get("principal")
    if isinstance(principal, Principal):
        return f"{principal.kind}:{principal.id}"
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """RATE_LIMIT per caller across all endpoints (probes exempt): X-RateLimit-* headers on every answer, 429 with
    Retry-After once the budget is spent."""

    def __init__(self, app: ASGIApp, limiter: WindowLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        key = ("api", rate_limit_key(scope))
        allowed = self.limiter.hit(*key)
        remaining, reset_s = self.limiter.remaining_and_reset(*key)
        headers = {
            "X-RateLimit-Limit": str(self.limiter.item.amount),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset_s),
        }
        if not allowed:
            detail = f"Too many requests: the limit is {self.limiter.item} (RATE_LIMIT). Retry after {reset_s} s."
            await _json(status.HTTP_429_TOO_MANY_REQUESTS, detail, {**headers, "Retry-After": str(max(1, reset_s))})(
                scope, receive, send
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- logs and docs ----------------------------------------------------------------------------------------------------


class AccessLogQueryRedaction(logging.Filter):
    """uvicorn's access log line carries the full path; drop the query string (e.g. ?patient_id=...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def redact_access_log_queries() -> None:
    access_logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogQueryRedaction) for f in access_logger.filters):
        access_logger.addFilter(AccessLogQueryRedaction())


def document_security(app: FastAPI) -> None:
    """Make the OpenAPI document state how to authenticate and which roles may call each operation."""
    build_schema: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_schema()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearerAuth"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key"}
        schemes["apiKeyAuth"] = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                _document_operation(operation, access_for(method, path))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_operation(operation: dict[str, Any], access: Access | None) -> None:
    if access is not None and access.public:
        operation["security"] = []
        return
    operation["security"] = [{"bearerAuth": []}, {"apiKeyAuth": []}]
    roles = ", ".join(sorted(role.value for role in access.roles)) if access else "nobody (not in the table)"
    operation["description"] = f"{operation.get('description', '')}\n\nRoles: {roles}.".strip()
    responses = operation.setdefault("responses", {})
    responses.setdefault("401", {"description": "Missing, invalid, expired or revoked credentials"})
    responses.setdefault("403", {"description": "The caller's role may not use this endpoint"})
    responses.setdefault("429", {"description": "Rate limit (RATE_LIMIT) exceeded; see Retry-After"})


AUTHORIZE = Depends(authorize)

# --- wiring -----------------------------------------------------------------------------------------------------------


def install_security(app: FastAPI, settings: Settings) -> None:
    """Install every layer above (after the routers are included, so that the OpenAPI document covers them).

    The app must have been built with `FastAPI(dependencies=[AUTHORIZE])`: authorisation runs as that dependency.
    """
    if not any(getattr(dependency, "dependency", None) is authorize for dependency in app.router.dependencies):
        raise ConfigurationError("Build the app with FastAPI(dependencies=[AUTHORIZE]) before install_security().")
    check_security_settings(settings)
    app.state.security_settings = settings
    origins = parse_cors_origins(settings.cors_origins)
    app.state.login_throttle = LoginThrottle(settings)
    # add_middleware puts each new layer outside the previous ones: innermost first.
    app.add_middleware(JsonBodyLimitMiddleware, settings=settings)  # after authentication: 401 reads no body
    if settings.rate_limit_enabled:
        limiter = WindowLimiter(settings.rate_limit, settings.rate_limit_storage_uri)
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    app.add_middleware(AuthenticationMiddleware, settings=settings)
    app.add_middleware(RequestTimeoutMiddleware, timeout_s=settings.request_timeout_s)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", API_KEY_HEADER],
            expose_headers=["Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    document_security(app)
    redact_access_log_queries()
