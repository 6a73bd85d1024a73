"""`python -m storage backup | verify-backup`: a consistent backup of the whole workstation while the backend runs.

What a backup holds (a folder, or the same tree in one uncompressed tar: the images are encrypted and do not compress):

    manifest.json      what, when, versions (schema revision, app version), every file with its size and sha256
    settings.json      every setting except secrets (SecretStr fields, webhook URLs; passwords in URLs masked)
    database/cxr.db    SQLite: the online backup API's copy | database/cxr.pgdump: pg_dump, custom format
    images/ab/cd/<sha256>   the encrypted originals (content-addressed, never changed once written)
    artifacts/<case>/...    kept pixels and heatmaps
    mlflow/mlflow.db, mlflow/artifacts/...   the MLflow store (runs, registered versions, aliases)
    retrieval/...      the similar-case libraries
    keys/phi.key, keys/audit.key, keys/jwt.secret   only with --include-keys (see below)

Consistency: the database is copied first, by the engine itself, as of one commit. A case row is committed only after
its image is stored durably, and stored images never change, so copying the image store afterwards finds every image
the copy references; images stored after the copy are harmless extras. The backup checks that and fails, naming the
image, if one is missing. The MLflow database is copied before its artifact folder for the same reason.

Keys: the PHI key opens the patient fields and images, the audit key proves the audit chain. A backup with them is as
sensitive as the data in the clear, so they are left out unless `--include-keys` is given: keep the key files (or
PHI_ENCRYPTION_KEY / AUDIT_KEY) apart, e.g. in the hospital's secret store; a restore refuses to start without the
PHI key.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from pydantic import SecretStr

from settings import PROJECT_ROOT, Settings
from storage.crypto import KEY_FILE_NAME
from storage.database import Database
from storage.errors import BackupError
from storage.files import fsync_path
from storage.migrate import alembic_config
from storage.snapshots import (
    SnapshotFacts,
    check_client_version,
    dump_postgres,
    postgres_facts,
    postgres_schema,
    snapshot_sqlite,
    sqlite_facts,
    sqlite_path,
)

BACKUP_FORMAT = "cxr-workstation-backup"
BACKUP_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SETTINGS_FILE = "settings.json"
SQLITE_FILE = "database/cxr.db"
POSTGRES_FILE = "database/cxr.pgdump"
MLFLOW_DATABASE_FILE = "mlflow/mlflow.db"
# Secrets the workstation generates into VAR_DIR when no setting gives them: the PHI key (storage.crypto), the audit
# key (monitoring.audit.AUDIT_KEY_FILE) and the token-signing secret (api.auth.JWT_SECRET_FILE).
AUDIT_KEY_FILE = "audit.key"
KEY_FILES: tuple[str, ...] = (KEY_FILE_NAME, AUDIT_KEY_FILE, "jwt.secret")
BACKUP_NAME = re.compile(r"^cxr-backup-\d{8}T\d{6}Z\.tar$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupResult:
    path: Path
    files: int
    size_bytes: int
    seconds: float
    referenced_images: int
    includes_keys: bool
    removed: list[Path] = field(default_factory=list)  # older backups deleted by BACKUP_KEEP


# --- where the files go: a folder or a tar file ----------------------------------------------------------------------


class _Sink(ABC):
    """Receives the backup's files under their names and records each one's size and sha256 for the manifest."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.files: dict[str, dict[str, Any]] = {}

    def add_file(self, source: Path, name: str) -> None:
        with source.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            reader = _HashingReader(handle)
            self._write(reader, size, name)
        self.files[name] = {"size": size, "sha256": reader.digest.hexdigest()}

    def add_bytes(self, data: bytes, name: str) -> None:
        self._write(io.BytesIO(data), len(data), name)
        self.files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    @abstractmethod
    def _write(self, reader: IO[bytes], size: int, name: str) -> None: ...

    @abstractmethod
    def finish(self, manifest: bytes) -> None:
        """Write the manifest last and publish the backup under its final name (never a half-made one)."""

    @abstractmethod
    def abort(self) -> None: ...


