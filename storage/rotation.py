"""Re-encrypt every stored patient field under a new key, and re-key everything derived from the patient_id index.

What depends on the key is found by column type on storage's `Base`, whichever room's table it sits on
(storage.types): every column of an encrypted type (the cases' patient fields, the learning loop's notes and
comments, ...) is re-encrypted; `cases.patient_id_hash` is recomputed; every `PatientPseudonym` column (the copies of
that index that keep a patient's held-back split) is moved from the old index value to the new one. A table the
database holds but this process has no model of would be missed, so the rotation refuses to start then
(`UnknownTablesError`): the command line first imports the model modules every room names in alembic.ini.
Left as written: plain String copies of the index elsewhere, such as the audit trail's `patient_ref`, which is part
of each audit event's chained hash.

Works on raw column values (Fernet tokens), so it needs no process-wide cipher and never holds plaintext longer
than one row. All rows of all tables change in one transaction: readers see either the old or the new encryption,
never a mix, and a failure (a token no given key opens) changes nothing. Running it again is harmless, and with the
old key still given it also re-keys pseudonyms a previous rotation left behind. The stored images follow, each file
replaced atomically: a file already under the new key is left alone, so an interrupted run just resumes.

Procedure for a deployment: set PHI_ENCRYPTION_KEY to the new key and PHI_ENCRYPTION_OLD_KEYS to the old one,
restart (every replica now reads both), run `python -m storage rotate-phi-key`, then drop the old key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, String, Table, Text, bindparam, column, inspect, select, table, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.expression import TableClause

from storage.crypto import PhiCipher
from storage.database import Database
from storage.errors import UnknownTablesError
from storage.images import ImageStore
from storage.models import Base, Case
from storage.types import ENCRYPTED_TYPES, PatientPseudonym

_NOT_MODELLED = frozenset({"alembic_version"})  # tables of the tools, not of the product


def encrypted_columns(metadata: MetaData = Base.metadata) -> dict[str, tuple[str, ...]]:
    """Table name -> its columns whose values are PHI-key tokens, for every table of `metadata` that has some."""
    found = {
        t.name: tuple(c.name for c in t.columns if isinstance(c.type, ENCRYPTED_TYPES))
        for t in metadata.tables.values()
    }
    return {name: columns for name, columns in sorted(found.items()) if columns}


def pseudonym_columns(metadata: MetaData = Base.metadata) -> dict[str, tuple[str, ...]]:
    """Table name -> its `PatientPseudonym` columns, for every table of `metadata` that has some."""
    found = {
        t.name: tuple(c.name for c in t.columns if isinstance(c.type, PatientPseudonym))
        for t in metadata.tables.values()
    }
    return {name: columns for name, columns in sorted(found.items()) if columns}


def rotate_phi_key(
    database: Database,
    new_key: str,
    old_keys: Sequence[str],
    *,
    images: ImageStore | None = None,
    batch_size: int = 500,
) -> int:
    """Re-encrypt all cases and every other encrypted column under `new_key` (tokens may be under `new_key` or any of
    `old_keys`) and re-key the pseudonym columns, in one transaction; then every file in `images` (plain files from
    before encryption too). Return the number of cases.

    Afterwards the process must use a cipher whose primary key is `new_key`
    (`configure_phi_cipher(PhiCipher([new_key]))`, or restart with PHI_ENCRYPTION_KEY=new_key).
    """
    cipher = PhiCipher([new_key, *old_keys], source="key given for rotation")
    encrypted, pseudonyms = encrypted_columns(), pseudonym_columns()
    with database.write_connection() as connection:
        _refuse_unknown_tables(connection)
        rotated = _rotate_cases(connection, cipher, encrypted[Case.__tablename__], pseudonyms, batch_size)
        for name, columns in encrypted.items():
            if name != Case.__tablename__:
                _rotate_table(connection, Base.metadata.tables[name], columns, cipher, batch_size)
    if images is not None:
        rotate_images(images.root, cipher)
    return rotated


def rotate_images(root: Path, cipher: PhiCipher) -> int:
    """Seal every stored image under the cipher's primary key, one file at a time (each write atomic); the count."""
    store = ImageStore(root, cipher=cipher)
    return sum(store.reseal(sha256) for sha256 in list(store.stored_keys()))


