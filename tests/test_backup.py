"""Backups (issue 18): `python -m storage backup | verify-backup | restore`.

Storage level, on SQLite and PostgreSQL: a backup taken while a thread keeps storing cases restores every case
acknowledged before it started, with readable patient names and intact images, into an empty install (a fresh
PostgreSQL database for pg_dump). verify-backup names a changed image byte, a missing file and an image a case
references that the backup lacks; restore refuses a non-empty install and a backup whose PHI key it lacks; retention
keeps the newest BACKUP_KEEP backups; settings.json carries no secret.

Through HTTP (the whole workstation; marked slow, about two minutes here): two real backends, the first under write
load while `python -m storage backup --include-keys` runs, its folder then moved away; the second on the restored
folder: same cases, names, signed PDF, logins, audit chain intact, MLflow versions, aliases and model files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from case_retrieval.store import writer_lock
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
from tests.conftest import (
    DATABASES,
    ApiAccount,
    ReferenceLibrary,
    libpq_url,
    login,
    postgres_schema,
    server_env,
    started_api,
)
from tests.live_server import ROOT, running_api
from tests.test_clinical_path import pdf_text, stamp, words

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


def test_a_library_being_saved_is_copied_as_its_writer_published_it(
    small_backup: tuple[Settings, Path], tmp_path: Path
) -> None:
    """A writer holds the library's lock (case_retrieval's own), publishes snap-000002 and drops snap-000001: the
    backup waits for it and holds the new CURRENT with the snapshot it names, never a CURRENT without its snapshot."""
    source, _ = small_backup
    library = source.resolved_retrieval_index_dir
    (library / "snap-000001").mkdir(parents=True)
    (library / "snap-000001" / "library.json").write_text("first")
    (library / "CURRENT").write_text("snap-000001\n")
    locked = threading.Event()

    def save() -> None:
        with writer_lock(library):
            locked.set()
            time.sleep(1.5)
            (library / "snap-000002").mkdir()
            (library / "snap-000002" / "library.json").write_text("second")
            (library / "CURRENT").write_text("snap-000002\n")
            shutil.rmtree(library / "snap-000001")

    writer = threading.Thread(target=save)
    writer.start()
    locked.wait()
    backup = create_backup(source, tmp_path / "during-save").path
    writer.join()
    assert (backup / "retrieval" / "CURRENT").read_text() == "snap-000002\n"
    assert (backup / "retrieval" / "snap-000002" / "library.json").read_text() == "second"


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


# --- the whole workstation through HTTP -----------------------------------------------------------------------------

MODEL_NAME = "cxr-backup-test"
# MLflow directly (not mlops.registry): the test is about the store travelling, whichever code wrote it.
REGISTER_SCRIPT = """
import sys
from pathlib import Path
import mlflow
from mlflow import MlflowClient
uri, artifacts, checkpoint, name = sys.argv[1:5]
mlflow.set_tracking_uri(uri)
experiment = mlflow.create_experiment("backup-test", artifact_location=Path(artifacts).as_uri())
with mlflow.start_run(experiment_id=experiment) as run:
    mlflow.log_artifact(checkpoint, artifact_path="checkpoint")
client = MlflowClient()
client.create_registered_model(name)
for _ in range(2):
    client.create_model_version(name, f"{run.info.artifact_uri}/checkpoint", run.info.run_id)
