"""`python -m storage <command>`: migrate the database, generate a PHI key, rotate the PHI key, back up the
workstation while it runs, verify a backup, restore one into an empty install."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from settings import Settings, get_settings
from storage.backup import BackupResult, create_backup, verify_backup
from storage.crypto import (
    PhiCipher,
    configure_phi_cipher,
    generate_phi_key,
    key_file_path,
    load_phi_cipher,
    read_key_file,
    write_key_file,
)
from storage.database import Database
from storage.errors import EncryptionKeyError, StorageError
from storage.images import ImageStore
from storage.migrate import import_model_modules, migrate_database
from storage.restore import RestoreResult, restore_backup
from storage.rotation import rotate_phi_key


def _migrate(settings: Settings) -> str:
    database = Database(settings.resolved_database_url)
    try:
        return f"Database at revision {migrate_database(database)}."
    finally:
        database.dispose()


def _rotate_configured_key(settings: Settings, database: Database, requested_key: str | None) -> str:
    """PHI_ENCRYPTION_KEY is set: re-encrypt under it, reading rows made under PHI_ENCRYPTION_OLD_KEYS."""
    cipher = load_phi_cipher(settings)
    if requested_key and requested_key.strip() != cipher.primary_key:
        raise EncryptionKeyError(
            "PHI_ENCRYPTION_KEY is set, so the new key comes from settings: set PHI_ENCRYPTION_KEY to the new key "
            "and PHI_ENCRYPTION_OLD_KEYS to the old one, restart the backend, then run this command without --new-key."
        )
    count = rotate_phi_key(database, cipher.primary_key, cipher.keys[1:], images=_images(settings))
    return (
        f"Re-encrypted {count} case(s), every other encrypted field and the stored images under PHI_ENCRYPTION_KEY. "
        "Remove PHI_ENCRYPTION_OLD_KEYS and restart."
    )


def _rotate_key_file(settings: Settings, database: Database, requested_key: str | None) -> str:
    """Development key file: add the new key in front (old rows stay readable), rotate, then drop the old keys."""
    path = key_file_path(settings)  # exists: `_rotate` loaded the cipher, which creates it on a first run
    old_keys = read_key_file(path)
    new_key = (requested_key or generate_phi_key()).strip()
    PhiCipher([new_key], source="--new-key")  # validate before touching anything
    write_key_file(path, [new_key, *old_keys])
    count = rotate_phi_key(database, new_key, old_keys, images=_images(settings))
    write_key_file(path, [new_key])  # only now: every case and image opens with the new key
    configure_phi_cipher(PhiCipher([new_key]))
    return (
        f"Re-encrypted {count} case(s), every other encrypted field and the stored images under a new key, now the "
        f"only key in {path}."
    )


def _images(settings: Settings) -> ImageStore:
    return ImageStore(settings.resolved_image_store_dir)  # rotate_phi_key reads it with the rotation's keys


def _rotate(settings: Settings, requested_key: str | None) -> str:
    load_phi_cipher(settings)  # refuse (production without a key, malformed key) before touching the database
    import_model_modules()  # every room's tables: the rotation re-encrypts the encrypted columns of each
    database = Database(settings.resolved_database_url)
    try:
        migrate_database(database)
        if settings.phi_encryption_key.get_secret_value().strip():
            return _rotate_configured_key(settings, database, requested_key)
        return _rotate_key_file(settings, database, requested_key)
    finally:
        database.dispose()


def _backup_message(result: BackupResult) -> str:
    keys = (
        "It holds the key files: keep it as safe as the patient data in the clear."
        if result.includes_keys
        else "It holds no key files: the PHI key (phi.key or PHI_ENCRYPTION_KEY) and the audit key, kept apart, are "
        "needed to restore it."
    )
    removed = f" Removed {len(result.removed)} older backup(s) (BACKUP_KEEP)." if result.removed else ""
    return (
        f"Backup written to {result.path}: {result.files} files, {result.size_bytes / 1e6:.1f} MB, "
        f"{result.referenced_images} referenced image(s), in {result.seconds:.1f} s. {keys}{removed}"
    )


def _restore_message(result: RestoreResult, settings: Settings) -> str:
    notes = "".join(f"\n{note}" for note in result.notes)
    return (
        f"Restored {result.files} files into {settings.var_dir} (schema revision {result.schema_revision}, "
        f"{result.cases_images} referenced image(s)). Start the backend on it.{notes}"
    )


def _verify_message(source: Path) -> str:
    manifest = verify_backup(source)
    return (
        f"{source} is a complete backup made {manifest['created_at']} by version {manifest['app_version']}: "
        f"{len(manifest['files'])} files match their checksums, the {manifest['database']['engine']} database is at "
        f"schema revision {manifest['schema_revision']}, all {manifest['referenced_images']} referenced images are "
        f"present; key files {'included' if manifest['includes_keys'] else 'not included'}."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m storage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the database migrations (the backend also does this on start)")
    commands.add_parser("generate-phi-key", help="print a new random key for PHI_ENCRYPTION_KEY")
    rotate = commands.add_parser("rotate-phi-key", help="re-encrypt all patient fields under a new key")
    rotate.add_argument("--new-key", help="development key file only: the new key (default: a random one)")
    backup = commands.add_parser("backup", help="a consistent backup while the backend runs")
    backup.add_argument("--out", type=Path, help="a new folder, or FILE.tar (default: BACKUP_DIR, with BACKUP_KEEP)")
    backup.add_argument("--include-keys", action="store_true", help="put the PHI, audit and token keys in the backup")
    restore = commands.add_parser("restore", help="restore a backup into an empty install")
    restore.add_argument("--from", dest="source", type=Path, required=True, help="the backup folder or .tar")
    restore.add_argument("--var-dir", type=Path, help="the new install's VAR_DIR (default: VAR_DIR of the settings)")
    check = commands.add_parser("verify-backup", help="check a backup's checksums, database and images")
    check.add_argument("source", type=Path, help="the backup folder or .tar")
    return parser


def _run(args: argparse.Namespace, settings: Settings) -> str:
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "generate-phi-key":
        return generate_phi_key()
    if args.command == "rotate-phi-key":
        return _rotate(settings, args.new_key)
    if args.command == "backup":
        return _backup_message(create_backup(settings, args.out, include_keys=args.include_keys))
    if args.command == "restore":
        if args.var_dir is not None:
            settings = settings.model_copy(update={"var_dir": args.var_dir.resolve()})
        return _restore_message(restore_backup(args.source, settings), settings)
    return _verify_message(args.source)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings or get_settings()
    try:
        message = _run(args, settings)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0
