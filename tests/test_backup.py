"""Backups (issue 18): `python -m storage backup | verify-backup | restore`.

Storage level, on SQLite and PostgreSQL: a backup taken while a thread keeps storing cases restores every case
acknowledged before it started, with readable patient names and intact images, into an empty install (a fresh
PostgreSQL database for pg_dump). verify-backup names a changed image byte, a missing file and an image a case
references that the backup lacks; restore refuses a non-empty install and a backup whose PHI key it lacks; retention
keeps the newest BACKUP_KEEP backups; settings.json carries no secret.

Through HTTP (the whole workstation): two real backends, the first under write load while the backup runs, the second
on the restored folder: same cases, names, signed PDF, logins, audit chain intact, MLflow versions and aliases.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from settings import Settings
from storage import (
    BackupError,
    NewCase,
    PatientInfo,
    Storage,
    configure_phi_cipher,
    create_backup,
    generate_phi_key,
    init_storage,
    restore_backup,
    settings_without_secrets,
    verify_backup,
)
from storage.cli import main as storage_cli
from tests.conftest import DATABASES, libpq_url, postgres_schema

# --- a small workstation on disk, filled by the storage room itself ---------------------------------------------------


def films(kermany_dir: Path, count: int) -> list[bytes]:
    """`count` distinct real Kermany test films (each one a different stored image)."""
    paths = sorted((kermany_dir / "test").glob("*/*.jpeg")) + sorted((kermany_dir / "test").glob("*/*.jpg"))
    assert len(paths) >= count, f"need {count} test films, found {len(paths)}"
    return [path.read_bytes() for path in paths[:count]]


def store_case(storage: Storage, film: bytes, name: str) -> str:
    sha = storage.images.put(film)
    record = storage.cases.create_case(
        NewCase(image_sha256=sha, image_format="jpeg", task="pneumonia", prediction="PNEUMONIA", confidence=0.7,
                probabilities={"NORMAL": 0.3, "PNEUMONIA": 0.7}, model_version="backup-test",
                patient=PatientInfo(name=name, patient_id=f"MRN-{name}"))
    )  # fmt: skip
    storage.artifacts.put(record.id, "pixels-png16.png", film[:64])
    return record.id


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
        return
    with postgres_schema(request.getfixturevalue("postgres_server"), "test_backup") as url:
        yield url


@contextmanager
def fresh_postgres_database(schema_url: str) -> Iterator[str]:
    """A new, empty database on the same server, reached with the same search_path (restores recreate the schema)."""
    name = f"test_restore_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(schema_url.split("?")[0]), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(schema_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(schema_url.split("?")[0]), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def opened(settings: Settings) -> Iterator[Storage]:
    storage = init_storage(settings)
    try:
        yield storage
    finally:
        storage.close()
        configure_phi_cipher(None)


class Writer(threading.Thread):
    """Keeps storing cases (a new film each time) until stopped; `acknowledged` lists the ids create_case returned."""

    def __init__(self, storage: Storage, pool: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.storage, self.pool, self.acknowledged = storage, pool, []
        self.stop = threading.Event()

    def run(self) -> None:
        for number, film in enumerate(self.pool):
            if self.stop.is_set():
                return
            self.acknowledged.append(store_case(self.storage, film, f"Load Patient {number}"))


# --- the storage level ----------------------------------------------------------------------------------------------


def test_a_backup_under_write_load_restores_every_acknowledged_case(
    database_url: str, tmp_path: Path, kermany_dir: Path
) -> None:
    source = Settings(var_dir=tmp_path / "source", database_url=database_url)
    pool = films(kermany_dir, 160)
    with opened(source) as storage:
        first = {store_case(storage, film, f"Patient {n}"): f"Patient {n}" for n, film in enumerate(pool[:8])}
        signed = next(iter(first))
        storage.cases.sign_case(signed, "dr-backup")
        (source.resolved_retrieval_index_dir / "CURRENT").parent.mkdir(parents=True)
        (source.resolved_retrieval_index_dir / "CURRENT").write_text("snap-000001\n")
        writer = Writer(storage, pool[8:])
        writer.start()
        while len(writer.acknowledged) < 5:
            time.sleep(0.01)
        before = list(writer.acknowledged)
        result = create_backup(source, tmp_path / "backup.tar")
        during = len(writer.acknowledged) - len(before)
        writer.stop.set()
        writer.join()
    assert during > 0, "no case was stored while the backup ran: the test did not test a backup under load"
    manifest = verify_backup(result.path)
    assert manifest["database"]["engine"] == ("sqlite" if not database_url else "postgresql")
    assert result.referenced_images >= len(first) + len(before)
    with restored_settings(source, tmp_path / "restored", database_url) as target:
        (target.var_dir).mkdir()
        (target.var_dir / "phi.key").write_bytes((source.var_dir / "phi.key").read_bytes())  # the key kept apart
        restore_backup(result.path, target)
        with opened(target) as restored:
            cases = {case.id: case for case in restored.cases.list_cases(limit=500).items}
            assert set(first) | set(before) <= set(cases)
            assert {cases[case_id].patient.name for case_id in first} == set(first.values())
            assert cases[signed].signed_by == "dr-backup" and cases[signed].status == "signed"
            for case in cases.values():
                assert restored.images.get(case.image_sha256)  # present and still matching its sha256
                assert restored.artifacts.get(case.id, "pixels-png16.png") is not None
        assert (target.resolved_retrieval_index_dir / "CURRENT").read_text() == "snap-000001\n"


@contextmanager
def restored_settings(source: Settings, var_dir: Path, database_url: str) -> Iterator[Settings]:
    if not database_url:
        yield Settings(var_dir=var_dir, database_url="")
        return
    with fresh_postgres_database(source.database_url) as url:
        yield Settings(var_dir=var_dir, database_url=url)


@pytest.fixture
def small_backup(tmp_path: Path, kermany_dir: Path) -> tuple[Settings, Path]:
    """A SQLite workstation with three cases and its backup as a folder."""
    source = Settings(var_dir=tmp_path / "source", database_url="")
    with opened(source) as storage:
        for number, film in enumerate(films(kermany_dir, 3)):
            store_case(storage, film, f"Small {number}")
    return source, create_backup(source, tmp_path / "backup").path


def verify_output(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = storage_cli(["verify-backup", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_verify_backup_names_a_changed_byte_a_missing_file_and_a_missing_referenced_image(
    small_backup: tuple[Settings, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, backup = small_backup
    code, output = verify_output(backup, capsys)
    assert code == 0 and "3 referenced images are present" in output and "key files not included" in output
    manifest = json.loads((backup / "manifest.json").read_text())
    images = sorted(name for name in manifest["files"] if name.startswith("images/"))
    assert len(images) == 3

    original = (backup / images[0]).read_bytes()
    (backup / images[0]).write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    code, output = verify_output(backup, capsys)
    assert code == 2 and f"{images[0]}: its sha256 does not match the manifest" in output

    (backup / images[0]).write_bytes(original)
    (backup / images[1]).unlink()
    code, output = verify_output(backup, capsys)
    assert code == 2 and f"{images[1]}: missing" in output

    del manifest["files"][images[1]]  # a backup that left an image out and did not even list it
    (backup / "manifest.json").write_text(json.dumps(manifest))
    code, output = verify_output(backup, capsys)
    assert code == 2 and f"{images[1]}: missing, a case references it" in output


def test_restore_refuses_a_non_empty_install_and_a_backup_without_its_key(
    small_backup: tuple[Settings, Path], tmp_path: Path
) -> None:
    source, backup = small_backup
    with pytest.raises(BackupError, match=r"is not an empty install \(it holds artifacts, cxr.db, images\)"):
        restore_backup(backup, source)
    empty = Settings(var_dir=tmp_path / "empty", database_url="")
    with pytest.raises(BackupError, match=r"The backup holds no PHI key .* place the backed-up workstation's phi.key"):
        restore_backup(backup, empty)
    assert not empty.var_dir.exists() or not any(empty.var_dir.iterdir()), "a refused restore wrote files"
    empty.var_dir.mkdir(exist_ok=True)
    (empty.var_dir / "phi.key").write_text(generate_phi_key() + "\n")  # another workstation's key
    with pytest.raises(BackupError, match="does not open the backup's images"):
        restore_backup(backup, empty)


def test_include_keys_puts_the_key_files_in_the_backup_and_restore_places_them(
    small_backup: tuple[Settings, Path], tmp_path: Path
) -> None:
    source, _ = small_backup
    with_keys = create_backup(source, tmp_path / "with-keys.tar", include_keys=True)
    assert with_keys.includes_keys and with_keys.path.stat().st_mode & 0o077 == 0, "a backup is for the operator only"
    target = Settings(var_dir=tmp_path / "restored", database_url="")
    restore_backup(with_keys.path, target)
    assert (target.var_dir / "phi.key").read_text() == (source.var_dir / "phi.key").read_text()
    assert (target.var_dir / "phi.key").stat().st_mode & 0o777 == 0o600
    with opened(target) as restored:
        assert sorted(case.patient.name for case in restored.cases.list_cases().items) == [
            "Small 0",
            "Small 1",
            "Small 2",
        ]


def test_retention_keeps_the_newest_backups_in_backup_dir(small_backup: tuple[Settings, Path]) -> None:
    source, _ = small_backup
    settings = source.model_copy(update={"backup_keep": 2})
    folder = settings.resolved_backup_dir
    folder.mkdir(parents=True)
    older = [folder / "cxr-backup-20240101T000000Z.tar", folder / "cxr-backup-20250101T000000Z.tar"]
    for path in older:
        path.write_bytes(b"an older backup")
    unrelated = folder / "notes.txt"
    unrelated.write_text("kept")
    result = create_backup(settings)
    assert result.path.parent == folder and result.removed == [older[0]]
    assert sorted(path.name for path in folder.iterdir()) == [older[1].name, result.path.name, "notes.txt"]


def test_settings_in_a_backup_carry_no_secret(small_backup: tuple[Settings, Path]) -> None:
    secrets = {
        "jwt_secret": "jwt-secret-value-0123456789-0123456789",
        "audit_key": "audit-key-value-0123456789",
        "alert_smtp_password": "smtp-password-value",
        "alert_slack_webhook_url": "https://hooks.slack.com/services/T000/B000/slack-token-value",
        "database_url": "postgresql://cxr:db-password-value@db.example/cxr",
    }
    text = json.dumps(settings_without_secrets(Settings(**secrets, institution_name="St. Backup")))
    for value in ("jwt-secret-value", "audit-key-value", "smtp-password-value", "slack-token-value", "db-password"):
        assert value not in text
    values = json.loads(text)
    assert (
        values["database_url"] == "postgresql://cxr:***@db.example/cxr" and values["institution_name"] == "St. Backup"
    )
    source, backup = small_backup
    stored = (backup / "settings.json").read_text()
    assert (source.var_dir / "phi.key").read_text().strip() not in stored and '"backup_keep": 7' in stored


def test_key_file_names_are_the_ones_the_rooms_write() -> None:
    from api.auth import JWT_SECRET_FILE
    from monitoring.audit import AUDIT_KEY_FILE
    from storage import KEY_FILES

    assert KEY_FILES == ("phi.key", AUDIT_KEY_FILE, JWT_SECRET_FILE)
