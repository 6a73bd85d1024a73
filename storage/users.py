"""User accounts and API keys: the tables, plain records and the repository the security layer (api/auth.py) calls.

Storage never sees a password or an API key in clear: callers hand in an argon2 hash (passwords) or a SHA-256 digest
(API keys, which are long random secrets, so a fast digest is enough and keeps per-request lookups cheap).

Every change to who a user is or what they may do (role, password, active flag) increments `token_version`, which
the security layer embeds in its tokens: tokens issued before the change stop working at once.

The repository also enforces the one invariant that must hold in the data itself: there is always at least one active
admin (`LastAdminError`), checked inside the same write transaction as the change.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Boolean, ForeignKey, Integer, String, delete, func, select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.database import Database
from storage.errors import StorageError, StorageUnavailableError
from storage.models import Base
from storage.types import UTCDateTime, record_from_row, utcnow

ADMIN_ROLE = "admin"  # the role that must always keep one active account
MAX_USERNAME_LENGTH = 64
MAX_KEY_NAME_LENGTH = 100
# How stale `api_keys.last_used_at` may get before a request refreshes it: avoids a database write per request.
LAST_USED_RESOLUTION = timedelta(minutes=5)


# --- errors (messages are safe to show: they name no secret) -------------------------------------------------------


class UserNotFoundError(StorageError, LookupError):
    """No user has the requested id."""


class UsernameTakenError(StorageError):
    """Another account already uses this username."""


class LastAdminError(StorageError):
    """The change would leave the workstation without an active admin."""


class ApiKeyNotFoundError(StorageError, LookupError):
    """No API key has the requested id."""


class InvalidUserDataError(StorageError, ValueError):
    """A user or key field is not acceptable (empty, too long, wrong type)."""


# --- tables -----------------------------------------------------------------------------------------------------------


def _new_id() -> str:
    return str(uuid.uuid4())


class User(Base):
    """One person who logs in. `username` is stored normalised (see `normalize_username`)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_new_id)
    username: Mapped[str] = mapped_column(String(MAX_USERNAME_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(36))

    def __repr__(self) -> str:  # never print the hash
        return f"User(id={self.id!r}, username={self.username!r}, role={self.role!r}, active={self.active!r})"


class ApiKey(Base):
    """A service account's credential: only its SHA-256 digest is stored; `prefix` identifies it in listings."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=_new_id)
    name: Mapped[str] = mapped_column(String(MAX_KEY_NAME_LENGTH))
    role: Mapped[str] = mapped_column(String(32))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(36), ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r}, name={self.name!r}, role={self.role!r}, revoked={self.revoked_at is not None})"


class RevokedToken(Base):
    """A login token ended before its expiry (logout). Kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(36))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


# --- plain records ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as the rest of the product sees it (no password hash)."""

    id: str
    username: str
    role: str
    active: bool
    token_version: int
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime
    last_login_at: datetime | None
    created_by: str | None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key's public facts (never its secret or digest)."""

    id: str
    name: str
    role: str
    prefix: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def usable_at(self, moment: datetime) -> bool:
        """Not revoked and not expired at `moment`."""
        return self.revoked_at is None and (self.expires_at is None or moment < self.expires_at)


def _user_record(row: User) -> UserRecord:
    return record_from_row(UserRecord, row)


def _key_record(row: ApiKey) -> ApiKeyRecord:
    return record_from_row(ApiKeyRecord, row)


# --- validation -------------------------------------------------------------------------------------------------------


