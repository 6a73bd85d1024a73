"""storage/: migrations, case repository, PHI encryption and key rotation, durability, image store.

Every database test runs twice: on a temporary SQLite file and on the PostgreSQL server at 127.0.0.1:5432 (database
`test`, in a throw-away schema per test). Without that server the PostgreSQL runs skip, except under CI=true.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import make_url

import active_learning  # noqa: F401  (its tables join storage's Base: the schema compared below is the product's)
import monitoring  # noqa: F401  (likewise)
from active_learning import LearningLoop, QueuePolicy, ReviewReason
from active_learning.annotations import holdout_split
from settings import PROJECT_ROOT, Settings
from storage import (
    Base,
    Case,
    CaseNotFoundError,
    CaseRepository,
    CaseStateError,
    CaseStatus,
    Database,
    DecryptionError,
    EncryptionKeyError,
    ImageCorruptedError,
    ImageNotFoundError,
    ImageStore,
    InvalidCaseDataError,
    InvalidImageDataError,
    InvalidImageKeyError,
    NewCase,
    PatientInfo,
    PhiCipher,
    StorageUnavailableError,
    UnknownTablesError,
    configure_phi_cipher,
    generate_phi_key,
    head_revision,
    init_storage,
    load_phi_cipher,
    migrate,
    rotate_phi_key,
    schema_revision,
)
from storage.cli import main as storage_cli
from tests.conftest import DATABASES, postgres_schema

PATIENT_NAME = "Zebediah Quixote-Fairweather"
PATIENT_ID = "MRN-7734-XQ"
HISTORY = "Fever and productive cough for nine days"


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cases.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_server"), "test_storage") as url:
        yield url


@pytest.fixture
def phi_key() -> Iterator[str]:
    """A fresh key installed as the process-wide cipher for the test."""
    key = generate_phi_key()
    configure_phi_cipher(PhiCipher([key]))
    yield key
    configure_phi_cipher(None)


@pytest.fixture
def database(database_url: str, phi_key: str) -> Iterator[Database]:
    migrate(database_url)
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def repo(database: Database) -> CaseRepository:
    return CaseRepository(database)


def make_case(**overrides: object) -> NewCase:
    fields: dict[str, object] = {
        "image_sha256": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        "image_format": "DICOM",
        "task": "pneumonia",
        "prediction": "PNEUMONIA",
        "confidence": 0.91,
        "probabilities": {"NORMAL": 0.09, "PNEUMONIA": 0.91},
        "positive_probability": 0.91,
        "threshold": 0.5,
        "model_version": "pneumonia-resnet18-v3",
        "patient": PatientInfo(
            patient_id=PATIENT_ID,
            name=PATIENT_NAME,
            birth_date=date(1961, 4, 2),
            age=64,
            sex="F",
            clinical_history=HISTORY,
        ),
        "study_metadata": {"PatientName": PATIENT_NAME, "Modality": "DX", "format": "DICOM", "width": 2048},
        "uncertainty": {"entropy": 0.3, "mc_std": 0.04},
        "quality_warnings": ["low contrast", {"code": "rotated", "severity": "warning"}],
        "created_by": "user-1",
    }
    fields.update(overrides)
    return NewCase(**fields)  # type: ignore[arg-type]


def set_created_at(database: Database, case_id: str, created_at: datetime) -> None:
    """Back-date a case (the repository always stamps now) to test date filters."""
    with database.transaction() as session:
        row = session.get(Case, case_id)
        assert row is not None
        row.created_at = created_at


def raw_column_values(database: Database, column: str) -> list[str | None]:
    with database.engine.connect() as connection:
        return [row[0] for row in connection.execute(text(f"SELECT {column} FROM cases"))]


def run_python(code: str, *, stdin: bool = False) -> subprocess.Popen[str]:
    """Start a Python child in the repository root (no torch import: it only loads settings and storage)."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- migrations ----------------------------------------------------------------------------------------------------