client.set_registered_model_alias(name, "champion", "1")
client.set_registered_model_alias(name, "challenger", "2")
"""
READ_SCRIPT = """
import hashlib, json, sys, tempfile
from pathlib import Path
import mlflow
from mlflow import MlflowClient
uri, name = sys.argv[1:3]
mlflow.set_tracking_uri(uri)
client = MlflowClient()
versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
aliases = client.get_registered_model(name).aliases
with tempfile.TemporaryDirectory() as out:
    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion", dst_path=out))
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest() if files else None  # None: not where MLflow looks
print(json.dumps({"versions": versions, "aliases": aliases, "champion_sha256": digest}))
"""


def run_python(arguments: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, *arguments], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"{arguments[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def mlflow_registry(var_dir: Path) -> dict:
    return json.loads(run_python(["-c", READ_SCRIPT, f"sqlite:///{var_dir / 'mlflow.db'}", MODEL_NAME]))


class HttpWriter(threading.Thread):
    """A radiologist who keeps sending studies; `acknowledged` holds the case ids answered 201."""

    def __init__(self, http: httpx.Client, pool: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.http, self.pool, self.acknowledged, self.failures = http, pool, [], []
        self.stop = threading.Event()

    def run(self) -> None:
        for number, film in enumerate(self.pool):
            if self.stop.is_set():
                return
            patient = json.dumps({"name": f"Load Patient {number}"})
            answer = self.http.post("/v1/studies", files={"file": ("film.jpeg", film)}, data={"patient": patient})
            (self.acknowledged if answer.status_code == 201 else self.failures).append(
                answer.json()["case_id"] if answer.status_code == 201 else answer.text
            )


@dataclass
class Original:
    names: dict[str, str]  # case id -> patient name, acknowledged before the backup started
    signed: str
    signed_at: str
    accounts: dict[str, ApiAccount]
    checkpoint_sha256: str  # of the file registered as both versions
    backup: Path


@pytest.fixture(scope="module")
def original(
    tmp_path_factory: pytest.TempPathFactory,
    shipped_model: Path,
    tiny_checkpoint: Path,
    reference_library: ReferenceLibrary,
    kermany_dir: Path,
) -> Original:
    """A workstation with cases, a signed one and two registered model versions, backed up while a radiologist keeps
    sending studies; its folder is then moved away, as when the machine is lost."""
    root = tmp_path_factory.mktemp("backup-http")
    env = server_env(root / "var", shipped_model, reference_library)
    run_python(["-c", REGISTER_SCRIPT, f"sqlite:///{root / 'var' / 'mlflow.db'}", str(root / "var" / "mlartifacts"),
                str(tiny_checkpoint), MODEL_NAME])  # fmt: skip
    pool = films(kermany_dir, 40)
    with started_api(env, "sqlite") as api, api.client("radiologist") as radiologist:
        names = {}
        for number, film in enumerate(pool[:3]):
            answer = radiologist.post("/v1/studies", files={"file": ("film.jpeg", film)},
                                      data={"patient": json.dumps({"name": f"Backup Patient {number}"})})  # fmt: skip
            assert answer.status_code == 201, answer.text
            names[answer.json()["case_id"]] = f"Backup Patient {number}"
        signed = radiologist.post(f"/v1/cases/{next(iter(names))}/sign")
        assert signed.status_code == 200, signed.text
        writer = HttpWriter(api.client("radiologist"), pool[3:])
        writer.start()
        while not writer.acknowledged:
            time.sleep(0.05)
        before = list(writer.acknowledged)
        run_python(["-m", "storage", "backup", "--out", str(root / "backup.tar"), "--include-keys"], env)
        during = len(writer.acknowledged) - len(before)
        writer.stop.set()
        writer.join()
    assert during > 0 and not writer.failures, f"studies during the backup: {during}, failures: {writer.failures}"
    names |= {case_id: f"Load Patient {number}" for number, case_id in enumerate(before)}
    (root / "var").rename(root / "var-lost")
    checkpoint_sha256 = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    return Original(names, signed.json()["case_id"], signed.json()["signed_at"], api.accounts, checkpoint_sha256,
                    root / "backup.tar")  # fmt: skip


@pytest.fixture(scope="module")
def restored(original: Original, shipped_model: Path) -> Iterator[str]:
    """`python -m storage restore` into a new folder, then a second backend on it (its accounts exist already)."""
    var_dir = original.backup.parent / "restored"
    env = server_env(var_dir, shipped_model, None) | {"ADMIN_PASSWORD": original.accounts["admin"].password}
    output = run_python(["-m", "storage", "restore", "--from", str(original.backup), "--var-dir", str(var_dir)], env)
    assert "Restored" in output and "No audit key" not in output, output
    with running_api(env) as url:
        yield url


@pytest.mark.slow  # two backends, MLflow: about two minutes here
def test_verify_backup_passes_on_the_backup_taken_under_load(original: Original) -> None:
    output = run_python(["-m", "storage", "verify-backup", str(original.backup)])
    assert "is a complete backup" in output and "key files included" in output


@pytest.mark.slow  # two backends, MLflow: about two minutes here
def test_the_restored_workstation_has_every_acknowledged_case_with_readable_names(
    original: Original, restored: str
) -> None:
    radiologist = original.accounts["radiologist"]
    token = login(restored, radiologist.username, radiologist.password)  # the users came back: they log in
    with httpx.Client(base_url=restored, timeout=120, headers={"Authorization": f"Bearer {token}"}) as http:
        listed = http.get("/v1/cases", params={"limit": 200})
        assert listed.status_code == 200, listed.text
        names = {case["case_id"]: case["patient"]["name"] for case in listed.json()["items"]}
        assert {case_id: names.get(case_id) for case_id in original.names} == original.names
        pdf = pdf_text(http, original.signed, "radiologist")
    signer, when = radiologist.username, stamp(original.signed_at)
    assert words(f"Electronically signed by {signer} on {when}.") in pdf and words("Backup Patient 0") in pdf


@pytest.mark.slow  # two backends, MLflow: about two minutes here
def test_the_restored_audit_chain_verifies(original: Original, restored: str) -> None:
    admin = original.accounts["admin"]
    token = login(restored, admin.username, admin.password)
    answer = httpx.get(f"{restored}/v1/audit/verify", headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["intact"] is True and answer.json()["problem"] is None
    assert answer.json()["records"] > len(original.names), "the restored chain lacks the studies' audit records"


@pytest.mark.slow  # two backends, MLflow: about two minutes here
def test_the_restored_mlflow_registry_has_the_versions_aliases_and_files(original: Original, restored: str) -> None:
    after = mlflow_registry(original.backup.parent / "restored")  # the original folder is gone: no stale path works
    assert after == {
        "versions": [1, 2],
        "aliases": {"champion": 1, "challenger": 2},
        "champion_sha256": original.checkpoint_sha256,
    }