def _refuse_unknown_tables(connection: Connection) -> None:
    unknown = set(inspect(connection).get_table_names()) - set(Base.metadata.tables) - _NOT_MODELLED
    if unknown:
        raise UnknownTablesError(
            f"The database holds tables whose models are not loaded ({', '.join(sorted(unknown))}): their patient "
            "fields would stay under the old key. Nothing was changed; import every room's model modules "
            "(alembic.ini: model_modules) before rotating."
        )


def _raw(name: str, key: str, columns: Sequence[str]) -> TableClause:
    """The table seen without the ORM's column types: values are the stored tokens and index values."""
    return table(name, column(key), *(column(c, Text) for c in columns))


def _batches(connection: Connection, raw: TableClause, key: str, batch_size: int) -> Iterator[Sequence[Row[Any]]]:
    """Every row of `raw` in primary-key order, `batch_size` at a time (keyset paging: rows updated stay behind)."""
    last: Any = None
    while True:
        query = select(raw).order_by(raw.c[key]).limit(batch_size)
        rows = connection.execute(query if last is None else query.where(raw.c[key] > last)).all()
        if not rows:
            return
        yield rows
        last = getattr(rows[-1], key)


def _update(raw: TableClause, key: str, columns: Sequence[str]) -> Any:
    # Bound parameter names differ from the column names: SQLAlchemy reserves those in SET clauses.
    return (
        update(raw)
        .where(raw.c[key] == bindparam("row_key"))
        .values(**{name: bindparam(f"new_{name}") for name in columns})
    )


def _rotated(row: Row[Any], key: str, columns: Sequence[str], cipher: PhiCipher) -> dict[str, Any]:
    values: dict[str, Any] = {"row_key": getattr(row, key)}
    for name in columns:
        token = getattr(row, name)
        values[f"new_{name}"] = None if token is None else cipher.rotate(token)
    return values


def _single_key(table_: Table) -> str:
    keys = [c.name for c in table_.primary_key.columns]
    if len(keys) != 1:
        raise UnknownTablesError(f"Table {table_.name} holds encrypted columns but has no one-column primary key.")
    return keys[0]


def _rotate_table(
    connection: Connection, table_: Table, columns: Sequence[str], cipher: PhiCipher, batch_size: int
) -> None:
    key = _single_key(table_)
    raw = _raw(table_.name, key, columns)
    statement = _update(raw, key, columns)
    for rows in _batches(connection, raw, key, batch_size):
        connection.execute(statement, [_rotated(row, key, columns, cipher) for row in rows])


def _rotate_cases(
    connection: Connection,
    cipher: PhiCipher,
    columns: Sequence[str],
    pseudonyms: Mapping[str, Sequence[str]],
    batch_size: int,
) -> int:
    raw = _raw(Case.__tablename__, "id", (*columns, "patient_id_hash"))
    statement = _update(raw, "id", (*columns, "patient_id_hash"))
    rotated = 0
    for rows in _batches(connection, raw, "id", batch_size):
        values = [_rotated(row, "id", columns, cipher) for row in rows]
        moves: dict[str, str] = {}
        for row, row_values in zip(rows, values, strict=True):
            row_values["new_patient_id_hash"] = _new_index(row, cipher, moves)
        connection.execute(statement, values)
        _rekey_pseudonyms(connection, pseudonyms, moves)
        rotated += len(rows)
    return rotated


def _new_index(row: Row[Any], cipher: PhiCipher, moves: dict[str, str]) -> str | None:
    """The case's patient_id index under the new key; adds to `moves` every older value of it (the stored one, and
    the one under each old key: a pseudonym copied before an earlier rotation) -> the new one."""
    if row.patient_id is None:
        return None
    new, *older = cipher.patient_id_hashes(cipher.decrypt(row.patient_id))
    moves.update((old, new) for old in {row.patient_id_hash, *older} if old is not None and old != new)
    return new


def _rekey_pseudonyms(
    connection: Connection, pseudonyms: Mapping[str, Sequence[str]], moves: Mapping[str, str]
) -> None:
    if not moves:
        return
    pairs = [{"old_pseudonym": old, "new_pseudonym": new} for old, new in moves.items()]
    for name, columns in pseudonyms.items():
        for column_name in columns:
            raw = table(name, column(column_name, String))
            statement = (
                update(raw)
                .where(raw.c[column_name] == bindparam("old_pseudonym"))
                .values({column_name: bindparam("new_pseudonym")})
            )
            connection.execute(statement, pairs)