def test_migrations_are_idempotent_and_match_the_models(database_url: str) -> None:
    assert migrate(database_url) == head_revision()
    assert migrate(database_url) == head_revision()  # second run: nothing to do, no error
    db = Database(database_url)
    try:
        assert schema_revision(db) == head_revision()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []  # the migration creates exactly the models
    finally:
        db.dispose()


def test_two_processes_migrating_at_once_both_succeed(database_url: str) -> None:
    # Each child imports everything, reports ready, then waits for "go": both migrations start together.
    code = (
        "import sys; from storage import migrate; print('ready', flush=True); sys.stdin.readline(); "
        f"print(migrate({database_url!r}))"
    )
    children = [run_python(code, stdin=True), run_python(code, stdin=True)]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=60) for child in children]
    for child, (stdout, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr
        assert stdout.strip() == head_revision()


def test_start_up_on_a_fresh_sqlite_file_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    """The start-up race, made deterministic: while another connection holds the write lock on a new SQLite file (as a
    sibling process does mid-start), switching the file to WAL fails at once with "database is locked" (SQLite runs no
    busy handler for that upgrade). Migrating must wait for the writer and then succeed."""
    path = tmp_path / "fresh.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the write lock, on a file still in rollback-journal mode
    outcome: dict[str, object] = {}

    def start() -> None:
        try:
            outcome["revision"] = migrate(f"sqlite:///{path}")
        except Exception as exc:  # reported to the assertion below, whatever it is
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    starter = threading.Thread(target=start)
    starter.start()
    time.sleep(1.0)
    writer.execute("COMMIT")
    writer.close()
    starter.join(timeout=60)
    assert outcome == {"revision": head_revision()}


def test_sqlite_connections_are_configured_for_durability(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'nested' / 'pragmas.db'}")  # the folder is created
    try:
        with db.engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30000}
    finally:
        db.dispose()


