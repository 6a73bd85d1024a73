"""Authorisation matrix from the live OpenAPI schema: every route x every role (token and API key) x bad credentials
(none, garbage, unsigned, expired, revoked key, deactivated user), checked exactly against api/permissions.py.

Expected per route: public -> never 401/403; otherwise bad credentials -> 401, a role the table lists -> neither
401 nor 403 (and no 5xx), any other role -> 403. Requests carry no body and a random id in path parameters, so the
allowed ones end in 2xx/404/422 without changing anything.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from api.auth import JWT_ALGORITHM, JWT_ISSUER
from api.permissions import ROUTE_PERMISSIONS, Access, Role, access_for
from settings import Settings
from tests.conftest import TEST_ROLES, ApiAccount

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
PATH_PARAMETER = re.compile(r"\{[^}]+\}")
BAD_CREDENTIALS = ("none", "garbage", "unsigned", "wrong-secret", "expired", "revoked-key", "deactivated-user")


@dataclass(frozen=True)
class Caller:
    name: str
    role: str | None  # None: the credentials are bad (expect 401 on protected routes)
    headers: dict[str, str]


def openapi_operations(api_url: str) -> list[tuple[str, str]]:
    paths = httpx.get(f"{api_url}/openapi.json", timeout=30).json()["paths"]
    return sorted((method.upper(), path) for path, ops in paths.items() for method in ops if method in HTTP_METHODS)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mint(secret: str, subject: str, *, expired: bool = False, version: int = 1) -> str:
    now = datetime.now(UTC)
    issued = now - timedelta(hours=2) if expired else now
    claims = {"iss": JWT_ISSUER, "sub": subject, "role": "admin", "ver": version, "iat": issued,
              "exp": issued + timedelta(hours=1), "jti": uuid.uuid4().hex}  # fmt: skip
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def create_key(api_url: str, admin: ApiAccount, role: str) -> dict:
    answer = httpx.post(f"{api_url}/v1/api-keys", json={"name": f"matrix-{role}", "role": role},
                        headers=admin.headers, timeout=30)  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def callers(api_url: str, api_env: dict[str, str], api_accounts: dict[str, ApiAccount]) -> Iterator[list[Caller]]:
    admin = api_accounts["admin"]
    admin_id = httpx.get(f"{api_url}/v1/auth/me", headers=admin.headers, timeout=30).json()["id"]
    secret = api_env["JWT_SECRET"]
    revoked = create_key(api_url, admin, "admin")
    assert httpx.delete(f"{api_url}/v1/api-keys/{revoked['id']}", headers=admin.headers).status_code == 204
    # An admin that logged in and was then deactivated: its token must stop working at once.
    name, password = f"gone-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    created = httpx.post(f"{api_url}/v1/users", json={"username": name, "password": password, "role": "admin"},
                         headers=admin.headers, timeout=30)  # fmt: skip
    gone_token = httpx.post(f"{api_url}/v1/auth/login", json={"username": name, "password": password}).json()
    assert httpx.delete(f"{api_url}/v1/users/{created.json()['id']}", headers=admin.headers).status_code == 204

    result = [
        Caller("none", None, {}),
        Caller("garbage", None, bearer("not-a-token")),
        Caller("unsigned", None, bearer(jwt.encode({"sub": admin_id, "ver": 1}, key=None, algorithm="none"))),
        Caller("wrong-secret", None, bearer(mint(secrets.token_urlsafe(48), admin_id))),
        Caller("expired", None, bearer(mint(secret, admin_id, expired=True))),
        Caller("revoked-key", None, {"X-API-Key": revoked["key"]}),
        Caller("deactivated-user", None, bearer(gone_token["access_token"])),
    ]
    keys = []
    for role in TEST_ROLES:
        result.append(Caller(f"{role}-token", role, api_accounts[role].headers))
        key = create_key(api_url, admin, role)
        keys.append(key)
        result.append(Caller(f"{role}-key", role, bearer(key["key"])))
    yield result
    for key in keys:
        httpx.delete(f"{api_url}/v1/api-keys/{key['id']}", headers=admin.headers, timeout=30)


@pytest.fixture(scope="module")
def http(api_url: str) -> Iterator[httpx.Client]:
    """One connection pool for the whole matrix (hundreds of requests); no default headers."""
    with httpx.Client(base_url=api_url, timeout=60) as client:
        yield client


# Logging out revokes the caller's token; the matrix calls it with the bad credentials and the API keys only.
ENDS_THE_SESSION = {("POST", "/v1/auth/logout")}


def call(http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return http.request(method, PATH_PARAMETER.sub(str(uuid.UUID(int=0)), path), headers=headers)


def expected_outcome(access: Access, caller: Caller) -> str:
    if access.public:
        return "not-auth"
    if caller.role is None:
        return "401"
    return "not-auth" if access.allows(caller.role) else "403"


def test_every_openapi_route_is_in_the_permission_table(api_url: str) -> None:
    missing = [f"{method} {path}" for method, path in openapi_operations(api_url) if access_for(method, path) is None]
    assert not missing, f"add these routes to api/permissions.py ROUTE_PERMISSIONS: {missing}"


def served_routes(routes: list) -> Iterator[tuple[str, set[str]]]:
    """(full path template, methods) of every route, looking inside included routers (FastAPI >= 0.16x keeps them
    as one `_IncludedRouter` entry whose effective routes carry the full paths)."""
    for route in routes:
        effective = getattr(route, "effective_route_contexts", None)
        if effective is not None:
            for context in effective():
                yield context.path_format, set(context.methods or {"GET"})
        else:
            yield route.path, set(getattr(route, "methods", None) or {"GET"})


def test_every_served_route_is_in_the_permission_table() -> None:
    """Also routes hidden from the schema (include_in_schema=False) and the docs pages."""
    from api.main import create_app

    served = list(served_routes(create_app(Settings()).routes))
    assert ("/v1/auth/login", {"POST"}) in served and len(served) >= 25  # the walk does see the routers' routes
    missing = [
        f"{method} {path}"
        for path, methods in served
        for method in sorted(methods)
        if method != "HEAD" and access_for(method, path) is None
    ]
    assert not missing, f"add these routes to api/permissions.py ROUTE_PERMISSIONS: {missing}"


def test_the_table_only_names_known_roles_and_methods() -> None:
    for (method, path), access in ROUTE_PERMISSIONS.items():
        assert method in {m.upper() for m in HTTP_METHODS}, (method, path)
        assert path.startswith("/"), path
        assert access.roles <= set(Role) and (access.public or access.roles), (method, path)


def test_authorisation_matrix(api_url: str, http: httpx.Client, callers: list[Caller]) -> None:
    operations = openapi_operations(api_url)
    assert len(operations) >= 20
    failures: list[str] = []
    checked = 0
    for method, path in operations:
        access = access_for(method, path)
        assert access is not None
        for caller in callers:
            if (method, path) in ENDS_THE_SESSION and caller.name.endswith("-token"):
                checked += 1  # would end the session's shared tokens: tests/security/test_attack_list.py (T6)
                continue
            response = call(http, method, path, caller.headers)
            expected, got = expected_outcome(access, caller), response.status_code
            checked += 1
            if expected == "401" and got != 401:
                failures.append(f"{caller.name} {method} {path}: {got}, expected 401")
            elif expected == "403" and got != 403:
                failures.append(f"{caller.name} {method} {path}: {got}, expected 403")
            elif expected == "not-auth" and got in (401, 403, 500):  # 503: a part not set up here (e.g. a library)
                failures.append(f"{caller.name} {method} {path}: {got} {response.text[:120]}, expected no auth error")
            if got == 401:
                assert response.headers.get("www-authenticate", "").startswith("Bearer"), (method, path)
    assert not failures, "\n".join(failures)
    assert checked == len(operations) * len(callers)


def test_bad_credentials_get_a_reason_and_no_data(http: httpx.Client, callers: list[Caller]) -> None:
    reasons = {caller.name: call(http, "GET", "/v1/cases", caller.headers).json()["detail"] for caller in callers
               if caller.role is None}  # fmt: skip
    assert set(reasons) == set(BAD_CREDENTIALS)
    assert "Authentication required" in reasons["none"]
    assert "expired" in reasons["expired"]
    assert "revoked" in reasons["revoked-key"]
    assert "log in again" in reasons["deactivated-user"]


def test_plain_gets_of_allowed_roles_answer_200(
    api_url: str, http: httpx.Client, api_accounts: dict[str, ApiAccount]
) -> None:
    """Exactly 200 (not merely 'not 401/403') where a GET needs neither body nor path parameters."""
    for method, path in openapi_operations(api_url):
        access = access_for(method, path)
        if method != "GET" or "{" in path or access is None or path in ("/metrics",):
            continue
        for role in TEST_ROLES:
            if access.public or access.allows(role):
                got = call(http, method, path, api_accounts[role].headers).status_code
                assert got == 200, (role, method, path, got)
