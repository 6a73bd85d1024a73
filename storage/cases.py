"""Case records: the repository the API and the domain rooms call, and the plain typed objects it returns.

Callers never see ORM objects or sessions: `create_case` takes a `NewCase`, every read returns frozen
`CaseRecord`s (decrypted, detached, safe to pass to any thread or room). Each call is one transaction; a call that
returns has committed (durably: see `storage.database`).

Rules enforced here: model output (prediction, probabilities, ...) is immutable once stored, so human labels belong
to annotations, not to the case; a signed case cannot change; status "signed" always comes with signed_by/at.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from storage.crypto import active_phi_cipher
from storage.database import Database
from storage.errors import CaseNotFoundError, CaseStateError, InvalidCaseDataError, StorageUnavailableError
from storage.models import Case, CaseStatus, new_case_id
from storage.types import as_utc, record_from_row, utcnow

MAX_PAGE_SIZE = 500
MAX_REVIEW_REASON_LENGTH = 2000
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class PatientInfo:
    """Patient fields of a case. patient_id, name, birth_date and clinical_history are encrypted at rest.

    Identifying fields are left out of repr(), so a logged record never carries them.
    """

    patient_id: str | None = field(default=None, repr=False)
    name: str | None = field(default=None, repr=False)
    birth_date: date | None = field(default=None, repr=False)
    age: int | None = None
    sex: str | None = None
    clinical_history: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class NewCase:
    """Everything needed to store one analysed study."""

    image_sha256: str
    image_format: str
    task: str
    prediction: str
    confidence: float
    probabilities: Mapping[str, float]
    model_version: str
    patient: PatientInfo = field(default_factory=PatientInfo)
    study_metadata: Mapping[str, Any] = field(default_factory=dict)  # DICOM tags, format, width, height
    positive_probability: float | None = None
    threshold: float | None = None
    uncertainty: Mapping[str, Any] | None = None
    uncertain: bool = False
    ood: bool | None = None
    ood_reason: str | None = None
    quality_warnings: Sequence[Any] = ()  # strings or JSON objects
    created_by: str | None = None
    status: CaseStatus | str = CaseStatus.ANALYZED
    embedding: bytes | None = None  # float32 embedding of the image under model_version
    scope: str | None = None  # inference.scope verdict: validated, outside_validated, unchecked
    scope_reason: str | None = None
    nodule: Mapping[str, Any] | None = None  # the nodule finding (case JSON `nodule`); None: no nodule model served


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """A stored case as the rest of the product sees it (timestamps are aware UTC datetimes)."""

    id: str
    created_at: datetime
    updated_at: datetime
    status: CaseStatus
    patient: PatientInfo
    study_metadata: dict[str, Any] = field(repr=False)  # may hold DICOM patient tags
    image_sha256: str
    image_format: str
    task: str
    prediction: str
    confidence: float
    probabilities: dict[str, float]
    positive_probability: float | None
    threshold: float | None
    uncertainty: dict[str, Any] | None
    uncertain: bool
    ood: bool | None
    ood_reason: str | None
    quality_warnings: list[Any]
    model_version: str
    created_by: str | None
    signed_by: str | None
    signed_at: datetime | None
    embedding: bytes | None = field(default=None, repr=False)
    review_reason: str | None = field(default=None, repr=False)  # free text, may name the patient: encrypted
    scope: str | None = None
    scope_reason: str | None = None
    nodule: dict[str, Any] | None = None  # exactly the case JSON's `nodule` object; None: no nodule model served


@dataclass(frozen=True, slots=True)
class CasePage:
    """One page of a listing: `items` newest first, `total` = number of cases matching the filters."""

    items: list[CaseRecord]
    total: int
    limit: int
    offset: int


# Fields `update_case` accepts; everything the model produced stays as stored.
UPDATABLE_FIELDS = frozenset(
    {
        "status",
        "patient",
        "signed_by",
        "signed_at",
        "uncertain",
        "uncertainty",
        "ood",
        "ood_reason",
        "quality_warnings",
        "review_reason",
    }
)


# --- validation (messages name the field, never echo patient data) ---------------------------------------------------


def _optional_text(name: str, value: Any, max_length: int | None) -> str | None:
    """The stripped string, or None for None/blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidCaseDataError(f"{name} must be a string.")
    value = value.strip()
    if max_length is not None and len(value) > max_length:
        raise InvalidCaseDataError(f"{name} is longer than {max_length} characters.")
    return value or None