def test_bad_or_unreachable_database_gives_a_storage_error() -> None:
    with pytest.raises(StorageUnavailableError, match="not supported"):
        Database("mysql://user@localhost/db")
    with pytest.raises(StorageUnavailableError, match="valid database URL"):
        Database("not a url at all")
    unreachable = Database("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    try:
        assert unreachable.engine.dialect.driver == "psycopg"  # plain postgresql:// gets psycopg 3
        with pytest.raises(StorageUnavailableError, match="not reachable"):
            unreachable.ping()
    finally:
        unreachable.dispose()


# --- case repository -----------------------------------------------------------------------------------------------


def test_create_and_get_round_trip_every_field(repo: CaseRepository) -> None:
    new = make_case(uncertain=True, ood=False, ood_reason="in distribution")
    created = repo.create_case(new)
    fetched = repo.get_case(created.id)
    assert fetched == created
    assert uuid.UUID(fetched.id).version == 4
    assert fetched.status is CaseStatus.ANALYZED
    assert fetched.patient == new.patient
    assert fetched.study_metadata == new.study_metadata
    assert fetched.probabilities == {"NORMAL": 0.09, "PNEUMONIA": 0.91}
    assert fetched.uncertainty == {"entropy": 0.3, "mc_std": 0.04}
    assert (fetched.uncertain, fetched.ood, fetched.ood_reason) == (True, False, "in distribution")
    assert fetched.quality_warnings == ["low contrast", {"code": "rotated", "severity": "warning"}]
    assert fetched.created_at.tzinfo is UTC and fetched.updated_at.tzinfo is UTC
    assert abs(fetched.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert (fetched.signed_by, fetched.signed_at, fetched.created_by) == (None, None, "user-1")
    assert PATIENT_NAME not in repr(fetched) and PATIENT_ID not in repr(fetched)  # safe to log


def test_get_unknown_case_is_not_found(repo: CaseRepository) -> None:
    with pytest.raises(CaseNotFoundError):
        repo.get_case(str(uuid.uuid4()))
    with pytest.raises(CaseNotFoundError):
        repo.get_case(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_sha256": "../../etc/passwd"}, "sha256"),
        ({"confidence": float("nan")}, "confidence"),
        ({"confidence": 1.2}, "confidence"),
        ({"probabilities": {"NORMAL": -0.1}}, "probabilities"),
        ({"probabilities": {}}, "probabilities"),
        ({"status": "deleted"}, "status must be one of"),
        ({"status": "signed"}, "sign_case"),
        ({"prediction": "  "}, "prediction is required"),
        ({"prediction": "X" * 65}, "longer than 64"),
        ({"patient": PatientInfo(age=-3)}, "age"),
        ({"patient": PatientInfo(age=True)}, "age"),
        ({"study_metadata": {"width": float("inf")}}, "study_metadata"),
        ({"quality_warnings": "blurry"}, "quality_warnings"),
        ({"quality_warnings": [{"score": float("nan")}]}, "quality_warnings"),
        ({"ood": "no"}, "ood"),
    ],
)
def test_invalid_case_data_is_rejected_with_a_clear_error(
    repo: CaseRepository, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidCaseDataError, match=message):
        repo.create_case(make_case(**overrides))
    assert repo.list_cases().total == 0  # nothing half-stored


def test_update_status_patient_and_sign(repo: CaseRepository) -> None:
    case = repo.create_case(make_case())
    queued = repo.update_case(case.id, status="queued_for_review", uncertain=True, ood=True, ood_reason="lateral view")
    assert (queued.status, queued.uncertain, queued.ood, queued.ood_reason) == (
        CaseStatus.QUEUED_FOR_REVIEW,
        True,
        True,
        "lateral view",
    )
    assert queued.updated_at > case.updated_at and queued.created_at == case.created_at

    renamed = repo.update_case(case.id, patient=PatientInfo(patient_id="NEW-42", name="Ann Other"))
    assert renamed.patient == PatientInfo(patient_id="NEW-42", name="Ann Other")
    assert repo.list_cases(patient_id="new-42").total == 1  # the index follows the new id
    assert repo.list_cases(patient_id=PATIENT_ID).total == 0

    with pytest.raises(InvalidCaseDataError, match="signed_by"):
        repo.update_case(case.id, status="signed")
    assert repo.get_case(case.id).status is CaseStatus.QUEUED_FOR_REVIEW  # the refused change was rolled back

    signed = repo.sign_case(case.id, signed_by="radiologist-7")
    assert (signed.status, signed.signed_by) == (CaseStatus.SIGNED, "radiologist-7")
    assert signed.signed_at is not None and signed.signed_at.tzinfo is UTC
    assert repo.get_case(case.id) == signed
    with pytest.raises(CaseStateError):
        repo.update_case(case.id, status="reviewed")


def test_update_refuses_unknown_and_model_output_fields(repo: CaseRepository) -> None:
    case = repo.create_case(make_case())
    with pytest.raises(InvalidCaseDataError, match="prediction"):
        repo.update_case(case.id, prediction="NORMAL")
    with pytest.raises(InvalidCaseDataError, match="colour"):
        repo.update_case(case.id, colour="blue")
    with pytest.raises(CaseNotFoundError):
        repo.update_case(str(uuid.uuid4()), status="reviewed")
    assert repo.get_case(case.id).prediction == "PNEUMONIA"


def test_list_pagination_and_filters(repo: CaseRepository, database: Database) -> None:
    day = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    specs = [  # (patient id, prediction, status, uncertain, days after `day`)
        ("P-1", "PNEUMONIA", "analyzed", False, 0),
        ("P-1", "NORMAL", "reviewed", False, 1),
        ("P-2", "PNEUMONIA", "queued_for_review", True, 2),
        ("P-2", "PNEUMONIA", "analyzed", False, 3),
        ("P-3", "NORMAL", "analyzed", True, 4),
        (None, "NORMAL", "analyzed", False, 5),
        ("P-3", "PNEUMONIA", "reviewed", False, 6),
    ]
    ids = []
    for patient_id, prediction, status, uncertain, offset_days in specs:
        case = repo.create_case(
            make_case(
                patient=PatientInfo(patient_id=patient_id), prediction=prediction, status=status, uncertain=uncertain
            )
        )
        set_created_at(database, case.id, day + timedelta(days=offset_days))
        ids.append(case.id)
    newest_first = list(reversed(ids))

    pages = [repo.list_cases(limit=3, offset=offset) for offset in (0, 3, 6)]
    assert [page.total for page in pages] == [7, 7, 7]
    assert [case.id for page in pages for case in page.items] == newest_first
    assert repo.list_cases(limit=3, offset=9).items == []

    def ids_of(**filters: object) -> list[str]:
        page = repo.list_cases(**filters)  # type: ignore[arg-type]
        assert page.total == len(page.items)
        return [case.id for case in page.items]

    assert ids_of(patient_id=" p-2 ") == [ids[3], ids[2]]  # normalised: blanks and case
    assert ids_of(prediction="NORMAL") == [ids[5], ids[4], ids[1]]
    assert ids_of(status=CaseStatus.REVIEWED) == [ids[6], ids[1]]
    assert ids_of(uncertain=True) == [ids[4], ids[2]]
    assert ids_of(task="nodule") == []
    assert ids_of(date_from=date(2025, 3, 12), date_to=date(2025, 3, 13)) == [ids[3], ids[2]]  # whole days
    assert ids_of(date_from=day + timedelta(days=2, hours=1), date_to=date(2025, 3, 12)) == []  # same day, later
    assert ids_of(date_from=day + timedelta(days=5)) == [ids[6], ids[5]]
    assert ids_of(date_to=(day + timedelta(days=1)).replace(tzinfo=None)) == [ids[1], ids[0]]  # naive = UTC
    assert ids_of(patient_id="P-3", prediction="PNEUMONIA", date_from=date(2025, 3, 11)) == [ids[6]]
    assert ids_of(patient_id="nobody") == []
    filtered = repo.list_cases(prediction="PNEUMONIA", limit=2, offset=2)
    assert (filtered.total, [case.id for case in filtered.items]) == (4, [ids[2], ids[0]])


@pytest.mark.parametrize(
    "bad",
    [
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"status": "lost"},
        {"date_from": date(2025, 2, 1), "date_to": date(2025, 1, 1)},
        {"date_from": datetime(2025, 2, 2, 0, 0, tzinfo=UTC), "date_to": date(2025, 2, 1)},
        {"date_from": "2025-01-01"},
        {"patient_id": ""},
    ],
)
def test_list_rejects_bad_page_and_filter_values(repo: CaseRepository, bad: dict[str, object]) -> None:
    with pytest.raises(InvalidCaseDataError):
        repo.list_cases(**bad)  # type: ignore[arg-type]


