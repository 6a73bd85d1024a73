"""Login and the caller's own account: `POST /v1/auth/login`, `POST /v1/auth/logout`, `GET /v1/auth/me`,
`POST /v1/auth/password`."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, Response

from api.auth import BEARER_CHALLENGE, AuthDep, AuthenticationError, CurrentUser
from api.errors import ApiError
from api.schemas import LoginIn, MeOut, PasswordChangeIn, TokenOut
from monitoring import AuditEntry
from storage import UserRecord

router = APIRouter(prefix="/v1/auth", tags=["auth"])


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _audit_login(
    request: Request,
    action: str,
    outcome: str,
    username: str,
    user: UserRecord | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    """Logins and refused logins go to the audit trail (the name tried, for a refused one)."""
    entry = AuditEntry(action, outcome=outcome, actor_name=username[:128], detail=detail or {})
    if user is not None:
        entry = AuditEntry(action, outcome=outcome, actor_id=user.id, actor_name=user.username, actor_role=user.role)
    request.app.state.services.audit.record(entry)


@router.post(
    "/login",
    response_model=TokenOut,
    summary="Exchange a username and password for a bearer token",
    responses={401: {"description": "Incorrect username or password"}, 429: {"description": "Too many failures"}},
)
def login(body: LoginIn, request: Request, auth: AuthDep) -> TokenOut | JSONResponse:
    throttle = request.app.state.login_throttle
    client = _client_address(request)
    retry_after = throttle.retry_after_s(client, body.username)
    if retry_after is not None:
        _audit_login(request, "login.throttled", "denied", body.username)
        return JSONResponse(
            {"detail": f"Too many failed logins for this account; try again in {retry_after} s."},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(retry_after)},
        )
    try:
        issued = auth.login(body.username, body.password)
    except AuthenticationError as exc:
        lockouts = throttle.failed(client, body.username)
        _audit_login(request, "login.failed", "failed", body.username)
        for lockout in lockouts:  # every wait a failure starts is in the audit trail
            detail = {"scope": lockout.scope, "failures": lockout.failures, "wait_s": lockout.wait_s}
            _audit_login(request, "login.lockout", "denied", body.username, detail=detail)
        return JSONResponse(
            {"detail": str(exc)},
            status_code=status.HTTP_401_UNAUTHORIZED,
            headers=BEARER_CHALLENGE,
        )
    throttle.succeeded(client, body.username)
    _audit_login(request, "login", "ok", issued.user.username, issued.user)
    return TokenOut(
        access_token=issued.access_token, token_type=issued.token_type, expires_in=issued.expires_in, role=issued.role
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="End the current token now, on every server (log out)",
    responses={400: {"description": "API keys do not log out"}},
)
def logout(user: CurrentUser, auth: AuthDep) -> Response:
    try:
        auth.logout(user)
    except AuthenticationError as exc:
        raise ApiError(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=MeOut, summary="Who the credentials belong to")
def me(user: CurrentUser) -> MeOut:
    return MeOut(id=user.id, username=user.username, role=user.role, kind=user.kind)


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Change your own password (ends your other sessions)",
    responses={400: {"description": "Wrong current password"}, 422: {"description": "New password too weak"}},
)
def change_password(body: PasswordChangeIn, user: CurrentUser, auth: AuthDep) -> Response:
    try:
        auth.change_own_password(user, body.current_password, body.new_password)
    except AuthenticationError as exc:  # not 401: the session itself is fine, only the old password is wrong
        raise ApiError(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except ValueError as exc:  # WeakPasswordError
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
