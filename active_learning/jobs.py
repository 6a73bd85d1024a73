"""Retraining jobs: their state in the database, shared by every backend process and surviving a restart.

A job is `queued` -> `running` -> `promoted` | `rejected` (the reason is stored) | `failed` (the error is stored).

Never two active (queued or running) jobs, across processes: an active job fills `active_slot` with the one value
`ACTIVE`, a finished job leaves it NULL, and the column is UNIQUE. SQLite and PostgreSQL both allow any number of
NULLs in a unique column, so the database itself refuses a second active job, whichever process inserts it.

Runners take a job with one conditional UPDATE (queued, or running with a heartbeat older than the stale limit),
so two runners never both win it; the winner writes its `owner` id and beats while it works. A runner whose job was
taken over finds out at its next beat (`JobLostError`) and stops. Each completed step of the work is recorded in
`progress` (`steps_done` and what a later step needs), so the runner that takes over resumes after the last one.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import Integer, String, Text, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from active_learning.errors import ActiveLearningError
from storage import Base, Database, JSONType, UTCDateTime, utcnow

ACTIVE = "active"  # the one value of `active_slot` (see the module docstring)
MAX_PAGE = 200
TRIGGERS = ("admin", "labels")
STALE_BEATS = 6  # a running job whose heartbeat is this many beats old is taken over


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"


FINAL_STATES = frozenset({JobState.PROMOTED, JobState.REJECTED, JobState.FAILED})


class RetrainingJobError(ActiveLearningError, ValueError):
    """A retraining job request cannot be done, e.g. an unknown trigger (422); the message says why."""


class JobAlreadyActiveError(RetrainingJobError):
    """Another retraining job is queued or running (the API answers 409)."""


class JobNotFoundError(RetrainingJobError, LookupError):
    """No retraining job has this id (404)."""


class JobLostError(RetrainingJobError):
    """This runner no longer owns the job: it finished, or another runner took it over after a missed heartbeat."""


class RetrainingJob(Base):
    __tablename__ = "retraining_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # ACTIVE while queued or running, NULL once final: UNIQUE, so the database allows one active job.
    active_slot: Mapped[str | None] = mapped_column(String(8), unique=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # how many runners have taken it
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    champion_version: Mapped[str | None] = mapped_column(String(128))
    challenger_version: Mapped[str | None] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))


@dataclass(frozen=True)
class JobRecord:
    id: str
    state: JobState
    trigger: str
    requested_by: str | None
    note: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None
    heartbeat_at: datetime | None
    attempts: int
    progress: dict[str, Any]
    reason: str | None
    error: str | None
    champion_version: str | None
    challenger_version: str | None
    metrics: dict[str, Any]
    mlflow_run_id: str | None

    @property
    def active(self) -> bool:
        return self.state not in FINAL_STATES

    @property
    def steps_done(self) -> list[str]:
        return list(self.progress.get("steps_done", []))

    def to_dict(self) -> dict[str, Any]:
        """The shape of `GET /v1/retraining/{id}` (runner bookkeeping left out)."""
        values = asdict(self)
        for runner_field in ("owner", "heartbeat_at", "attempts", "note"):
            values.pop(runner_field)
        values["state"] = self.state.value
        return values


class JobPage(NamedTuple):
    jobs: list[JobRecord]
    total: int


def _record(row: RetrainingJob) -> JobRecord:
    values = {name: getattr(row, name) for name in JobRecord.__dataclass_fields__}
    values["state"] = JobState(row.state)
    values["progress"] = dict(row.progress or {})
    values["metrics"] = dict(row.metrics or {})
    return JobRecord(**values)


class RetrainingJobs:
    """The job table's repository; safe to use from several threads and processes at once."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def start(self, trigger: str, requested_by: str | None, *, note: str | None = None) -> JobRecord:
        """Queue a new job; `JobAlreadyActiveError` while another one is queued or running (in any process)."""
        if trigger not in TRIGGERS:
            raise RetrainingJobError(f"Unknown retraining trigger {trigger!r} (expected one of {', '.join(TRIGGERS)}).")
        row = RetrainingJob(
            id=str(uuid.uuid4()),
            state=JobState.QUEUED.value,
            trigger=trigger,
            requested_by=requested_by,
            note=note,
            created_at=utcnow(),
            active_slot=ACTIVE,
            attempts=0,
            progress={"steps_done": []},
            metrics={},
        )
        try:
            with self.database.transaction() as session:
                session.add(row)
        except IntegrityError:
            active = self.active()
            which = f" (job {active.id}, {active.state.value})" if active else ""
            raise JobAlreadyActiveError(
                f"A retraining job is already queued or running{which}; wait for it to finish."
            ) from None
        return _record(row)

    def get(self, job_id: str) -> JobRecord:
        with self.database.session() as session:
            row = session.get(RetrainingJob, job_id)
            if row is None:
                raise JobNotFoundError(f"No retraining job {job_id}.")
            return _record(row)

    def list(self, limit: int = 50, offset: int = 0) -> JobPage:
        """Jobs newest first, with the total count."""
        limit, offset = max(1, min(limit, MAX_PAGE)), max(0, offset)
        with self.database.session() as session:
            total = session.scalar(select(func.count()).select_from(RetrainingJob)) or 0
            query = select(RetrainingJob).order_by(RetrainingJob.created_at.desc(), RetrainingJob.id)
            rows = session.scalars(query.limit(limit).offset(offset))
            return JobPage([_record(row) for row in rows], int(total))

    def active(self) -> JobRecord | None:
        """The queued or running job, if there is one."""
        with self.database.session() as session:
            row = session.scalars(select(RetrainingJob).where(RetrainingJob.active_slot == ACTIVE)).first()
            return _record(row) if row is not None else None

    def latest(self) -> JobRecord | None:
        """The most recently created job (the new-label trigger counts labels since it was created)."""
        page = self.list(limit=1)
        return page.jobs[0] if page.jobs else None

    # --- runners ---------------------------------------------------------------------------------------------------

    def claim_due(self, owner: str, heartbeat_s: float) -> JobRecord | None:
        """Take the due job for `owner`: a queued one, or a running one whose heartbeat is older than
        STALE_BEATS x `heartbeat_s` (its runner died). One conditional UPDATE: of two runners, one wins."""
        now = utcnow()
        stale_before = now - timedelta(seconds=STALE_BEATS * heartbeat_s)
        due = or_(
            RetrainingJob.state == JobState.QUEUED.value,
            (RetrainingJob.state == JobState.RUNNING.value) & (RetrainingJob.heartbeat_at < stale_before),
        )
        with self.database.transaction() as session:
            job_id = session.scalar(select(RetrainingJob.id).where(RetrainingJob.active_slot == ACTIVE, due))
            if job_id is None:
                return None
            taken = session.execute(
                update(RetrainingJob)
                .where(RetrainingJob.id == job_id, RetrainingJob.active_slot == ACTIVE, due)
                .values(
                    state=JobState.RUNNING.value,
                    owner=owner,
                    heartbeat_at=now,
                    started_at=func.coalesce(RetrainingJob.started_at, now),
                    attempts=RetrainingJob.attempts + 1,
                )
            )
            if taken.rowcount != 1:
                return None
        return self.get(job_id)

    def heartbeat(self, job_id: str, owner: str) -> None:
        """Tell the others this runner is alive; `JobLostError` if the job is no longer this runner's."""
        self._update_owned(job_id, owner, {})

    def record_step(self, job_id: str, owner: str, step: str, **facts: Any) -> JobRecord:
        """Mark `step` completed and keep `facts` (JSON values) under progress[step] for a runner that resumes."""
        current = self.get(job_id)
        progress = dict(current.progress)
        progress["steps_done"] = [*(s for s in current.steps_done if s != step), step]
        progress["step"] = step
        if facts:
            progress[step] = facts
        self._update_owned(job_id, owner, {"progress": progress})
        return self.get(job_id)

    def set_versions(self, job_id: str, owner: str, **columns: Any) -> None:
        """Fill champion_version / challenger_version / mlflow_run_id / metrics as they become known."""
        allowed = {"champion_version", "challenger_version", "mlflow_run_id", "metrics"}
        unknown = set(columns) - allowed
        if unknown:
            raise RetrainingJobError(f"Not a job column a runner sets: {', '.join(sorted(unknown))}.")
        self._update_owned(job_id, owner, columns)

    def finish(
        self,
        job_id: str,
        owner: str,
        state: JobState,
        *,
        reason: str | None = None,
        error: str | None = None,
        **columns: Any,
    ) -> JobRecord:
        """Put the job in a final state (freeing the active slot) with the reason or the error."""
        if state not in FINAL_STATES:
            raise RetrainingJobError(f"{state.value} is not a final job state.")
        values = {"state": state.value, "finished_at": utcnow(), "active_slot": None, "reason": reason, "error": error}
        self._update_owned(job_id, owner, values | columns)
        return self.get(job_id)

    def _update_owned(self, job_id: str, owner: str, values: dict[str, Any]) -> None:
        with self.database.transaction() as session:
            changed = session.execute(
                update(RetrainingJob)
                .where(
                    RetrainingJob.id == job_id,
                    RetrainingJob.owner == owner,
                    RetrainingJob.state == JobState.RUNNING.value,
                )
                .values(heartbeat_at=utcnow(), **values)
            )
            if changed.rowcount != 1:
                raise JobLostError(f"Retraining job {job_id} is no longer run by {owner} (finished or taken over).")