def _required_text(name: str, value: Any, max_length: int) -> str:
    checked = _optional_text(name, value, max_length)
    if checked is None:
        raise InvalidCaseDataError(f"{name} is required.")
    return checked


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidCaseDataError(f"{name} must be a number.")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidCaseDataError(f"{name} must be between 0 and 1.")
    return float(value)


def _optional_probability(name: str, value: Any) -> float | None:
    return None if value is None else _probability(name, value)


def _optional_bool(name: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidCaseDataError(f"{name} must be true, false or null.")
    return value


def _json_document(name: str, value: Any) -> Any:
    """A deep plain copy of a JSON-compatible value (no NaN/Infinity: PostgreSQL JSON rejects them)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidCaseDataError(f"{name} must be JSON-serialisable (finite numbers, string keys).") from exc


def _json_object(name: str, value: Any, *, nullable: bool) -> dict[str, Any] | None:
    if value is None and nullable:
        return None
    if not isinstance(value, Mapping):
        raise InvalidCaseDataError(f"{name} must be an object.")
    return _json_document(name, dict(value))


def _probabilities(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise InvalidCaseDataError("probabilities must be a non-empty object of class name to probability.")
    checked: dict[str, float] = {}
    for label, probability in value.items():
        if not isinstance(label, str) or not label:
            raise InvalidCaseDataError("probabilities keys must be class names.")
        checked[label] = _probability(f"probabilities[{label!r}]", probability)
    return checked


def _warnings(value: Any) -> list[Any]:
    """A JSON list: warning codes (strings) or objects such as {"code", "message", "severity"}."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise InvalidCaseDataError("quality_warnings must be a list.")
    return _json_document("quality_warnings", list(value))


def _status(value: Any) -> CaseStatus:
    try:
        return CaseStatus(value)
    except ValueError as exc:
        allowed = ", ".join(status.value for status in CaseStatus)
        raise InvalidCaseDataError(f"status must be one of: {allowed}.") from exc


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value.lower()):
        raise InvalidCaseDataError("image_sha256 must be a sha256 hex digest (64 hexadecimal characters).")
    return value.lower()


def _patient(value: Any) -> PatientInfo:
    if not isinstance(value, PatientInfo):
        raise InvalidCaseDataError("patient must be a PatientInfo.")
    if value.birth_date is not None and (
        not isinstance(value.birth_date, date) or isinstance(value.birth_date, datetime)
    ):
        raise InvalidCaseDataError("patient birth_date must be a date.")
    age = value.age
    if age is not None and (isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 150):
        raise InvalidCaseDataError("patient age must be a whole number of years between 0 and 150.")
    return PatientInfo(
        patient_id=_optional_text("patient_id", value.patient_id, 128),
        name=_optional_text("patient name", value.name, 512),
        birth_date=value.birth_date,
        age=age,
        sex=_optional_text("patient sex", value.sex, 16),
        clinical_history=_optional_text("clinical_history", value.clinical_history, 20_000),
    )


def _embedding(value: Any) -> bytes | None:
    if value is not None and (not isinstance(value, bytes) or not value or len(value) % 4):
        raise InvalidCaseDataError("embedding must be the non-empty bytes of a float32 vector.")
    return value


def _user_id(name: str, value: Any) -> str | None:
    return _optional_text(name, value, 64)


# --- mapping between records and rows -----------------------------------------------------------------------------


def _apply_patient(case: Case, patient: PatientInfo) -> None:
    case.patient_id = patient.patient_id
    case.patient_id_hash = (
        None if patient.patient_id is None else active_phi_cipher().patient_id_hash(patient.patient_id)
    )
    case.patient_name = patient.name
    case.patient_birth_date = patient.birth_date
    case.patient_age = patient.age
    case.patient_sex = patient.sex
    case.clinical_history = patient.clinical_history


