"""storage: the one database layer of the workstation and its content-addressed image store.

Public surface:
- `init_storage(settings=None) -> Storage` (PHI key, migrations to head, repositories, image store) and
  `Storage(database, cases, images, cipher, artifacts)`; `migrate(url)`, `migrate_database(database)`,
  `head_revision()`, `schema_revision(database)`
- `Database(url)`: `.session()` (reads), `.transaction()` (writes), `.write_connection()`, `.ping()`, `.dispose()`
- `CaseRepository(database)`: `create_case(NewCase)`, `get_case(id)`, `list_cases(limit, offset, filters...)`,
  `update_case(id, **changes)`, `sign_case(id, signed_by)`; plain records `CaseRecord`, `PatientInfo`, `NewCase`,
  `CasePage`; `CaseStatus`
- `ArtifactStore(root)`: derived files per case (heatmaps; the kept pixels under `CASE_PIXELS_ARTIFACT`),
  `safe_artifact_name(*parts)`
- Durable files (storage/files.py): `write_durably(path, data)`, `fsync_path(path)`,
  `create_secret_file_once(path, make_secret)`: every file the product must not lose or half-write
- `ImageStore(root, cipher=None)`: `put(bytes) -> sha256`, `get(sha256)`, `path(sha256)`, `exists(sha256)`,
  `stored_keys()`, `check_writable()`; files are encrypted with the PHI keys
- PHI encryption: `PhiCipher`, `load_phi_cipher(settings)`, `configure_phi_cipher`, `active_phi_cipher`,
  `generate_phi_key()`, `rotate_phi_key(database, new_key, old_keys, images=store)` (every table's encrypted and
  `PatientPseudonym` columns), `rotate_images(root, cipher)`
- Files of studies that never committed: `sweep_orphans(storage, grace_s) -> SweepResult`, `OrphanSweeper`
- ORM: `Base` (other rooms add tables on it), `Case`, `new_case_id()`; column types for those tables `JSONType`,
  `UTCDateTime`, `EncryptedText` (free text that may name a patient), `PatientPseudonym` (a copy of the keyed
  patient-id index), `utcnow()`; errors: `StorageError` and its subclasses
- Accounts (storage/users.py): `UserRepository(database)` (users and hashed API keys), `User`, `ApiKey`,
  `UserRecord`, `ApiKeyRecord`, `RevokedToken` (logout), `normalize_username`, `ADMIN_ROLE`; errors `UserNotFoundError`,
  `UsernameTakenError`, `LastAdminError`, `ApiKeyNotFoundError`, `InvalidUserDataError`
- Backups (storage/backup.py, storage/restore.py): `create_backup(settings, out, include_keys=False) -> BackupResult`,
  `verify_backup(path) -> manifest`, `restore_backup(path, settings) -> RestoreResult`, `prune_backups(folder, keep)`,
  `settings_without_secrets(settings)`, `KEY_FILES`; `copy_durably(source, target)`; error `BackupError`
- Command line: `python -m storage migrate | generate-phi-key | rotate-phi-key [--new-key KEY] |
  backup [--out DIR|FILE.tar] [--include-keys] | restore --from DIR|FILE.tar [--var-dir DIR] | verify-backup PATH`
"""

from storage.artifacts import CASE_PIXELS_ARTIFACT, ArtifactStore, safe_artifact_name
from storage.backup import (
    KEY_FILES,
    BackupResult,
    create_backup,
    prune_backups,
    settings_without_secrets,
    verify_backup,
)
from storage.bootstrap import Storage, init_storage
from storage.cases import MAX_PAGE_SIZE, UPDATABLE_FIELDS, CasePage, CaseRecord, CaseRepository, NewCase, PatientInfo
from storage.crypto import (
    PhiCipher,
    active_phi_cipher,
    configure_phi_cipher,
    generate_phi_key,
    load_phi_cipher,
    normalize_patient_id,
)
from storage.database import Database, create_database_engine
from storage.errors import (
    BackupError,
    CaseNotFoundError,
    CaseStateError,
    DecryptionError,
    EncryptionKeyError,
    ImageCorruptedError,
    ImageNotFoundError,
    InvalidCaseDataError,
    InvalidImageDataError,
    InvalidImageKeyError,
    StorageError,
    StorageUnavailableError,
    UnknownTablesError,
)
from storage.files import copy_durably, create_secret_file_once, fsync_path, write_durably
from storage.images import ImageStore
from storage.migrate import head_revision, migrate, migrate_database, schema_revision
from storage.models import Base, Case, CaseStatus, new_case_id
from storage.restore import RestoreResult, restore_backup
from storage.rotation import rotate_images, rotate_phi_key
from storage.sweep import OrphanSweeper, SweepResult, sweep_orphans
from storage.types import EncryptedText, JSONType, PatientPseudonym, UTCDateTime, utcnow
from storage.users import (
    ADMIN_ROLE,
    ApiKey,
    ApiKeyNotFoundError,
    ApiKeyRecord,
    InvalidUserDataError,
    LastAdminError,
    RevokedToken,
    User,
    UsernameTakenError,
    UserNotFoundError,
    UserRecord,
    UserRepository,
    normalize_username,
)

__all__ = [
    "ADMIN_ROLE",
    "CASE_PIXELS_ARTIFACT",
    "KEY_FILES",
    "MAX_PAGE_SIZE",
    "UPDATABLE_FIELDS",
    "ApiKey",
    "ApiKeyNotFoundError",
    "ApiKeyRecord",
    "ArtifactStore",
    "BackupError",
    "BackupResult",
    "Base",
    "Case",
    "CaseNotFoundError",
    "CasePage",
    "CaseRecord",
    "CaseRepository",
    "CaseStateError",
    "CaseStatus",
    "Database",
    "DecryptionError",
    "EncryptedText",
    "EncryptionKeyError",
    "ImageCorruptedError",
    "ImageNotFoundError",
    "ImageStore",
    "InvalidCaseDataError",
    "InvalidImageDataError",
    "InvalidImageKeyError",
    "InvalidUserDataError",
    "JSONType",
    "LastAdminError",
    "NewCase",
    "OrphanSweeper",
    "PatientInfo",
    "PatientPseudonym",
    "PhiCipher",
    "RestoreResult",
    "RevokedToken",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "SweepResult",
    "UTCDateTime",
    "UnknownTablesError",
    "User",
    "UserNotFoundError",
    "UserRecord",
    "UserRepository",
    "UsernameTakenError",
    "active_phi_cipher",
    "configure_phi_cipher",
    "copy_durably",
    "create_backup",
    "create_database_engine",
    "create_secret_file_once",
    "fsync_path",
    "generate_phi_key",
    "head_revision",
    "init_storage",
    "load_phi_cipher",
    "migrate",
    "migrate_database",
    "new_case_id",
    "normalize_patient_id",
    "normalize_username",
    "prune_backups",
    "restore_backup",
    "rotate_images",
    "rotate_phi_key",
    "safe_artifact_name",
    "schema_revision",
    "settings_without_secrets",
    "sweep_orphans",
    "utcnow",
    "verify_backup",
    "write_durably",
]
