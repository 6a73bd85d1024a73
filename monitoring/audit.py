"""The audit trail: who did what to which case, when, from where, with which model; append-only and hash-chained.

Each row's `hash` is HMAC-SHA256 (key: AUDIT_KEY, or var_dir/audit.key created once) over the row's fields and the
previous row's hash. Someone who can write to the database but does not hold the key cannot change, insert or
delete a row without `verify` noticing, and it names the first such row:
- altered: the row no longer matches its hash, yet the next row still links to that hash;
- inserted: the row matches no hash and the next row links to the row before it (or it is a forged last row);
- deleted: a row with a valid hash links to a hash no remaining row has (rows before it are gone).
Deleting rows at the very end leaves a shorter, valid chain; compare `verify`'s count and head hash with a copy
kept elsewhere (the CLI prints both) to see that.

Appends are serialised across processes (PostgreSQL advisory lock; SQLite's write lock), so the chain never forks.

    python -m monitoring.audit verify
    python -m monitoring.audit export --from 2026-12-01 --to 2026-12-31 --out audit.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from monitoring.models import AuditEvent
from settings import Settings, get_settings
from storage import Case, Database, active_phi_cipher, create_secret_file_once

GENESIS = "0" * 64
AUDIT_KEY_FILE = "audit.key"
_POSTGRES_AUDIT_LOCK_ID = 0x6378722D61756474  # "cxr-audt"
HASHED_FIELDS = ("at", "action", "outcome", "actor_id", "actor_name", "actor_role", "client", "target_id",
                 "patient_ref", "model_version", "detail", "request_id")  # fmt: skip
CSV_FIELDS = ("id", *HASHED_FIELDS, "prev_hash", "hash")


@dataclass(frozen=True)
class RequestContext:
    """Where the current request comes from; set by the API's middleware, read by `AuditTrail.record`."""

    request_id: str
    client: str | None


REQUEST_CONTEXT: ContextVar[RequestContext | None] = ContextVar("cxr_request_context", default=None)


@dataclass(frozen=True)
class AuditEntry:
    action: str  # e.g. login, login.failed, access.denied, prediction, case.view, report.download
    outcome: str = "ok"  # ok | denied | failed
    actor_id: str | None = None
    actor_name: str | None = None
    actor_role: str | None = None
    target_id: str | None = None
    case_id: str | None = None  # sets target_id and looks up the case's patient reference
    model_version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainProblem:
    kind: str  # altered | inserted | deleted
    record_id: int
    message: str


@dataclass(frozen=True)
class Verification:
    records: int
    head_hash: str
    problem: ChainProblem | None

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None  # user id or username
    action: str | None = None
    patient_id: str | None = None
    date_from: date | None = None
    date_to: date | None = None  # inclusive


def load_audit_key(settings: Settings) -> bytes:
    """AUDIT_KEY, or var_dir/audit.key (created once, mode 0600)."""
    configured = settings.audit_key.get_secret_value().strip()
    if configured:
        return configured.encode()
    path = Path(settings.var_dir) / AUDIT_KEY_FILE
    if not path.exists():
        create_secret_file_once(path, lambda: secrets.token_urlsafe(48))
    return path.read_text(encoding="ascii").strip().encode()


def _canonical(row: AuditEvent) -> bytes:
    values = {name: getattr(row, name) for name in HASHED_FIELDS}
    values["at"] = row.at.astimezone(UTC).isoformat(timespec="microseconds")
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str).encode()


def _hash(key: bytes, prev_hash: str, row: AuditEvent) -> str:
    return hmac.new(key, prev_hash.encode() + b"\n" + _canonical(row), hashlib.sha256).hexdigest()