def _new_row(new: NewCase, case_id: str) -> Case:
    status = _status(new.status)
    if status is CaseStatus.SIGNED:
        raise InvalidCaseDataError("A new case cannot be stored as signed; sign it with sign_case.")
    case = Case(
        id=case_id,
        status=status.value,
        study_metadata=_json_object("study_metadata", new.study_metadata, nullable=False),
        image_sha256=_sha256(new.image_sha256),
        image_format=_required_text("image_format", new.image_format, 16),
        task=_required_text("task", new.task, 32),
        prediction=_required_text("prediction", new.prediction, 64),
        confidence=_probability("confidence", new.confidence),
        probabilities=_probabilities(new.probabilities),
        positive_probability=_optional_probability("positive_probability", new.positive_probability),
        threshold=_optional_probability("threshold", new.threshold),
        uncertainty=_json_object("uncertainty", new.uncertainty, nullable=True),
        uncertain=bool(_optional_bool("uncertain", new.uncertain)),
        ood=_optional_bool("ood", new.ood),
        ood_reason=_optional_text("ood_reason", new.ood_reason, None),
        quality_warnings=_warnings(new.quality_warnings),
        model_version=_required_text("model_version", new.model_version, 128),
        created_by=_user_id("created_by", new.created_by),
        embedding=_embedding(new.embedding),
        scope=_optional_text("scope", new.scope, 32),
        scope_reason=_optional_text("scope_reason", new.scope_reason, None),
        nodule=_json_object("nodule", new.nodule, nullable=True),
    )
    _apply_patient(case, _patient(new.patient))
    return case


def to_record(case: Case) -> CaseRecord:
    patient = PatientInfo(
        patient_id=case.patient_id,
        name=case.patient_name,
        birth_date=case.patient_birth_date,
        age=case.patient_age,
        sex=case.patient_sex,
        clinical_history=case.clinical_history,
    )
    return record_from_row(CaseRecord, case, status=CaseStatus(case.status), patient=patient)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _moment(name: str, value: Any) -> datetime | date:
    if not isinstance(value, date):  # datetime is a date too
        raise InvalidCaseDataError(f"{name} must be a date or a datetime.")
    return value


def _date_conditions(date_from: Any, date_to: Any) -> list[ColumnElement[bool]]:
    """created_at bounds, both inclusive; a plain date means the whole UTC day; a naive datetime is UTC."""
    conditions: list[ColumnElement[bool]] = []
    start: datetime | None = None
    if date_from is not None:
        moment = _moment("date_from", date_from)
        start = as_utc(moment) if isinstance(moment, datetime) else _day_start(moment)
        conditions.append(Case.created_at >= start)
    if date_to is not None:
        moment = _moment("date_to", date_to)
        if isinstance(moment, datetime):
            end, empty = as_utc(moment), start is not None and start > as_utc(moment)
            conditions.append(Case.created_at <= end)
        else:
            end = _day_start(moment) + timedelta(days=1)  # exclusive: the first instant of the next day
            empty = start is not None and start >= end
            conditions.append(Case.created_at < end)
        if empty:
            raise InvalidCaseDataError("date_from is after date_to.")
    return conditions


@contextmanager
def _database_errors() -> Iterator[None]:
    """Turn driver errors into storage errors the API can map (4xx for bad data, 503 for an unreachable DB)."""
    try:
        yield
    except (IntegrityError, DataError) as exc:
        raise InvalidCaseDataError("The case was rejected by the database (duplicate id or invalid value).") from exc
    except OperationalError as exc:
        raise StorageUnavailableError("The database is not reachable or too busy; try again.") from exc


