"""`python -m storage restore --from BACKUP [--var-dir DIR]`: a backup made by storage/backup.py into an empty install.

The backup is checked whole first (as `verify-backup` does); then the install must be empty (no database tables, no
files in VAR_DIR but key files and logs), so a restore never mixes two workstations' data. The PHI key the restored
workstation will use (PHI_ENCRYPTION_KEY, a key file already placed in VAR_DIR, or the backup's own with
--include-keys) must open the backup's images before anything is written. MLflow keeps absolute artifact locations
in its database; they are moved from the backed-up artifact folder to this install's.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from settings import Settings
from storage.backup import AUDIT_KEY_FILE, KEY_FILES, MLFLOW_DATABASE_FILE, check_backup, open_backup
from storage.crypto import KEY_FILE_NAME, PhiCipher, is_sealed_file, load_phi_cipher, read_key_file
from storage.database import Database
from storage.errors import BackupError, DecryptionError, EncryptionKeyError
from storage.files import copy_durably
from storage.snapshots import postgres_is_empty, postgres_schema, restore_postgres, sqlite_is_empty, sqlite_path

# What an empty install may already hold: the keys kept apart from the backup, placed here first, and logs.
_ALLOWED_IN_EMPTY_VAR_DIR = frozenset({*KEY_FILES, "logs", "backups"})


@dataclass(frozen=True)
class RestoreResult:
    files: int
    schema_revision: str
    cases_images: int
    notes: list[str] = field(default_factory=list)  # what the operator must still do


def restore_backup(source: Path, settings: Settings) -> RestoreResult:
    """Restore the backup folder or tar `source` into the empty install `settings` describe."""
    with open_backup(source) as folder:
        manifest = check_backup(folder)
        _check_empty_install(settings, manifest)
        keys = _keys_to_place(folder, manifest, settings)
        _check_phi_key(folder, manifest, settings, keys.get(KEY_FILE_NAME))
        _restore_database(folder, manifest, settings)
        var_dir = Path(settings.var_dir)
        for name, path in keys.items():
            copy_durably(path, var_dir / name, mode=0o600)
        count = _copy_tree(folder, "images", settings.resolved_image_store_dir, manifest)
        count += _copy_tree(folder, "artifacts", var_dir / "artifacts", manifest)
        count += _restore_mlflow(folder, manifest, settings)
        count += _copy_tree(folder, "retrieval", settings.resolved_retrieval_index_dir, manifest)
    return RestoreResult(count + 1, manifest["schema_revision"], manifest["referenced_images"], _notes(settings))


def _notes(settings: Settings) -> list[str]:
    if (Path(settings.var_dir) / AUDIT_KEY_FILE).is_file() or settings.audit_key.get_secret_value().strip():
        return []
    return [
        f"No audit key: place the backed-up workstation's {AUDIT_KEY_FILE} in VAR_DIR (or set AUDIT_KEY) before "
        "starting, or the audit chain will not verify."
    ]


def _check_empty_install(settings: Settings, manifest: dict[str, Any]) -> None:
    var_dir = Path(settings.var_dir)
    found = (
        sorted(p.name for p in var_dir.iterdir() if p.name not in _ALLOWED_IN_EMPTY_VAR_DIR) if var_dir.is_dir() else []
    )
    for folder in (
        settings.resolved_image_store_dir,
        settings.resolved_retrieval_index_dir,
        settings.mlflow_artifact_dir,
    ):
        if folder.is_dir() and any(folder.iterdir()) and not folder.resolve().is_relative_to(var_dir.resolve()):
            found.append(str(folder))
    database = Database(settings.resolved_database_url)
    try:
        engine = "sqlite" if database.is_sqlite else "postgresql"
        if engine != manifest["database"]["engine"]:
            raise BackupError(
                f"The backup holds a {manifest['database']['engine']} database but DATABASE_URL is {engine}: restore "
                "into the same database engine."
            )
        if engine == "postgresql" and postgres_schema(database.url) != manifest["database"]["schema"]:
            raise BackupError(
                f"The backup's tables are in schema {manifest['database']['schema']!r}, DATABASE_URL uses "
                f"{postgres_schema(database.url)!r}: restore into a database whose schema has the backup's name."
            )
        if engine == "postgresql" and not postgres_is_empty(database):
            found.append(f"tables in the PostgreSQL schema {postgres_schema(database.url)!r}")
    finally:
        database.dispose()
    if found:
        raise BackupError(
            f"{var_dir} is not an empty install (it holds {', '.join(found)}); a restore never mixes two "
            "workstations' data: point VAR_DIR (or --var-dir) at a new folder and DATABASE_URL at an empty database."
        )


def _keys_to_place(folder: Path, manifest: dict[str, Any], settings: Settings) -> dict[str, Path]:
    """The backup's key files that the install lacks; refuses when both have one and they differ."""
    keys = {}
    for name in manifest.get("keys", []):
        backed_up, existing = folder / "keys" / name, Path(settings.var_dir) / name
        if not existing.is_file():
            keys[name] = backed_up
        elif existing.read_bytes().strip() != backed_up.read_bytes().strip():
            raise BackupError(f"{existing} differs from the backup's {name}; remove one of them.")
    return keys