def test_concurrent_writers_do_not_fail(repo: CaseRepository) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(8):
                case = repo.create_case(make_case())
                repo.update_case(case.id, status="queued_for_review")  # read-then-write transaction
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert repo.list_cases(status="queued_for_review").total == 32


# --- encryption at rest --------------------------------------------------------------------------------------------


def test_patient_fields_are_encrypted_at_rest(repo: CaseRepository, database: Database, database_url: str) -> None:
    case = repo.create_case(make_case())
    assert repo.get_case(case.id).patient.name == PATIENT_NAME  # decrypts on read
    with database.engine.connect() as connection:
        raw = connection.execute(
            text(
                "SELECT patient_id, patient_name, patient_birth_date, clinical_history, study_metadata, "
                "patient_id_hash FROM cases"
            )
        ).one()
    stored = " ".join(str(value) for value in raw)
    for secret in (PATIENT_NAME, "Zebediah", PATIENT_ID, "1961-04-02", HISTORY, "cough"):
        assert secret not in stored
    assert all(value.startswith("gAAAA") for value in raw[:5])  # Fernet tokens
    assert len(raw[5]) == 64  # the HMAC index, not the id
    if database_url.startswith("sqlite"):
        database.dispose()  # checkpoint the WAL into the main file, then read every byte on disk
        path = Path(make_url(database_url).database or "")
        disk = b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))
        assert b"Zebediah" not in disk and PATIENT_ID.encode() not in disk and b"cough" not in disk
        assert case.id.encode() in disk  # the row itself is there in clear


