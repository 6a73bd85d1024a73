"""Accounts and service keys, for admins: `/v1/users` and `/v1/api-keys` (access: api/permissions.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from fastapi import APIRouter, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    USERNAME_PATTERN,
    AuthDep,
    CurrentUser,
    Utf8Text,
)
from api.errors import ApiError
from api.permissions import Role
from storage import (
    ApiKeyNotFoundError,
    ApiKeyRecord,
    LastAdminError,
    UsernameTakenError,
    UserNotFoundError,
    UserRecord,
)

router = APIRouter(prefix="/v1", tags=["users"])


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN.pattern, examples=["dr.house"])
    password: Utf8Text = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    role: Role


class UserPatch(BaseModel):
    """Any subset; a change of role, password or active flag ends the user's current sessions."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    password: Utf8Text | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    active: bool | None = None


class UserOut(BaseModel):
    id: str
    username: str
    role: str
    active: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime
    last_login_at: datetime | None
    created_by: str | None


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Utf8Text = Field(min_length=1, max_length=100, pattern=r"\S", examples=["pacs-router"])
    role: Role
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, description="Empty: never expires.")


class ApiKeyOut(BaseModel):
    id: str
    name: str
    role: str
    prefix: str = Field(description="The key's first characters, to recognise it; the key itself is never shown again.")
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The secret: send it as `X-API-Key` or `Authorization: Bearer`. Shown only now.")


def user_out(user: UserRecord) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        active=user.active,
        created_at=user.created_at,
        updated_at=user.updated_at,
        password_changed_at=user.password_changed_at,
        last_login_at=user.last_login_at,
        created_by=user.created_by,
    )


def key_out(key: ApiKeyRecord) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        role=key.role,
        prefix=key.prefix,
        created_by=key.created_by,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


@contextmanager
def account_errors() -> Iterator[None]:
    """Account errors -> clear HTTP answers (their messages name no secret)."""
    try:
        yield
    except (UserNotFoundError, ApiKeyNotFoundError) as exc:
        raise ApiError(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (UsernameTakenError, LastAdminError) as exc:
        raise ApiError(status.HTTP_409_CONFLICT, str(exc)) from None
    except ValueError as exc:  # WeakPasswordError, a bad username, InvalidUserDataError
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


_ERRORS = {404: {"description": "No such user"}, 409: {"description": "Conflict (taken name, last admin)"}}


@router.get("/users", response_model=list[UserOut], summary="All accounts")
def list_users(auth: AuthDep) -> list[UserOut]:
    return [user_out(user) for user in auth.users.list_users()]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    responses=_ERRORS,
)
def create_user(body: UserIn, admin: CurrentUser, auth: AuthDep) -> UserOut:
    with account_errors():
        created_by = admin.id if admin.kind == "user" else None
        user = auth.create_user(body.username, body.password, body.role, created_by=created_by)
    return user_out(user)


@router.get("/users/{user_id}", response_model=UserOut, summary="One account", responses=_ERRORS)
def get_user(user_id: str, auth: AuthDep) -> UserOut:
    with account_errors():
        return user_out(auth.users.get_user(user_id))


@router.patch(
    "/users/{user_id}", response_model=UserOut, summary="Change role, password or active flag", responses=_ERRORS
)
def update_user(user_id: str, body: UserPatch, auth: AuthDep) -> UserOut:
    with account_errors():
        user = auth.update_account(user_id, role=body.role, password=body.password, active=body.active)
    return user_out(user)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Deactivate an account (kept for the audit trail: cases name their creators)",
    responses=_ERRORS,
)
def deactivate_user(user_id: str, auth: AuthDep) -> Response:
    with account_errors():
        auth.users.update_user(user_id, active=False)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api-keys", response_model=list[ApiKeyOut], summary="All API keys (never their secrets)")
def list_api_keys(auth: AuthDep) -> list[ApiKeyOut]:
    return [key_out(key) for key in auth.users.list_api_keys()]


@router.post(
    "/api-keys",
    response_model=ApiKeyCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a service-account key; the answer is the only time the key is shown",
)
def create_api_key(body: ApiKeyIn, admin: CurrentUser, auth: AuthDep) -> ApiKeyCreatedOut:
    with account_errors():
        created_by = admin.id if admin.kind == "user" else None
        record, key = auth.create_api_key(
            body.name, body.role, created_by=created_by, expires_in_days=body.expires_in_days
        )
    return ApiKeyCreatedOut(**key_out(record).model_dump(), key=key)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke an API key (immediately; idempotent)",
    responses={404: {"description": "No such key"}},
)
def revoke_api_key(key_id: str, auth: AuthDep) -> Response:
    with account_errors():
        auth.users.revoke_api_key(key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
