"""Authentication: who is calling. Passwords (argon2id), login tokens (JWT, HS256, with expiry), API keys (random
secrets stored as SHA-256 digests, shown once, revocable), the first admin, and the `current_user` dependency.

What a caller may do is decided elsewhere, from the one table in api/permissions.py (enforced by
api/security.py before any handler runs). This module only answers "who is this", and says 401 when it cannot.

Tokens carry the user's id and `token_version`; every request re-reads the account, so a deactivated user, a changed
password or a changed role ends the old tokens at once (the role used is always the stored one, never the token's).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request, status

from api.schemas import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, USERNAME_PATTERN, Role, require_utf8
from settings import Settings
from storage import (
    ApiKeyRecord,
    Database,
    UsernameTakenError,
    UserRecord,
    UserRepository,
    create_secret_file_once,
    normalize_username,
)

logger = logging.getLogger("cxr.auth")

TOKEN_TYPE = "bearer"
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cxr-workstation"'}  # sent with every 401
JWT_ALGORITHM = "HS256"
JWT_ISSUER = "cxr-workstation"
JWT_SECRET_FILE = "jwt.secret"
MIN_JWT_SECRET_LENGTH = 32
API_KEY_PREFIX = "cxrk_"
API_KEY_HEADER = "X-API-Key"
API_KEY_DISPLAY_LENGTH = 12  # "cxrk_" + 7 characters: enough to tell keys apart in a listing, useless to guess
# Passwords that pass the length rule yet are the first ones any attacker tries.
COMMON_PASSWORDS = frozenset(
    {
        "password1234",
        "password12345",
        "password123456",
        "123456789012",
        "1234567890123",
        "qwertyuiop12",
        "qwertyuiopasdf",
        "changeme1234",
        "administrator",
        "adminadmin123",
        "letmein12345",
        "welcome12345",
        "iloveyou1234",
    }
)

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): about 0.1 s on an idle CPU core.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

PrincipalKind = Literal["user", "api_key"]


class AuthenticationError(Exception):
    """The credentials are missing, malformed, expired, revoked or wrong (HTTP 401). The message is safe to show."""


class ConfigurationError(RuntimeError):
    """A security setting is missing or unusable: the backend refuses to start."""


class WeakPasswordError(ValueError):
    """A new password breaks the policy; the message says which rule."""


@dataclass(frozen=True)
class Principal:
    """The caller of a request: a user (logged in with a token) or a service account (API key)."""

    id: str
    username: str
    role: Role
    kind: PrincipalKind = "user"
    token_id: str | None = None  # the login token's `jti` (users only): what logout revokes
    token_expires_at: datetime | None = None


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    token_type: str
    expires_in: int  # seconds
    role: Role
    user: UserRecord


# --- passwords ----------------------------------------------------------------------------------------------------


def validate_username(username: str) -> str:
    """The normalised username, or ValueError naming the rule."""
    if not USERNAME_PATTERN.match(username or ""):
        raise ValueError(
            "A username has 3-64 characters: letters, digits and . _ @ -, starting with a letter or digit."
        )
    return normalize_username(username)


def validate_password(password: str, username: str = "") -> None:
    """NIST SP 800-63B style: length, not a well-known password, not the username; no composition rules."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"The password must have at most {MAX_PASSWORD_LENGTH} characters.")
    require_utf8(password)
    folded = unicodedata.normalize("NFKC", password).casefold()
    if folded in COMMON_PASSWORDS or len(set(folded)) < 4:
        raise WeakPasswordError("The password is too easy to guess; choose a longer, less common one.")
    name = normalize_username(username) if username else ""
    if len(name) >= 3 and name in folded:
        raise WeakPasswordError("The password must not contain the username.")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
        return False


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so that answer takes as long as a wrong password."""
    return _HASHER.hash(secrets.token_urlsafe(24))


def generate_password() -> str:
    """A random password for a new account (about 128 bits), printed once by the CLI."""
    return secrets.token_urlsafe(16)


# --- secrets and settings -----------------------------------------------------------------------------------------


def _create_jwt_secret_once(path: Path) -> None:
    if create_secret_file_once(path, lambda: secrets.token_urlsafe(48)):
        logger.warning("Generated a development token-signing secret in %s.", path)


def load_jwt_secret(settings: Settings) -> str:
    """JWT_SECRET, or in development var_dir/jwt.secret (created once, mode 0600). Production requires JWT_SECRET."""
    configured = settings.jwt_secret.get_secret_value().strip()
    if configured:
        if len(configured) < MIN_JWT_SECRET_LENGTH:
            raise ConfigurationError(f"JWT_SECRET must have at least {MIN_JWT_SECRET_LENGTH} characters.")
        return configured
    if settings.environment == "production":
        raise ConfigurationError(
            "JWT_SECRET is not set: in production the API refuses to start without a token-signing secret. "
            'Create one with `python -c "import secrets; print(secrets.token_urlsafe(48))"` and set it.'
        )
    path = Path(settings.var_dir) / JWT_SECRET_FILE
    if not path.exists():
        _create_jwt_secret_once(path)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < MIN_JWT_SECRET_LENGTH:
        raise ConfigurationError(f"{path} holds no usable secret; delete it to have a new one generated.")
    return secret


def check_security_settings(settings: Settings) -> None:
    """Refuse to build the app on unusable security settings (before anything is started)."""
    if settings.environment == "production" and not settings.jwt_secret.get_secret_value().strip():
        load_jwt_secret(settings)  # raises the explanatory ConfigurationError
    username, password = settings.admin_username.strip(), settings.admin_password.get_secret_value()
    if bool(username) != bool(password):
        raise ConfigurationError("Set both ADMIN_USERNAME and ADMIN_PASSWORD, or neither.")
    if username:
        try:
            validate_username(username)
            validate_password(password, username)
        except ValueError as exc:
            raise ConfigurationError(f"ADMIN_USERNAME/ADMIN_PASSWORD rejected: {exc}") from None


# --- tokens, keys, accounts ---------------------------------------------------------------------------------------


def api_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise AuthenticationError("The account has no valid role; ask an admin.") from None


class AuthService:
    """Logins, token checks, API keys and account changes that involve a password, over one `UserRepository`."""

    def __init__(self, users: UserRepository, secret: str, token_ttl: timedelta) -> None:
        self.users = users
        self._secret = secret
        self.token_ttl = token_ttl

    @classmethod
    def start(cls, settings: Settings, database: Database) -> AuthService:
        """Load the signing secret and create the first admin from settings when configured and absent."""
        ttl = timedelta(minutes=settings.token_ttl_minutes)
        service = cls(UserRepository(database), load_jwt_secret(settings), ttl)
        service.ensure_admin_from_settings(settings)
        return service

    # accounts

    def create_user(self, username: str, password: str, role: Role, *, created_by: str | None = None) -> UserRecord:
        """Validate and create (ValueError for a bad username/password, UsernameTakenError for a duplicate)."""
        normalized = validate_username(username)
        validate_password(password, normalized)
        return self.users.create_user(normalized, hash_password(password), role.value, created_by=created_by)

    def update_account(
        self, user_id: str, *, role: Role | None = None, password: str | None = None, active: bool | None = None
    ) -> UserRecord:
        """One atomic change of role, password and/or active flag (the password checked against the policy)."""
        password_hash = None
        if password is not None:
            validate_password(password, self.users.get_user(user_id).username)
            password_hash = hash_password(password)
        return self.users.update_user(
            user_id, role=role.value if role else None, password_hash=password_hash, active=active
        )

    def change_own_password(self, principal: Principal, current: str, new: str) -> UserRecord:
        if principal.kind != "user":
            raise AuthenticationError("API keys have no password.")
        found = self.users.find_credentials(principal.username)
        if found is None or not verify_password(found[1], current):
            raise AuthenticationError("The current password is not correct.")
        return self.update_account(principal.id, password=new)

    def ensure_admin_from_settings(self, settings: Settings) -> UserRecord | None:
        """Create ADMIN_USERNAME with ADMIN_PASSWORD as admin when no account has that name; never resets one."""
        check_security_settings(settings)
        username = settings.admin_username.strip()
        if not username:
            if self.users.count_active(Role.ADMIN.value) == 0:
                logger.warning(
                    "No admin account exists: set ADMIN_USERNAME and ADMIN_PASSWORD, or run "
                    "`python -m api.admin create-admin --username NAME`."
                )
            return None
        found = self.users.find_credentials(username)
        if found is not None:
            if found[0].role != Role.ADMIN.value or not found[0].active:
                logger.warning("ADMIN_USERNAME names an account that is not an active admin; it was left unchanged.")
            return found[0]
        try:
            user = self.create_user(username, settings.admin_password.get_secret_value(), Role.ADMIN)
        except UsernameTakenError:  # another replica created it at the same moment
            found = self.users.find_credentials(username)
            return found[0] if found else None
        logger.info("Created the first admin account from ADMIN_USERNAME.")
        return user

    # login and tokens

    def login(self, username: str, password: str) -> IssuedToken:
        """A token for valid credentials of an active account; one and the same AuthenticationError otherwise."""
        found = self.users.find_credentials(username) if len(password) <= MAX_PASSWORD_LENGTH else None
        if found is None:
            verify_password(_dummy_hash(), password[:MAX_PASSWORD_LENGTH])  # same time as a wrong password
            raise AuthenticationError("Incorrect username or password.")
        user, password_hash = found
        if not verify_password(password_hash, password) or not user.active:
            raise AuthenticationError("Incorrect username or password.")
        upgraded = hash_password(password) if _HASHER.check_needs_rehash(password_hash) else None
        self.users.record_login(user.id, new_password_hash=upgraded)
        return self.issue_token(user)

    def issue_token(self, user: UserRecord, *, now: datetime | None = None) -> IssuedToken:
        issued = now or datetime.now(UTC)
        claims = {
            "iss": JWT_ISSUER,
            "sub": user.id,
            "role": user.role,  # informational: authorisation always reads the stored role
            "ver": user.token_version,
            "iat": issued,
            "exp": issued + self.token_ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM)
        return IssuedToken(token, TOKEN_TYPE, int(self.token_ttl.total_seconds()), _role(user.role), user)

    def authenticate(self, credential: str) -> Principal:
        """A bearer credential (JWT or API key) -> its principal, or AuthenticationError."""
        if credential.startswith(API_KEY_PREFIX):
            return self.authenticate_api_key(credential)
        return self.authenticate_token(credential)

    def authenticate_token(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                issuer=JWT_ISSUER,
                options={"require": ["exp", "iat", "sub", "ver", "iss", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("The token has expired; log in again.") from None
        except jwt.InvalidTokenError:
            raise AuthenticationError("The token is not valid; log in again.") from None
        user = self._user_or_none(claims["sub"])
        if user is None or not user.active or user.token_version != claims["ver"]:
            raise AuthenticationError("The token is no longer valid (the account changed); log in again.")
        if not isinstance(claims["jti"], str) or self.users.is_token_revoked(claims["jti"]):
            raise AuthenticationError("The token has been revoked (logged out); log in again.")
        expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        return Principal(user.id, user.username, _role(user.role), "user", claims["jti"], expires_at)

    def logout(self, principal: Principal) -> None:
        """End the caller's token now, on every replica (the revocation is stored in the database)."""
        if principal.token_id is None or principal.token_expires_at is None:
            raise AuthenticationError("API keys do not log out; an admin revokes them (DELETE /v1/api-keys/{id}).")
        self.users.revoke_token(principal.token_id, principal.id, principal.token_expires_at)

    def _user_or_none(self, user_id: object) -> UserRecord | None:
        if not isinstance(user_id, str):
            return None
        try:
            return self.users.get_user(user_id)
        except LookupError:
            return None

    # API keys

    def create_api_key(
        self, name: str, role: Role, *, created_by: str | None, expires_in_days: int | None = None
    ) -> tuple[ApiKeyRecord, str]:
        """A new key; the secret is returned here and never again (only its digest is stored)."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
        record = self.users.create_api_key(
            name,
            role.value,
            key_hash=api_key_digest(key),
            prefix=key[:API_KEY_DISPLAY_LENGTH],
            created_by=created_by,
            expires_at=expires_at,
        )
        return record, key

    def authenticate_api_key(self, key: str) -> Principal:
        record = self.users.find_api_key(api_key_digest(key)) if len(key) <= 128 else None
        if record is None:
            raise AuthenticationError("The API key is not valid.")
        if record.revoked_at is not None:
            raise AuthenticationError("The API key has been revoked.")
        if not record.usable_at(datetime.now(UTC)):
            raise AuthenticationError("The API key has expired.")
        self.users.touch_api_key(record)
        return Principal(record.id, record.name, _role(record.role), "api_key")


# --- request side ---------------------------------------------------------------------------------------------------


def bearer_credential(authorization: str | None, api_key: str | None) -> str | None:
    """The credential a request carries: `Authorization: Bearer <token or key>`, else `X-API-Key: <key>`.

    Raises AuthenticationError for an Authorization header of another scheme (e.g. Basic).
    """
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != TOKEN_TYPE or not value.strip():
            raise AuthenticationError("Send `Authorization: Bearer <token>` (get a token from POST /v1/auth/login).")
        return value.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def get_auth(request: Request) -> AuthService:
    return request.app.state.auth


def current_user(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller (set by the access-control middleware before the handler)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Authentication required.", headers=BEARER_CHALLENGE)
    return principal


# Annotated dependencies for handlers: `def handler(user: CurrentUser, auth: AuthDep)`.
CurrentUser = Annotated[Principal, Depends(current_user)]
AuthDep = Annotated[AuthService, Depends(get_auth)]