class _HashingReader(io.RawIOBase):
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self.digest.update(chunk)
        return chunk


class _FolderSink(_Sink):
    def __init__(self, target: Path) -> None:
        super().__init__(target)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise BackupError(f"{target} already exists and is not an empty folder; choose a new name.")
        self.staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, mode=0o700)  # a backup is for the workstation's operator only

    def _write(self, reader: IO[bytes], size: int, name: str) -> None:
        path = self.staging / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            shutil.copyfileobj(reader, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())

    def finish(self, manifest: bytes) -> None:
        self._write(io.BytesIO(manifest), len(manifest), MANIFEST_FILE)
        for folder in sorted({p for p in self.staging.rglob("*") if p.is_dir()}, reverse=True):
            fsync_path(folder)
        if self.target.exists():
            self.target.rmdir()
        os.replace(self.staging, self.target)
        fsync_path(self.target.parent)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class _TarSink(_Sink):
    def __init__(self, target: Path) -> None:
        super().__init__(target)
        if target.exists():
            raise BackupError(f"{target} already exists; choose a new name.")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.partial = target.with_name(f".{target.name}.partial")
        self.partial.unlink(missing_ok=True)  # left by an interrupted run
        os.close(os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # for the operator only
        self.tar = tarfile.open(self.partial, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by finish/abort)

    def _write(self, reader: IO[bytes], size: int, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(time.time()), 0o600
        self.tar.addfile(info, reader)

    def finish(self, manifest: bytes) -> None:
        self._write(io.BytesIO(manifest), len(manifest), MANIFEST_FILE)
        self.tar.close()
        with self.partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, self.target)
        fsync_path(self.target.parent)

    def abort(self) -> None:
        self.tar.close()
        self.partial.unlink(missing_ok=True)


# --- what goes in -----------------------------------------------------------------------------------------------------


def _add_tree(sink: _Sink, root: Path, prefix: str) -> int:
    """Every file under `root` (hidden ones, i.e. temp files, locks and staging folders, skipped) as prefix/<path>.

    A file that disappears while we copy (a superseded library snapshot, a swept orphan) is simply not in the backup.
    """
    count = 0
    if not root.is_dir():
        return count
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        try:
            sink.add_file(path, f"{prefix}/{relative.as_posix()}")
        except FileNotFoundError:
            continue
        count += 1
    return count


def _add_database(settings: Settings, sink: _Sink, work: Path) -> tuple[SnapshotFacts, dict[str, Any]]:
    database = Database(settings.resolved_database_url)
    try:
        if database.is_sqlite:
            copy = work / "cxr.db"
            snapshot_sqlite(sqlite_path(settings.resolved_database_url), copy)
            facts, meta = sqlite_facts(copy), {"engine": "sqlite", "file": SQLITE_FILE}
        else:
            copy = work / "cxr.pgdump"
            version = check_client_version(database, "pg_dump")
            facts = dump_postgres(database, copy)
            meta = {"engine": "postgresql", "file": POSTGRES_FILE, "schema": postgres_schema(database.url),
                    "pg_dump": version}  # fmt: skip
    finally:
        database.dispose()
    sink.add_file(copy, meta["file"])
    return facts, meta


def _add_images(settings: Settings, sink: _Sink, facts: SnapshotFacts) -> None:
    """The image store, then the check that every image the database copy references made it into the backup."""
    _add_tree(sink, settings.resolved_image_store_dir, "images")
    missing = sorted(sha for sha in facts.image_refs if image_member(sha) not in sink.files)
    if missing:
        raise BackupError(
            f"The image store {settings.resolved_image_store_dir} lacks {len(missing)} image(s) that cases reference "
            f"(first: {missing[0]}); the backup was not written."
        )


def _add_mlflow(settings: Settings, sink: _Sink, work: Path) -> dict[str, Any]:
    """The MLflow database (SQLite backup API), then its artifact folder; a tracking server is backed up by its own
    tools and only noted."""
    uri = settings.resolved_mlflow_tracking_uri
    meta: dict[str, Any] = {"tracking_uri_scheme": urlsplit(uri).scheme, "artifact_dir": str(_artifact_dir(settings))}
    if uri.startswith("sqlite:"):
        source = sqlite_path(uri)
        if source.is_file():
            snapshot_sqlite(source, work / "mlflow.db")
            sink.add_file(work / "mlflow.db", MLFLOW_DATABASE_FILE)
            meta["database"] = MLFLOW_DATABASE_FILE
    else:
        meta["note"] = "MLFLOW_TRACKING_URI is not a SQLite file: back up that tracking store with its own tools."
    _add_tree(sink, settings.mlflow_artifact_dir, "mlflow/artifacts")
    return meta


def _add_libraries(sink: _Sink, root: Path) -> None:
    """The similar-case libraries, each copied under its writers' lock (case_retrieval/store.py `writer_lock`: flock
    on <library>/.lock), so a library's CURRENT and the snapshot it names are copied as one published state."""
    libraries = sorted(path.parent for path in root.rglob("CURRENT")) if root.is_dir() else []
    with ExitStack() as locks:
        for library in libraries:  # writers take one library's lock each: taking them in order cannot deadlock
            handle = locks.enter_context((library / ".lock").open("a+b"))
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        _add_tree(sink, root, "retrieval")


def _add_keys(settings: Settings, sink: _Sink) -> list[str]:
    included = []
    for name in KEY_FILES:
        path = Path(settings.var_dir) / name
        if path.is_file():
            sink.add_file(path, f"keys/{name}")
            included.append(name)
    return included


def _artifact_dir(settings: Settings) -> Path:
    return settings.mlflow_artifact_dir.resolve()


def image_member(sha256: str) -> str:
    """The name of an image inside a backup (the image store's own layout)."""
    return f"images/{sha256[:2]}/{sha256[2:4]}/{sha256}"


# --- settings without secrets, versions ------------------------------------------------------------------------------


def settings_without_secrets(settings: Settings) -> dict[str, Any]:
    """Every setting except the secrets: SecretStr fields and webhook URLs (the URL is the credential) are left out,
    a password inside any other URL is masked."""
    values: dict[str, Any] = {}
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if info.annotation is SecretStr or "webhook" in name:
            continue
        values[name] = _mask_url_password(value) if isinstance(value, str) else value
    return json.loads(json.dumps(values, default=str))


def _mask_url_password(value: str) -> str:
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def app_version() -> str:
    """The product version of pyproject.toml (the version the API reports too)."""
    found = re.search(r'^version\s*=\s*"([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    return found.group(1) if found else "unknown"


def known_revision(revision: str | None) -> bool:
    """True if this code's migrations include `revision` (a backup from newer code cannot be restored by it)."""
    if revision is None:
        return False
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


# --- making one -------------------------------------------------------------------------------------------------------


def create_backup(settings: Settings, out: Path | None = None, *, include_keys: bool = False) -> BackupResult:
    """Back up the workstation `settings` describe to `out` (a folder, or a file ending in .tar), or without `out`
    to BACKUP_DIR/cxr-backup-<UTC time>.tar and then keep only the newest BACKUP_KEEP backups there."""
    started, now = time.monotonic(), datetime.now(UTC)
    target = out or settings.resolved_backup_dir / f"cxr-backup-{now:%Y%m%dT%H%M%SZ}.tar"
    sink: _Sink = _TarSink(target) if target.suffix == ".tar" else _FolderSink(target)
    try:
        with tempfile.TemporaryDirectory(prefix=".cxr-backup-", dir=target.parent) as work:
            facts, database_meta = _add_database(settings, sink, Path(work))
            _add_images(settings, sink, facts)
            _add_tree(sink, Path(settings.var_dir) / "artifacts", "artifacts")
            mlflow_meta = _add_mlflow(settings, sink, Path(work))
            _add_libraries(sink, settings.resolved_retrieval_index_dir)
            keys = _add_keys(settings, sink) if include_keys else []
            sink.add_bytes(json.dumps(settings_without_secrets(settings), indent=1).encode(), SETTINGS_FILE)
            manifest = {
                "format": BACKUP_FORMAT, "format_version": BACKUP_FORMAT_VERSION, "created_at": now.isoformat(),
                "app_version": app_version(), "schema_revision": facts.schema_revision, "database": database_meta,
                "referenced_images": len(facts.image_refs), "mlflow": mlflow_meta, "keys": keys,
                "includes_keys": bool(keys), "files": sink.files,
            }  # fmt: skip
            sink.finish(json.dumps(manifest, indent=1).encode())
    except BaseException:
        sink.abort()
        raise
    removed = prune_backups(settings.resolved_backup_dir, settings.backup_keep) if out is None else []
    size = sum(entry["size"] for entry in sink.files.values())
    return BackupResult(target, len(sink.files), size, time.monotonic() - started, len(facts.image_refs), bool(keys),
                        removed)  # fmt: skip


def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups named cxr-backup-<UTC time>.tar in `folder` (0: delete none)."""
    if keep <= 0 or not folder.is_dir():
        return []
    backups = sorted(path for path in folder.iterdir() if BACKUP_NAME.match(path.name))  # the name sorts by time
    old = backups[:-keep]
    for path in old:
        path.unlink()
    return old


# --- reading one back -------------------------------------------------------------------------------------------------


@contextmanager
def open_backup(source: Path) -> Iterator[Path]:
    """The backup's folder: `source` itself, or a tar unpacked into a temporary folder under TMPDIR."""
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise BackupError(f"No backup at {source}.")
    with tempfile.TemporaryDirectory(prefix="cxr-backup-") as work:  # TMPDIR: the source may be read-only media
        try:
            with tarfile.open(source, "r") as tar:
                tar.extractall(work, filter="data")  # refuses links and paths outside the folder
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{source} is not a readable backup tar file ({exc}).") from exc
        yield Path(work)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{MANIFEST_FILE} is missing or unreadable ({exc}): this is not a complete backup.") from exc
    if manifest.get("format") != BACKUP_FORMAT or manifest.get("format_version") != BACKUP_FORMAT_VERSION:
        raise BackupError(f"{MANIFEST_FILE} does not describe a backup of this format ({BACKUP_FORMAT} v1).")
    return manifest


def _file_problems(folder: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, the manifest says {entry['size']}")
        elif _sha256(path) != entry["sha256"]:
            problems.append(f"{name}: its sha256 does not match the manifest (the file was changed or damaged)")
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def database_facts(folder: Path, manifest: dict[str, Any]) -> SnapshotFacts:
    path = folder / manifest["database"]["file"]
    return sqlite_facts(path) if manifest["database"]["engine"] == "sqlite" else postgres_facts(path)


def check_backup(folder: Path) -> dict[str, Any]:
    """The manifest of the backup in `folder` after checking it whole; `BackupError` naming every problem found."""
    manifest = read_manifest(folder)
    problems = _file_problems(folder, manifest["files"])
    if manifest["database"]["file"] not in manifest["files"]:
        problems.append(f"{manifest['database']['file']}: the database copy is not in the manifest")
    if not problems:
        facts = database_facts(folder, manifest)
        if facts.schema_revision != manifest["schema_revision"]:
            problems.append(f"{manifest['database']['file']}: schema revision {facts.schema_revision}, the manifest "
                            f"says {manifest['schema_revision']}")  # fmt: skip
        elif not known_revision(facts.schema_revision):
            problems.append(f"{manifest['database']['file']}: schema revision {facts.schema_revision} is unknown to "
                            "this version of the workstation (restore it with the version that made it)")  # fmt: skip
        problems += [f"{image_member(sha)}: missing, a case references it" for sha in sorted(facts.image_refs)
                     if image_member(sha) not in manifest["files"]]  # fmt: skip
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise BackupError(f"The backup is damaged or incomplete:\n  {shown}")
    return manifest


def verify_backup(source: Path) -> dict[str, Any]:
    """`python -m storage verify-backup`: check a backup folder or tar without restoring it; returns its manifest."""
    with open_backup(source) as folder:
        return check_backup(folder)