def test_a_different_key_cannot_read_the_data(repo: CaseRepository) -> None:
    case = repo.create_case(make_case())
    configure_phi_cipher(PhiCipher([generate_phi_key()]))
    with pytest.raises(DecryptionError) as raised:
        repo.get_case(case.id)
    assert "PHI_ENCRYPTION_KEY" in str(raised.value)
    assert repo.list_cases(patient_id=PATIENT_ID).total == 0  # the index is keyed too


def test_key_rotation_re_encrypts_every_row(repo: CaseRepository, database: Database, phi_key: str) -> None:
    cases = [repo.create_case(make_case()) for _ in range(5)]
    cases.append(repo.create_case(make_case(patient=PatientInfo())))  # no patient fields at all
    tokens_before = raw_column_values(database, "patient_name")
    new_key = generate_phi_key()

    # Mid-rotation (new key first, old key kept for reading): old rows stay readable and filterable.
    configure_phi_cipher(PhiCipher([new_key, phi_key]))
    assert repo.list_cases(patient_id=PATIENT_ID).total == 5

    assert rotate_phi_key(database, new_key, [phi_key], batch_size=2) == 6
    tokens_after = raw_column_values(database, "patient_name")
    assert None in tokens_after and (set(tokens_before) - {None}).isdisjoint(tokens_after)

    configure_phi_cipher(PhiCipher([new_key]))  # the old key is gone
    assert [repo.get_case(case.id) for case in cases] == cases  # same records, timestamps untouched
    assert repo.list_cases(patient_id=PATIENT_ID).total == 5
    configure_phi_cipher(PhiCipher([phi_key]))
    with pytest.raises(DecryptionError):
        repo.get_case(cases[0].id)

    assert rotate_phi_key(database, new_key, []) == 6  # running again is harmless


NODULE_FINDING = {
    "label": "NODULE",
    "probability": 0.71,
    "threshold": 0.35,
    "locations": [{"x": 100.0, "y": 120.0, "w": 60.0, "h": 40.0, "score": 0.83}],
    "model_version": "nodule-test-7",
    "performance": None,
}


def patient_whose_split_a_new_key_would_change(old_key: str, new_key: str) -> str:
    """A patient id whose held-back split (at half held back) differs under the two keys' pseudonyms: had the
    rotation forgotten the learning loop's pseudonyms, this patient's next film would land in the other split."""
    old, new = PhiCipher([old_key]), PhiCipher([new_key])
    return next(
        patient_id
        for patient_id in (f"MRN-{n}" for n in range(1000))
        if holdout_split(old.patient_id_hash(patient_id), 0.5) != holdout_split(new.patient_id_hash(patient_id), 0.5)
    )


def patient_film(repo: CaseRepository, patient_id: str) -> str:
    """A stored 800 x 600 film of the patient whose nodule model marked one box."""
    patient = PatientInfo(patient_id=patient_id, name=PATIENT_NAME)
    metadata = {"format": "PNG", "width": 800, "height": 600}
    return repo.create_case(make_case(patient=patient, study_metadata=metadata, nodule=NODULE_FINDING)).id