class AuditTrail:
    def __init__(self, database: Database, key: bytes) -> None:
        self.database = database
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings, database: Database) -> AuditTrail:
        return cls(database, load_audit_key(settings))

    def record(self, entry: AuditEntry) -> int:
        """Append one event (chained to the last one) and return its id."""
        context = REQUEST_CONTEXT.get()
        with self.database.transaction() as session:
            self._lock(session)
            last = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).first()
            row = AuditEvent(
                at=datetime.now(UTC),
                action=entry.action,
                outcome=entry.outcome,
                actor_id=entry.actor_id,
                actor_name=entry.actor_name[:128] if entry.actor_name else None,
                actor_role=entry.actor_role,
                client=context.client if context else None,
                target_id=(entry.case_id or entry.target_id or "")[:64] or None,  # a path segment can be longer
                patient_ref=self._patient_ref(session, entry.case_id),
                model_version=entry.model_version,
                detail=entry.detail,
                request_id=context.request_id if context else None,
            )
            row.prev_hash = last.hash if last else GENESIS
            row.hash = _hash(self._key, row.prev_hash, row)
            session.add(row)
            session.flush()
            return row.id

    @staticmethod
    def _lock(session: Session) -> None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _POSTGRES_AUDIT_LOCK_ID})

    @staticmethod
    def _patient_ref(session: Session, case_id: str | None) -> str | None:
        if case_id is None:
            return None
        return session.scalar(select(Case.patient_id_hash).where(Case.id == case_id))

    def verify(self) -> Verification:
        with self.database.session() as session:
            rows = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        problem = first_problem(rows, self._key)
        return Verification(len(rows), rows[-1].hash if rows else GENESIS, problem)

    def events(self, where: AuditFilter, limit: int = 200, offset: int = 0) -> list[AuditEvent]:
        """Newest first."""
        query = select(AuditEvent).where(*_conditions(where)).order_by(AuditEvent.id.desc())
        with self.database.session() as session:
            return list(session.scalars(query.limit(limit).offset(offset)))

    def matching(self, where: AuditFilter) -> Iterator[AuditEvent]:
        """Every matching event, oldest first, read as it is consumed (an export of a long range)."""
        query = select(AuditEvent).where(*_conditions(where)).order_by(AuditEvent.id)
        with self.database.session() as session:
            yield from session.scalars(query)

    def export_csv(self, where: AuditFilter, out: TextIO) -> int:
        """Every matching event, oldest first, as CSV with the hashes (so a copy can be re-verified)."""
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        count = 0
        for row in self.matching(where):
            writer.writerow([_csv_value(row, name) for name in CSV_FIELDS])
            count += 1
        return count


def _csv_value(row: AuditEvent, name: str) -> str:
    value = getattr(row, name)
    if name == "at":
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if name == "detail":
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def _conditions(where: AuditFilter) -> list[Any]:
    conditions: list[Any] = []
    if where.actor:
        conditions.append((AuditEvent.actor_id == where.actor) | (AuditEvent.actor_name == where.actor))
    if where.action:
        conditions.append(AuditEvent.action == where.action)
    if where.patient_id:
        conditions.append(AuditEvent.patient_ref.in_(active_phi_cipher().patient_id_hashes(where.patient_id)))
    if where.date_from:
        conditions.append(AuditEvent.at >= datetime.combine(where.date_from, time.min, UTC))
    if where.date_to:
        conditions.append(AuditEvent.at < datetime.combine(where.date_to + timedelta(days=1), time.min, UTC))
    return conditions


def first_problem(rows: Sequence[AuditEvent], key: bytes) -> ChainProblem | None:
    """The first altered, inserted or deleted record of a chain in id order (see the module docstring)."""
    expected = GENESIS
    for index, row in enumerate(rows):
        genuine = hmac.compare_digest(_hash(key, row.prev_hash, row), row.hash)
        linked = row.prev_hash == expected
        if genuine and linked:
            expected = row.hash
            continue
        if genuine:
            return ChainProblem("deleted", row.id, f"records before record {row.id} were deleted (it links to none)")
        following = rows[index + 1] if index + 1 < len(rows) else None
        if (following is not None and following.prev_hash == row.hash) or (following is None and linked):
            return ChainProblem("altered", row.id, f"record {row.id} was altered (it no longer matches its hash)")
        return ChainProblem("inserted", row.id, f"record {row.id} was inserted (it is not part of the chain)")
    return None


# --- command line ---------------------------------------------------------------------------------------------------


def _verify(trail: AuditTrail, out: TextIO) -> int:
    result = trail.verify()
    if result.problem is None:
        print(f"OK: {result.records} records, chain intact; head {result.head_hash}", file=out)
        return 0
    print(f"TAMPERED: {result.problem.message} ({result.problem.kind}); {result.records} records", file=out)
    return 1


def _export(trail: AuditTrail, args: argparse.Namespace, out: TextIO) -> int:
    where = AuditFilter(date_from=args.date_from, date_to=args.date_to)
    with Path(args.out).open("w", newline="", encoding="utf-8") as handle:
        count = trail.export_csv(where, handle)
    print(f"wrote {count} records to {args.out}", file=out)
    return 0


def main(argv: Iterable[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring.audit", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("verify", help="check the hash chain; names the first altered, inserted or deleted record")
    export = commands.add_parser("export", help="write a date range as CSV")
    export.add_argument("--from", dest="date_from", type=date.fromisoformat, default=None)
    export.add_argument("--to", dest="date_to", type=date.fromisoformat, default=None)
    export.add_argument("--out", required=True)
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = get_settings()
    database = Database(settings.resolved_database_url)
    try:
        trail = AuditTrail.from_settings(settings, database)
        return _verify(trail, out) if args.command == "verify" else _export(trail, args, out)
    finally:
        database.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