def _check_phi_key(folder: Path, manifest: dict[str, Any], settings: Settings, backed_up: Path | None) -> None:
    """Refuse unless the PHI key the restored workstation will read with opens the backup's images."""
    configured = settings.phi_encryption_key.get_secret_value().strip()
    key_file = Path(settings.var_dir) / KEY_FILE_NAME
    if configured or (backed_up is None and key_file.is_file()):
        cipher, source = load_phi_cipher(settings), "PHI_ENCRYPTION_KEY" if configured else f"the key in {key_file}"
    elif backed_up is not None:
        cipher, source = PhiCipher(read_key_file(backed_up)), f"the backup's {KEY_FILE_NAME}"
    else:
        raise BackupError(
            "The backup holds no PHI key (made without --include-keys) and this install has none: place the "
            f"backed-up workstation's {KEY_FILE_NAME} in {settings.var_dir} or set PHI_ENCRYPTION_KEY, then restore "
            "again. Without it the patient data cannot be read."
        )
    sample = next((name for name in sorted(manifest["files"]) if name.startswith("images/")), None)
    if sample is None:
        return
    blob = (folder / sample).read_bytes()
    try:
        if is_sealed_file(blob):
            cipher.decrypt_file(blob, Path(sample).name)
    except (DecryptionError, EncryptionKeyError) as exc:
        raise BackupError(f"The PHI key ({source}) does not open the backup's images: {exc}") from exc


def _restore_database(folder: Path, manifest: dict[str, Any], settings: Settings) -> None:
    archive = folder / manifest["database"]["file"]
    if manifest["database"]["engine"] == "sqlite":
        target = sqlite_path(settings.resolved_database_url)
        if not sqlite_is_empty(target):
            raise BackupError(f"The database {target} is not empty.")
        target.unlink(missing_ok=True)
        copy_durably(archive, target)
        return
    database = Database(settings.resolved_database_url)
    try:
        restore_postgres(database, archive)
    finally:
        database.dispose()


def _copy_tree(folder: Path, prefix: str, target: Path, manifest: dict[str, Any]) -> int:
    names = [name for name in manifest["files"] if name.startswith(f"{prefix}/")]
    for name in names:
        copy_durably(folder / name, target / name.removeprefix(f"{prefix}/"))
    return len(names)


def _restore_mlflow(folder: Path, manifest: dict[str, Any], settings: Settings) -> int:
    meta = manifest["mlflow"]
    count = _copy_tree(folder, "mlflow/artifacts", settings.mlflow_artifact_dir, manifest)
    if meta.get("database") != MLFLOW_DATABASE_FILE:
        return count
    uri = settings.resolved_mlflow_tracking_uri
    if not uri.startswith("sqlite:"):
        raise BackupError("The backup holds an MLflow SQLite store but MLFLOW_TRACKING_URI is not a SQLite file.")
    target = sqlite_path(uri)
    copy_durably(folder / MLFLOW_DATABASE_FILE, target)
    repoint_mlflow_artifacts(target, Path(meta["artifact_dir"]), settings.mlflow_artifact_dir.resolve())
    return count + 1


def repoint_mlflow_artifacts(database: Path, old: Path, new: Path) -> int:
    """Replace the artifact folder `old` by `new` in every text column of the MLflow database (experiments, runs,
    model versions and logged models each keep absolute locations); returns the number of values changed."""
    if old == new:
        return 0
    pattern = re.compile(re.escape(str(old)) + r"(?=/|$)")
    changed = 0
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.create_function("repoint", 1, lambda value: pattern.sub(str(new), value), deterministic=True)
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                if any(kind in str(column[2]).upper() for kind in ("CHAR", "TEXT", "CLOB")):
                    changed += connection.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = repoint("{column[1]}") WHERE instr("{column[1]}", ?)',
                        (str(old),),
                    ).rowcount
    return changed
