"""Re-encrypt every stored patient field under a new key (and recompute the patient_id index under it).

Works on raw column values (Fernet tokens), so it needs no process-wide cipher and never holds plaintext longer
than one row. All rows change in one transaction: readers see either the old or the new encryption, never a mix,
and a failure (a token no given key opens) changes nothing. Running it again is harmless. The stored images follow,
each file replaced atomically: a file already under the new key is left alone, so an interrupted run just resumes.

Procedure for a deployment: set PHI_ENCRYPTION_KEY to the new key and PHI_ENCRYPTION_OLD_KEYS to the old one,
restart (every replica now reads both), run `python -m storage rotate-phi-key`, then drop the old key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import String, Text, bindparam, column, select, table, update

from storage.crypto import PhiCipher
from storage.database import Database
from storage.images import ImageStore
from storage.models import ENCRYPTED_CASE_COLUMNS

# The cases table seen without the ORM's encrypting column types: values are the stored tokens.
_raw_cases = table(
    "cases",
    column("id", String),
    column("patient_id_hash", String),
    *(column(name, Text) for name in ENCRYPTED_CASE_COLUMNS),
)


def _rotated_values(row: Any, cipher: PhiCipher) -> dict[str, Any]:
    values: dict[str, Any] = {"row_id": row.id}
    for name in ENCRYPTED_CASE_COLUMNS:
        token = getattr(row, name)
        values[f"new_{name}"] = None if token is None else cipher.rotate(token)
    patient_token = values["new_patient_id"]
    values["new_patient_id_hash"] = (
        None if patient_token is None else cipher.patient_id_hash(cipher.decrypt(patient_token))
    )
    return values


def rotate_phi_key(
    database: Database,
    new_key: str,
    old_keys: Sequence[str],
    *,
    images: ImageStore | None = None,
    batch_size: int = 500,
) -> int:
    """Re-encrypt all cases under `new_key` (tokens may be under `new_key` or any of `old_keys`), then every file in
    `images` (plain files from before encryption too); return the number of cases.

    Afterwards the process must use a cipher whose primary key is `new_key`
    (`configure_phi_cipher(PhiCipher([new_key]))`, or restart with PHI_ENCRYPTION_KEY=new_key).
    """
    cipher = PhiCipher([new_key, *old_keys], source="key given for rotation")
    rotated = _rotate_cases(database, cipher, batch_size)
    if images is not None:
        rotate_images(images.root, cipher)
    return rotated


def rotate_images(root: Path, cipher: PhiCipher) -> int:
    """Seal every stored image under the cipher's primary key, one file at a time (each write atomic); the count."""
    store = ImageStore(root, cipher=cipher)
    return sum(store.reseal(sha256) for sha256 in list(store.stored_keys()))


def _rotate_cases(database: Database, cipher: PhiCipher, batch_size: int) -> int:
    # Bound parameter names differ from the column names: SQLAlchemy reserves those in SET clauses.
    statement = (
        update(_raw_cases)
        .where(_raw_cases.c.id == bindparam("row_id"))
        .values(
            patient_id_hash=bindparam("new_patient_id_hash"),
            **{name: bindparam(f"new_{name}") for name in ENCRYPTED_CASE_COLUMNS},
        )
    )
    rotated = 0
    last_id = ""
    with database.write_connection() as connection:
        while True:
            rows = connection.execute(
                select(_raw_cases).where(_raw_cases.c.id > last_id).order_by(_raw_cases.c.id).limit(batch_size)
            ).all()
            if not rows:
                return rotated
            connection.execute(statement, [_rotated_values(row, cipher) for row in rows])
            rotated += len(rows)
            last_id = rows[-1].id
