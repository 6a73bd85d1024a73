"""Accounts and service keys, for admins: `/v1/users` and `/v1/api-keys` (access: api/permissions.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from fastapi import APIRouter, status
from fastapi.responses import Response

from api.auth import AuthDep, CurrentUser
from api.errors import ApiError
from api.schemas import ApiKeyCreatedOut, ApiKeyIn, ApiKeyOut, UserIn, UserOut, UserPatch
from storage import (
    ApiKeyNotFoundError,
    LastAdminError,
    UsernameTakenError,
    UserNotFoundError,
)

router = APIRouter(prefix="/v1", tags=["users"])


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
    return [UserOut.model_validate(user) for user in auth.users.list_users()]


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
    return UserOut.model_validate(user)


@router.get("/users/{user_id}", response_model=UserOut, summary="One account", responses=_ERRORS)
def get_user(user_id: str, auth: AuthDep) -> UserOut:
    with account_errors():
        return UserOut.model_validate(auth.users.get_user(user_id))


@router.patch(
    "/users/{user_id}", response_model=UserOut, summary="Change role, password or active flag", responses=_ERRORS
)
def update_user(user_id: str, body: UserPatch, auth: AuthDep) -> UserOut:
    with account_errors():
        user = auth.update_account(user_id, role=body.role, password=body.password, active=body.active)
    return UserOut.model_validate(user)


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
    return [ApiKeyOut.model_validate(key) for key in auth.users.list_api_keys()]


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
    return ApiKeyCreatedOut.model_validate({**asdict(record), "key": key})


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