class CaseRepository:
    """Create, read, list and update cases in one `Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def create_case(self, new: NewCase, *, case_id: str | None = None) -> CaseRecord:
        """Store a new case and return it; the case is durably committed when this returns."""
        row = _new_row(new, case_id or new_case_id())
        with _database_errors(), self.database.transaction() as session:
            session.add(row)
            session.flush()
            return to_record(row)

    def get_case(self, case_id: str) -> CaseRecord:
        """The case with this id; `CaseNotFoundError` if there is none."""
        with _database_errors(), self.database.session() as session:
            row = session.get(Case, case_id) if isinstance(case_id, str) else None
            if row is None:
                raise CaseNotFoundError("No case with this id.")
            return to_record(row)

    def list_cases(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        patient_id: str | None = None,
        prediction: str | None = None,
        status: CaseStatus | str | None = None,
        task: str | None = None,
        uncertain: bool | None = None,
        date_from: datetime | date | None = None,
        date_to: datetime | date | None = None,
    ) -> CasePage:
        """Cases matching every given filter, newest first, with the total count for pagination.

        patient_id matches after normalisation (case, blanks, Unicode form); date bounds apply to created_at and
        are inclusive (a `date` covers its whole UTC day; a naive `datetime` is read as UTC).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidCaseDataError(f"limit must be between 1 and {MAX_PAGE_SIZE}.")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidCaseDataError("offset must be zero or positive.")
        conditions = self._filters(patient_id, prediction, status, task, uncertain, date_from, date_to)
        with _database_errors(), self.database.session() as session:
            total = session.scalar(select(func.count()).select_from(Case).where(*conditions)) or 0
            rows = session.scalars(
                select(Case)
                .where(*conditions)
                .order_by(Case.created_at.desc(), Case.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return CasePage(items=[to_record(row) for row in rows], total=total, limit=limit, offset=offset)

    @staticmethod
    def _filters(
        patient_id: str | None,
        prediction: str | None,
        status: CaseStatus | str | None,
        task: str | None,
        uncertain: bool | None,
        date_from: datetime | date | None,
        date_to: datetime | date | None,
    ) -> list[ColumnElement[bool]]:
        conditions = _date_conditions(date_from, date_to)
        if patient_id is not None:
            wanted = _required_text("patient_id", patient_id, 128)
            conditions.append(Case.patient_id_hash.in_(active_phi_cipher().patient_id_hashes(wanted)))
        if prediction is not None:
            conditions.append(Case.prediction == _required_text("prediction", prediction, 64))
        if status is not None:
            conditions.append(Case.status == _status(status).value)
        if task is not None:
            conditions.append(Case.task == _required_text("task", task, 32))
        if uncertain is not None:
            conditions.append(Case.uncertain.is_(_optional_bool("uncertain", uncertain)))
        return conditions

    def update_case(self, case_id: str, **changes: Any) -> CaseRecord:
        """Change the fields named in `UPDATABLE_FIELDS` and return the updated case.

        `patient=PatientInfo(...)` replaces all patient fields. Setting status "signed" needs signed_by (given now
        or already stored); signed_at defaults to now. A signed case refuses every change (`CaseStateError`).
        """
        unknown = sorted(set(changes) - UPDATABLE_FIELDS)
        if unknown:
            allowed = ", ".join(sorted(UPDATABLE_FIELDS))
            raise InvalidCaseDataError(f"Cannot update {', '.join(unknown)}; updatable fields: {allowed}.")
        with _database_errors(), self.database.transaction() as session:
            row = session.get(Case, case_id, with_for_update=True) if isinstance(case_id, str) else None
            if row is None:
                raise CaseNotFoundError("No case with this id.")
            if row.status == CaseStatus.SIGNED.value:
                raise CaseStateError("The case is signed and can no longer be changed.")
            _apply_changes(row, changes)
            session.flush()
            return to_record(row)

    def sign_case(self, case_id: str, signed_by: str, signed_at: datetime | None = None) -> CaseRecord:
        """Mark the case signed by `signed_by` (a user id) at `signed_at` (default: now)."""
        return self.update_case(case_id, status=CaseStatus.SIGNED, signed_by=signed_by, signed_at=signed_at or utcnow())


def _apply_changes(row: Case, changes: Mapping[str, Any]) -> None:
    if "status" in changes:
        row.status = _status(changes["status"]).value
    if "patient" in changes:
        _apply_patient(row, _patient(changes["patient"]))
    if "signed_by" in changes:
        row.signed_by = _user_id("signed_by", changes["signed_by"])
    if "signed_at" in changes:
        signed_at = changes["signed_at"]
        if signed_at is not None and not isinstance(signed_at, datetime):
            raise InvalidCaseDataError("signed_at must be a datetime.")
        row.signed_at = None if signed_at is None else as_utc(signed_at)
    if "uncertain" in changes:
        if not isinstance(changes["uncertain"], bool):
            raise InvalidCaseDataError("uncertain must be true or false.")
        row.uncertain = changes["uncertain"]
    if "uncertainty" in changes:
        row.uncertainty = _json_object("uncertainty", changes["uncertainty"], nullable=True)
    if "ood" in changes:
        row.ood = _optional_bool("ood", changes["ood"])
    if "ood_reason" in changes:
        row.ood_reason = _optional_text("ood_reason", changes["ood_reason"], None)
    if "quality_warnings" in changes:
        row.quality_warnings = _warnings(changes["quality_warnings"])
    if "review_reason" in changes:
        row.review_reason = _optional_text("review_reason", changes["review_reason"], MAX_REVIEW_REASON_LENGTH)
    if row.status == CaseStatus.SIGNED.value:
        if row.signed_by is None:
            raise InvalidCaseDataError("Signing a case needs signed_by (the signing user's id).")
        row.signed_at = row.signed_at or utcnow()