def test_key_rotation_keeps_the_learning_loops_notes_comments_and_held_back_split(
    repo: CaseRepository, database: Database, phi_key: str
) -> None:
    new_key = generate_phi_key()
    patient_id = patient_whose_split_a_new_key_would_change(phi_key, new_key)
    loop = LearningLoop(database, QueuePolicy(expert_holdout_fraction=0.5))
    case_id = patient_film(repo, patient_id)
    loop.enqueue(case_id, ReviewReason.MANUAL, requested_by="dr-sender", note=f"{PATIENT_NAME}: mass or artefact?")
    for reader, label in (("reader-a", "PNEUMONIA"), ("reader-b", "NORMAL")):
        assert loop.claim_next(reader) is not None
        loop.submit(reader, case_id, label=label, confidence=3, comment=f"{reader} saw {label} in {PATIENT_NAME}")
    final = loop.adjudicate(case_id, "dr-judge", label="PNEUMONIA", comment="Consolidation, left lower lobe")
    mark = {key: NODULE_FINDING["locations"][0][key] for key in ("x", "y", "w", "h")}  # type: ignore[index]
    marks = [{**mark, "verdict": "confirmed"}]
    review = loop.review_nodules(case_id, "dr-nod", "radiologist", finding="NODULE", marks=marks, comment="Spiculated")

    assert rotate_phi_key(database, new_key, [phi_key]) == 1
    configure_phi_cipher(PhiCipher([new_key]))  # the old key is gone

    assert loop.queue_item(case_id).note == f"{PATIENT_NAME}: mass or artefact?"
    assert sorted((a.annotator, a.comment) for a in loop.annotations_for(case_id, viewer_id=None)) == [
        ("dr-judge", "Consolidation, left lower lobe"),  # the adjudication: final_labels.comment
        ("reader-a", f"reader-a saw PNEUMONIA in {PATIENT_NAME}"),
        ("reader-b", f"reader-b saw NORMAL in {PATIENT_NAME}"),
    ]
    after = loop.final_label(case_id)
    assert after is not None and after.split == final.split
    assert [r.comment for r in loop.nodule_reviews(case_id)] == ["Spiculated"]

    # The patient's next film, read after the rotation, joins the same split under the same pseudonym.
    later = loop.review_nodules(patient_film(repo, patient_id), "dr-nod", "radiologist", finding="NODULE", marks=marks)
    assert later.split == review.split == final.split
    nodule_rows = list(csv.DictReader(io.StringIO(loop.nodule_export_csv())))
    label_rows = list(csv.DictReader(io.StringIO(loop.export_csv())))
    assert {(row["patient_id"], row["split"]) for row in nodule_rows + label_rows} == {(later.patient_key, final.split)}
    assert len(nodule_rows) == 2 and len(label_rows) == 1


def test_rotation_refuses_a_database_holding_a_table_it_has_no_model_of(
    repo: CaseRepository, database: Database, phi_key: str
) -> None:
    repo.create_case(make_case())
    before = raw_column_values(database, "patient_name")
    with database.write_connection() as connection:  # a room's table whose model this process never imported
        connection.execute(text("CREATE TABLE ward_notes (id VARCHAR(36) PRIMARY KEY, note TEXT)"))
    with pytest.raises(UnknownTablesError, match=r"\(ward_notes\).*Nothing was changed"):
        rotate_phi_key(database, generate_phi_key(), [phi_key])
    assert raw_column_values(database, "patient_name") == before


