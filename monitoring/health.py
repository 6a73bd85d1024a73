"""Readiness: one `ComponentCheck` per component, saying whether it works and, when it does not, why.

`/ready` answers 503 while any *required* check fails; optional ones (e.g. similar cases) are reported but do not
take the workstation out of service. The checks of storage-level components live here; the API adds its own
(model, similar-case library) in the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from storage import Database, ImageStore, StorageError, head_revision, schema_revision


@dataclass(frozen=True)
class ComponentCheck:
    name: str
    ok: bool
    detail: str  # what works, or why it does not, written for the admin
    required: bool = True

    def as_dict(self) -> dict[str, str | bool]:
        return {key: value for key, value in asdict(self).items() if key != "name"}


def check_database(database: Database) -> ComponentCheck:
    try:
        database.ping()
    except StorageError as exc:
        return ComponentCheck("database", False, str(exc))
    except Exception as exc:  # a driver can raise anything when the server misbehaves; it means "not ready"
        return ComponentCheck("database", False, f"{type(exc).__name__} while querying the database")
    return ComponentCheck("database", True, database.engine.dialect.name)


def check_schema(database: Database) -> ComponentCheck:
    """The database schema is at the revision this code expects (a half-applied upgrade would fail requests)."""
    try:
        current = schema_revision(database)
    except Exception as exc:  # the driver's errors, as above
        return ComponentCheck("schema", False, f"{type(exc).__name__} while reading the schema revision")
    expected = head_revision()
    if current != expected:
        return ComponentCheck(
            "schema", False, f"at {current}, the code needs {expected} (run `python -m storage migrate`)"
        )
    return ComponentCheck("schema", True, current)


def check_image_store(images: ImageStore) -> ComponentCheck:
    try:
        images.check_writable()
    except StorageError as exc:
        return ComponentCheck("image_store", False, str(exc))
    return ComponentCheck("image_store", True, "writable")


def check_disk(path: Path, min_free_gb: float) -> ComponentCheck:
    """Free space where images and the database are written (`path`), against DISK_MIN_FREE_GB."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = psutil.disk_usage(str(existing))
    free_gb = usage.free / 1024**3
    detail = f"{free_gb:.1f} GB free ({usage.percent:.0f} % used)"
    if free_gb < min_free_gb:
        return ComponentCheck("disk", False, f"{detail}, below DISK_MIN_FREE_GB={min_free_gb:g}")
    return ComponentCheck("disk", True, detail)


def is_ready(checks: Iterable[ComponentCheck]) -> bool:
    return all(check.ok for check in checks if check.required)
