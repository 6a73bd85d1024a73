"""Start-up of the storage room: key, schema, repositories, image store, from one `Settings`."""

from __future__ import annotations

from dataclasses import dataclass

from settings import Settings, get_settings
from storage.artifacts import ArtifactStore
from storage.cases import CaseRepository
from storage.crypto import PhiCipher, configure_phi_cipher, load_phi_cipher
from storage.database import Database
from storage.images import ImageStore
from storage.migrate import migrate_database


@dataclass(frozen=True)
class Storage:
    """What the rest of the product holds on to after start-up."""

    database: Database
    cases: CaseRepository
    images: ImageStore
    cipher: PhiCipher
    artifacts: ArtifactStore

    def close(self) -> None:
        self.database.dispose()


def init_storage(settings: Settings | None = None) -> Storage:
    """Load the PHI key (refusing production without one), migrate the database to head, open the image store.

    Idempotent and safe when several processes start at once. Raises `EncryptionKeyError` on a missing or bad key
    and `StorageUnavailableError` when the database cannot be reached.
    """
    settings = settings or get_settings()
    cipher = load_phi_cipher(settings)
    configure_phi_cipher(cipher)
    database = Database(settings.resolved_database_url)
    try:
        database.ping()
        migrate_database(database)
        images = ImageStore(settings.resolved_image_store_dir, cipher=cipher)
    except BaseException:
        database.dispose()
        raise
    artifacts = ArtifactStore(settings.var_dir / "artifacts")
    return Storage(database=database, cases=CaseRepository(database), images=images, cipher=cipher, artifacts=artifacts)