def test_the_rotation_command_re_encrypts_the_learning_loops_notes_in_a_fresh_process(
    database_url: str, tmp_path: Path
) -> None:
    """`python -m storage rotate-phi-key` starts without the learning loop's tables in memory: it must load them."""
    old_key, new_key = generate_phi_key(), generate_phi_key()
    storage = init_storage(Settings(var_dir=tmp_path, database_url=database_url, phi_encryption_key=old_key))
    try:
        case = storage.cases.create_case(make_case())
        loop = LearningLoop(storage.database, QueuePolicy())
        loop.enqueue(case.id, ReviewReason.MANUAL, requested_by="dr-sender", note=f"Ask {PATIENT_NAME} about TB")
        env = {**os.environ, "VAR_DIR": str(tmp_path), "DATABASE_URL": database_url}
        env |= {"PHI_ENCRYPTION_KEY": new_key, "PHI_ENCRYPTION_OLD_KEYS": old_key}
        done = subprocess.run(
            [sys.executable, "-m", "storage", "rotate-phi-key"],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Re-encrypted 1 case(s), every other encrypted field" in done.stdout
        configure_phi_cipher(PhiCipher([new_key]))
        assert loop.queue_item(case.id).note == f"Ask {PATIENT_NAME} about TB"
    finally:
        storage.close()
        configure_phi_cipher(None)


def test_rotation_with_a_wrong_old_key_changes_nothing(repo: CaseRepository, database: Database) -> None:
    case = repo.create_case(make_case())
    before = raw_column_values(database, "patient_name")
    with pytest.raises(DecryptionError):
        rotate_phi_key(database, generate_phi_key(), [generate_phi_key()])
    assert raw_column_values(database, "patient_name") == before
    assert repo.get_case(case.id).patient.name == PATIENT_NAME


def test_cli_rotates_the_development_key_file(database_url: str, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url)
    storage = init_storage(settings)  # creates var/phi.key
    try:
        case = storage.cases.create_case(make_case())
        key_file = tmp_path / "var" / "phi.key"
        old_key = key_file.read_text().strip()
        assert storage_cli(["rotate-phi-key"], settings=settings) == 0
        new_key = key_file.read_text().strip()
        assert new_key != old_key and "\n" not in new_key and oct(key_file.stat().st_mode & 0o777) == "0o600"
        configure_phi_cipher(load_phi_cipher(settings))
        assert storage.cases.get_case(case.id).patient.name == PATIENT_NAME
        assert storage.cases.list_cases(patient_id=PATIENT_ID).total == 1
        configure_phi_cipher(PhiCipher([old_key]))
        with pytest.raises(DecryptionError):
            storage.cases.get_case(case.id)
    finally:
        storage.close()
        configure_phi_cipher(None)


def test_cli_rotates_to_the_configured_key(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_key, new_key = generate_phi_key(), generate_phi_key()
    storage = init_storage(Settings(var_dir=tmp_path, database_url=database_url, phi_encryption_key=old_key))
    try:
        case = storage.cases.create_case(make_case())
        rotating = Settings(
            var_dir=tmp_path, database_url=database_url, phi_encryption_key=new_key, phi_encryption_old_keys=old_key
        )
        assert storage_cli(["rotate-phi-key", "--new-key", generate_phi_key()], settings=rotating) == 2
        assert "PHI_ENCRYPTION_OLD_KEYS" in capsys.readouterr().err  # the key comes from settings, not the flag
        assert storage_cli(["rotate-phi-key"], settings=rotating) == 0
        assert "Re-encrypted 1 case(s)" in capsys.readouterr().out
        configure_phi_cipher(PhiCipher([new_key]))
        assert storage.cases.get_case(case.id).patient.name == PATIENT_NAME
        assert not (tmp_path / "phi.key").exists()
    finally:
        storage.close()
        configure_phi_cipher(None)


# --- keys and start-up ------------------------------------------------------------------------------------------


def test_development_key_is_generated_once_with_private_mode(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    ciphers: list[PhiCipher] = []
    threads = [threading.Thread(target=lambda: ciphers.append(load_phi_cipher(settings))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({cipher.primary_key for cipher in ciphers}) == 1  # racing first starts agree on one key
    key_file = tmp_path / "var" / "phi.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["phi.key"]  # no temporary files left
    assert load_phi_cipher(settings).primary_key == ciphers[0].primary_key


def test_configured_keys_and_their_errors(tmp_path: Path) -> None:
    key, old = generate_phi_key(), generate_phi_key()
    cipher = load_phi_cipher(
        Settings(
            var_dir=tmp_path, environment="production", phi_encryption_key=key, phi_encryption_old_keys=f" {old} ,"
        )
    )
    assert cipher.keys == (key, old)
    assert not (tmp_path / "phi.key").exists()  # a configured key never writes a file
    with pytest.raises(EncryptionKeyError, match="PHI_ENCRYPTION_KEY is not set") as raised:
        load_phi_cipher(Settings(var_dir=tmp_path, environment="production"))
    assert "production" in str(raised.value)
    with pytest.raises(EncryptionKeyError, match="PHI_ENCRYPTION_KEY is not a valid Fernet key") as bad:
        load_phi_cipher(Settings(var_dir=tmp_path, phi_encryption_key="hunter2-not-a-key"))
    assert "hunter2" not in str(bad.value)
    with pytest.raises(EncryptionKeyError, match="PHI_ENCRYPTION_OLD_KEYS entry 1"):
        load_phi_cipher(Settings(var_dir=tmp_path, phi_encryption_key=key, phi_encryption_old_keys="nope"))


def test_production_without_key_refuses_to_start_before_touching_the_database(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", environment="production")
    with pytest.raises(EncryptionKeyError):
        init_storage(settings)
    assert not (tmp_path / "var" / "cxr.db").exists()


def test_init_storage_is_idempotent(database_url: str, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url, phi_encryption_key=generate_phi_key())
    first = init_storage(settings)
    try:
        case = first.cases.create_case(make_case(image_sha256=first.images.put(b"pixels")))
        second = init_storage(settings)
        try:
            assert second.cases.get_case(case.id).patient.name == PATIENT_NAME
            assert second.images.get(case.image_sha256) == b"pixels"
            second.database.ping()
            second.images.check_writable()
        finally:
            second.close()
    finally:
        first.close()
        configure_phi_cipher(None)


# --- durability ---------------------------------------------------------------------------------------------------


def test_acknowledged_cases_survive_sigkill(database: Database, database_url: str, phi_key: str) -> None:
    """A child writes cases, printing each id once create_case returns; it is killed mid-stream; all ids remain."""
    code = f"""
import hashlib, sys, uuid
from storage import CaseRepository, Database, NewCase, PatientInfo, PhiCipher, configure_phi_cipher
configure_phi_cipher(PhiCipher([{phi_key!r}]))
repo = CaseRepository(Database({database_url!r}))
while True:
    case = repo.create_case(NewCase(
        image_sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), image_format="PNG", task="pneumonia",
        prediction="NORMAL", confidence=0.8, probabilities={{"NORMAL": 0.8, "PNEUMONIA": 0.2}},
        model_version="v1", patient=PatientInfo(name="Killed Mid-Write")))
    sys.stdout.write(case.id + "\\n")
    sys.stdout.flush()
"""
    child = run_python(code)
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        while len(acknowledged) < 25:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "child exited"
            acknowledged.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)  # no clean shutdown, no chance to flush anything more
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    survivor = Database(database_url)
    try:
        repo = CaseRepository(survivor)
        for case_id in acknowledged:
            assert repo.get_case(case_id).patient.name == "Killed Mid-Write"
    finally:
        survivor.dispose()


# --- image store --------------------------------------------------------------------------------------------------


def test_image_store_put_get_and_layout(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    data = os.urandom(100_000)
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.path(sha) == tmp_path / "images" / sha[:2] / sha[2:4] / sha
    assert store.exists(sha) and store.exists(sha.upper())
    assert store.get(sha) == data and store.get(sha.upper()) == data
    assert not store.exists(hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ImageNotFoundError):
        store.get(hashlib.sha256(b"other").hexdigest())


def test_image_store_is_idempotent_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = b"\x89PNG same bytes"
    sha = store.put(data)
    inode, mtime = store.path(sha).stat().st_ino, store.path(sha).stat().st_mtime_ns
    assert store.put(data) == sha
    assert (store.path(sha).stat().st_ino, store.path(sha).stat().st_mtime_ns) == (inode, mtime)  # not rewritten
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(store.put(bytearray(data * 1000)))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and store.get(results[0]) == data * 1000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted([sha, results[0]])


@pytest.mark.parametrize("key", ["../../etc/passwd", "a" * 63, "g" * 64, "/" + "a" * 63, "", "a" * 64 + "/x", None])
def test_image_store_rejects_keys_that_are_not_sha256(tmp_path: Path, key: object) -> None:
    store = ImageStore(tmp_path)
    for operation in (store.path, store.exists, store.get):
        with pytest.raises(InvalidImageKeyError):
            operation(key)  # type: ignore[arg-type]


def test_image_store_rejects_empty_data_and_detects_corruption(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(InvalidImageDataError):
        store.put(b"")
    sha = store.put(b"original pixels")
    store.path(sha).write_bytes(b"tampered pixels")
    with pytest.raises(ImageCorruptedError):
        store.get(sha)
    assert store.get(sha, verify=False) == b"tampered pixels"
    store.path(sha).write_bytes(b"short")  # a truncated file is healed by storing the bytes again
    assert store.put(b"original pixels") == sha and store.get(sha) == b"original pixels"


def test_image_store_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageStore(tmp_path)

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("storage.files.os.replace", disk_full)  # the crash point: after fsync, before rename
    with pytest.raises(StorageUnavailableError):
        store.put(b"never stored")
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial image, no temporary file
    assert not store.exists(hashlib.sha256(b"never stored").hexdigest())