def normalize_username(username: str) -> str:
    """The stored and compared form: Unicode NFKC, surrounding blanks removed, case folded ("Alice" == "alice")."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


def _text(name: str, value: object, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidUserDataError(f"{name} must be a non-empty string.")
    if len(value) > max_length:
        raise InvalidUserDataError(f"{name} is longer than {max_length} characters.")
    return value


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except DataError as exc:
        raise InvalidUserDataError("The database rejected a user or key field.") from exc
    except OperationalError as exc:
        raise StorageUnavailableError("The database is not reachable or too busy; try again.") from exc


# --- repository -------------------------------------------------------------------------------------------------------


class UserRepository:
    """Users and API keys in one `Database`. Each call is one transaction; a call that returns has committed."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # users

    def create_user(self, username: str, password_hash: str, role: str, *, created_by: str | None = None) -> UserRecord:
        """A new active user; `UsernameTakenError` when the (normalised) username exists."""
        row = User(
            username=normalize_username(_text("username", username, MAX_USERNAME_LENGTH)),
            password_hash=_text("password_hash", password_hash, 255),
            role=_text("role", role, 32),
            created_by=created_by,
        )
        try:
            with _database_errors(), self.database.transaction() as session:
                session.add(row)
                session.flush()
                return _user_record(row)
        except IntegrityError as exc:
            raise UsernameTakenError("This username is already taken.") from exc

    def get_user(self, user_id: str) -> UserRecord:
        with _database_errors(), self.database.session() as session:
            return _user_record(self._user_row(session, user_id))

    def find_credentials(self, username: str) -> tuple[UserRecord, str] | None:
        """The user with this username and their password hash, or None (for login only)."""
        if not isinstance(username, str):
            return None
        with _database_errors(), self.database.session() as session:
            row = session.scalar(select(User).where(User.username == normalize_username(username)))
            return None if row is None else (_user_record(row), row.password_hash)

    def list_users(self) -> list[UserRecord]:
        with _database_errors(), self.database.session() as session:
            return [_user_record(row) for row in session.scalars(select(User).order_by(User.username))]

    def count_active(self, role: str) -> int:
        with _database_errors(), self.database.session() as session:
            statement = select(func.count()).select_from(User).where(User.role == role, User.active.is_(True))
            return int(session.scalar(statement) or 0)

    def update_user(
        self,
        user_id: str,
        *,
        role: str | None = None,
        password_hash: str | None = None,
        active: bool | None = None,
    ) -> UserRecord:
        """Change role, password hash and/or active flag; every real change invalidates the user's tokens.

        Raises `LastAdminError` when the change would leave no active admin, `UserNotFoundError` for an unknown id.
        """
        with _database_errors(), self.database.transaction() as session:
            row = self._user_row(session, user_id, lock=True)
            was_admin = row.active and row.role == ADMIN_ROLE
            changed = False
            if role is not None and role != row.role:
                row.role, changed = _text("role", role, 32), True
            if active is not None and active != row.active:
                row.active, changed = bool(active), True
            if password_hash is not None:
                row.password_hash = _text("password_hash", password_hash, 255)
                row.password_changed_at, changed = utcnow(), True
            if was_admin and not (row.active and row.role == ADMIN_ROLE):
                self._require_another_admin(session, row.id)
            if changed:
                row.token_version += 1
            session.flush()
            return _user_record(row)

    def record_login(self, user_id: str, *, new_password_hash: str | None = None) -> None:
        """Remember the login time; `new_password_hash` upgrades a hash made with older parameters (same password,
        so the token version stays)."""
        with _database_errors(), self.database.transaction() as session:
            row = self._user_row(session, user_id, lock=True)
            row.last_login_at = utcnow()
            if new_password_hash is not None:
                row.password_hash = new_password_hash

    @staticmethod
    def _user_row(session: Session, user_id: str, *, lock: bool = False) -> User:
        row = session.get(User, user_id, with_for_update=lock) if isinstance(user_id, str) else None
        if row is None:
            raise UserNotFoundError("No user with this id.")
        return row

    @staticmethod
    def _require_another_admin(session: Session, user_id: str) -> None:
        # Lock the other admins' rows (PostgreSQL) so two concurrent demotions cannot both pass the check.
        others = session.scalars(
            select(User.id).where(User.role == ADMIN_ROLE, User.active.is_(True), User.id != user_id).with_for_update()
        ).all()
        if not others:
            raise LastAdminError("This is the last active admin: create or promote another admin first.")

    # API keys

    def create_api_key(
        self,
        name: str,
        role: str,
        *,
        key_hash: str,
        prefix: str,
        created_by: str | None,
        expires_at: datetime | None = None,
    ) -> ApiKeyRecord:
        row = ApiKey(
            name=_text("name", name, MAX_KEY_NAME_LENGTH).strip(),
            role=_text("role", role, 32),
            key_hash=_text("key_hash", key_hash, 64),
            prefix=_text("prefix", prefix, 16),
            created_by=created_by,
            expires_at=expires_at,
        )
        try:
            with _database_errors(), self.database.transaction() as session:
                session.add(row)
                session.flush()
                return _key_record(row)
        except IntegrityError as exc:  # a digest collision of two random keys: practically impossible
            raise InvalidUserDataError("The API key could not be stored; try again.") from exc

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with _database_errors(), self.database.session() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id))
            return [_key_record(row) for row in rows]

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this digest (revoked and expired ones included: the caller decides)."""
        with _database_errors(), self.database.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
            return None if row is None else _key_record(row)

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        """Revoke now (idempotent: a revoked key keeps its first revocation time)."""
        with _database_errors(), self.database.transaction() as session:
            row = session.get(ApiKey, key_id, with_for_update=True) if isinstance(key_id, str) else None
            if row is None:
                raise ApiKeyNotFoundError("No API key with this id.")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            session.flush()
            return _key_record(row)

    # revoked login tokens (logout)

    def revoke_token(self, jti: str, user_id: str | None, expires_at: datetime) -> None:
        """Record that the token `jti` is ended (idempotent), and forget revocations whose tokens have expired."""
        now = utcnow()
        with _database_errors(), self.database.transaction() as session:
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
            if session.get(RevokedToken, _text("jti", jti, 64)) is None:
                session.add(RevokedToken(jti=jti, user_id=user_id, revoked_at=now, expires_at=expires_at))

    def is_token_revoked(self, jti: str) -> bool:
        with _database_errors(), self.database.session() as session:
            return session.get(RevokedToken, jti) is not None

    def touch_api_key(self, record: ApiKeyRecord) -> None:
        """Refresh last_used_at, at most once per `LAST_USED_RESOLUTION` (most requests write nothing)."""
        now = utcnow()
        if record.last_used_at is not None and now - record.last_used_at < LAST_USED_RESOLUTION:
            return
        with _database_errors(), self.database.transaction() as session:
            row = session.get(ApiKey, record.id)
            if row is not None:
                row.last_used_at = now
