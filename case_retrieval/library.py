"""The similar-case library: a FAISS index of one model's embeddings plus what each vector stands for.

A library is tied to the model version and embedding size that produced its vectors. Every call that brings an
embedding (add, search) names the model version it came from, and a mismatch is refused with a clear message:
embeddings of two different models are not comparable, so mixing them would return wrong neighbours.

Rows are append-only and a row's number is its FAISS id. Removed entries leave a hole (None) until the index is
compacted; removed and unconfirmed rows are hidden from every search by an id selector, so only expert-confirmed
cases and labelled reference images are ever returned as precedent.

Thread-safe: one lock guards the index and the rows. Changes live in memory until `save()`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from case_retrieval.entries import EntrySource, LibraryEntry, Neighbour, case_entry_id, new_entry, validate_entry_id
from case_retrieval.errors import (
    DuplicateEntryError,
    EntryNotFoundError,
    InvalidInputError,
    LibraryConflictError,
    LibraryCorruptError,
    ModelMismatchError,
)
from case_retrieval.index import (
    IndexKind,
    IndexPolicy,
    build_index,
    kind_of,
    normalise_rows,
    search_parameters,
    stored_vectors,
)
from case_retrieval.store import (
    THUMBNAIL_DIR,
    current_generation,
    read_snapshot,
    write_snapshot,
)
from case_retrieval.thumbnails import check_png
from storage import fsync_path, write_durably

MAX_K = 100
COMPACT_HOLE_FRACTION = 0.2  # rebuild the index once this share of rows are removed entries
REBUILD_HINT = "Rebuild it: `python -m case_retrieval build --data <reference dataset> --checkpoint <model>`."


class CaseLibrary:
    """Create with `CaseLibrary.create(...)` or `CaseLibrary.load(...)`, not with the constructor."""

    def __init__(
        self,
        directory: Path,
        model_version: str,
        embedding_dim: int,
        policy: IndexPolicy,
        index: faiss.Index,
        rows: list[LibraryEntry | None],
        generation: int,
        created_at: str,
    ) -> None:
        self._directory = Path(directory)
        self._model_version = model_version
        self._embedding_dim = embedding_dim
        self._policy = policy
        self._index = index
        self._kind = kind_of(index)
        self._rows = rows
        self._row_of = {entry.entry_id: row for row, entry in enumerate(rows) if entry is not None}
        self._hidden_rows = _hidden_rows(rows)
        self._generation = generation
        self._created_at = created_at
        self._hidden_selector: faiss.IDSelector | None = None
        self._unsynced_thumbnails: set[Path] = set()
        self._thumbnails_to_delete: set[Path] = set()
        self._lock = threading.RLock()

    # --- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: Path,
        model_version: str,
        embedding_dim: int,
        policy: IndexPolicy | None = None,
        replace: bool = False,
    ) -> CaseLibrary:
        """An empty library; `replace=True` lets its first save supersede a library already in `directory`."""
        if not model_version or embedding_dim < 1:
            raise InvalidInputError("A library needs a model version and a positive embedding size.")
        published = current_generation(directory)
        if published and not replace:
            raise LibraryConflictError(f"A similar-case library already exists in {directory}; load it instead.")
        policy = policy or IndexPolicy()
        index, _ = build_index(np.zeros((0, embedding_dim), dtype=np.float32), policy)
        return cls(directory, model_version, embedding_dim, policy, index, [], published, _now())

    @classmethod
    def load(
        cls,
        directory: Path,
        model_version: str | None = None,
        embedding_dim: int | None = None,
        policy: IndexPolicy | None = None,
    ) -> CaseLibrary:
        """Load the published library; with `model_version`/`embedding_dim`, refuse one built by another model."""
        index, meta, generation = read_snapshot(directory)
        try:
            rows = [None if raw is None else LibraryEntry.from_dict(raw) for raw in meta["rows"]]
            library_version, library_dim = str(meta["model_version"]), int(meta["embedding_dim"])
        except (KeyError, TypeError, ValueError):
            raise LibraryCorruptError(f"The library metadata in {directory} is incomplete; rebuild it.") from None
        if index.d != library_dim or index.ntotal != len(rows):
            raise LibraryCorruptError(f"The index and the metadata in {directory} disagree; rebuild the library.")
        library = cls(
            directory,
            library_version,
            library_dim,
            policy or IndexPolicy(),
            index,
            rows,
            generation,
            str(meta.get("created_at", "")),
        )
        library.ensure_compatible(model_version, embedding_dim)
        return library

    def ensure_compatible(self, model_version: str | None, embedding_dim: int | None = None) -> None:
        """Raise `ModelMismatchError` unless the library was built by this model (None: not checked)."""
        same_version = model_version is None or model_version == self._model_version
        same_dim = embedding_dim is None or embedding_dim == self._embedding_dim
        if same_version and same_dim:
            return
        serving = f"model {model_version or self._model_version}"
        if embedding_dim is not None:
            serving += f" ({embedding_dim}-d)"
        raise ModelMismatchError(
            f"The similar-case library in {self._directory} was built with model {self._model_version} "
            f"({self._embedding_dim}-d embeddings), but the embeddings come from {serving}. Its neighbours would be "
            f"wrong, so it is not used. {REBUILD_HINT}",
            library_version=self._model_version,
            requested_version=model_version or self._model_version,
        )

    def carried_over(self, model_version: str) -> CaseLibrary:
        """This library for `model_version`, a model whose embeddings are identical to the library's model (a
        head-only retrain keeps the backbone): the same vectors and entries, no re-embedding. The caller vouches for
        the identity; call `save()` on the result to publish it."""
        if not model_version:
            raise InvalidInputError("A library needs a model version.")
        with self._lock:
            return CaseLibrary(
                self._directory,
                model_version,
                self._embedding_dim,
                self._policy,
                faiss.clone_index(self._index),
                list(self._rows),
                self._generation,
                self._created_at,
            )

    def is_stale(self) -> bool:
        """True when another writer has published a newer snapshot than the one this copy is based on."""
        return current_generation(self._directory) != self._generation

    # --- reading -------------------------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def model_version(self) -> str:
        return self._model_version

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    @property
    def policy(self) -> IndexPolicy:
        return self._policy

    @property
    def index_kind(self) -> IndexKind:
        return self._kind

    @property
    def generation(self) -> int:
        return self._generation

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._row_of

    @property
    def searchable_count(self) -> int:
        """Entries a search can return: confirmed and not removed."""
        with self._lock:
            return len(self._rows) - len(self._hidden_rows)

    def entries(self) -> list[LibraryEntry]:
        with self._lock:
            return [entry for entry in self._rows if entry is not None]

    def get(self, entry_id: str) -> LibraryEntry:
        with self._lock:
            row = self._row_of.get(entry_id)
            if row is None:
                raise EntryNotFoundError(f"No similar-case library entry {entry_id!r}.")
            return self._rows[row]

    def thumbnail_path(self, entry_id: str) -> Path:
        """The PNG file of an entry's thumbnail (`EntryNotFoundError` when the entry or its thumbnail is absent)."""
        entry = self.get(validate_entry_id(entry_id))
        path = self._thumbnail_file(entry.entry_id)
        if not path.is_file():
            raise EntryNotFoundError(f"Library entry {entry_id!r} has no thumbnail.")
        return path

    def summary(self) -> dict[str, Any]:
        """Counts for health pages and the CLI."""
        with self._lock:
            live = self.entries()
            confirmed = [e for e in live if e.confirmed]
            return {
                "directory": str(self._directory),
                "model_version": self._model_version,
                "embedding_dim": self._embedding_dim,
                "index_kind": self._kind.value,
                "generation": self._generation,
                "entries": len(live),
                "searchable": len(confirmed),
                "unconfirmed": len(live) - len(confirmed),
                "labels": dict(sorted(Counter(e.label for e in confirmed).items())),
                "sources": dict(sorted(Counter(e.source.value for e in live).items())),
            }

    # --- searching -----------------------------------------------------------------------------------------------

    def search(
        self,
        embedding: np.ndarray,
        k: int = 5,
        *,
        model_version: str,
        exclude_case_id: str | None = None,
        exclude_entry_ids: Collection[str] = (),
    ) -> list[Neighbour]:
        """The k most similar confirmed entries, most similar first (fewer when the library is smaller).

        `exclude_case_id` leaves out the case being looked at; `exclude_entry_ids` any other entries.
        """
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}.")
        self.ensure_compatible(model_version)
        query = normalise_rows(embedding, self._embedding_dim)
        with self._lock:
            skipped = self._rows_to_skip(exclude_case_id, exclude_entry_ids)
            available = self.searchable_count
            if available == 0:
                return []
            fetch = min(k + len(skipped), available)  # over-fetch so that k remain after the per-query exclusions
            selector = self._selector()
            params = search_parameters(self._kind, self._policy, selector)
            similarities, rows = self._index.search(query, fetch, params=params)
            hits = [
                (int(row), float(similarity))
                for row, similarity in zip(rows[0], similarities[0], strict=True)
                if row >= 0 and int(row) not in skipped
            ]
            return [
                Neighbour(entry=self._rows[row], similarity=similarity, rank=rank)
                for rank, (row, similarity) in enumerate(hits[:k], start=1)
            ]

    def _rows_to_skip(self, exclude_case_id: str | None, exclude_entry_ids: Collection[str]) -> set[int]:
        excluded = [*exclude_entry_ids, *([] if exclude_case_id is None else [case_entry_id(exclude_case_id)])]
        return {self._row_of[e] for e in excluded if e in self._row_of}

    def _selector(self) -> faiss.IDSelector | None:
        """Hides removed and unconfirmed rows; cached until the rows change."""
        if self._hidden_selector is None:
            if not self._hidden_rows:
                return None
            batch = faiss.IDSelectorBatch(np.asarray(sorted(self._hidden_rows), dtype=np.int64))
            selector = faiss.IDSelectorNot(batch)
            selector.referenced_batch = batch  # keep the wrapped selector alive as long as the outer one
            self._hidden_selector = selector
        return self._hidden_selector

    # --- changing ------------------------------------------------------------------------------------------------

    def add(
        self, entry: LibraryEntry, embedding: np.ndarray, *, model_version: str, thumbnail_png: bytes | None = None
    ) -> LibraryEntry:
        """Add one entry (see `new_entry`); its embedding must come from the library's model."""
        self.add_many([entry], np.asarray(embedding)[None, :], model_version=model_version, thumbnails=[thumbnail_png])
        return entry

    def add_many(
        self,
        entries: Sequence[LibraryEntry],
        embeddings: np.ndarray,
        *,
        model_version: str,
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> None:
        """Add several entries at once (one index insertion; what the reference build uses)."""
        self.ensure_compatible(model_version)
        vectors = normalise_rows(embeddings, self._embedding_dim)
        thumbnails = list(thumbnails) if thumbnails is not None else [None] * len(entries)
        if len(vectors) != len(entries) or len(thumbnails) != len(entries):
            raise InvalidInputError(
                f"Got {len(entries)} entries, {len(vectors)} embeddings, {len(thumbnails)} thumbnails."
            )
        pngs = [None if png is None else check_png(png) for png in thumbnails]
        with self._lock:
            self._check_new_ids([entry.entry_id for entry in entries])
            for entry, png in zip(entries, pngs, strict=True):
                if png is not None:
                    self._write_thumbnail(entry.entry_id, png)
            first_row = len(self._rows)
            self._index.add(vectors)
            self._rows.extend(entries)
            self._row_of.update({entry.entry_id: first_row + i for i, entry in enumerate(entries)})
            self._hidden_rows |= {first_row + i for i, entry in enumerate(entries) if not entry.confirmed}
            self._hidden_selector = None
            # Grow into the graph index at the threshold; shrinking back to Flat waits for a compaction.
            if self._kind is IndexKind.FLAT and self._policy.kind_for(len(self._row_of)) is IndexKind.HNSW:
                self._rebuild_index()

    def add_case(
        self,
        case_id: str,
        label: str,
        embedding: np.ndarray,
        *,
        model_version: str,
        confirmed: bool = True,
        thumbnail_png: bytes | None = None,
        image_sha256: str | None = None,
    ) -> LibraryEntry:
        """Add a workstation case (entry id `case-<case_id>`); unconfirmed cases are stored but never returned."""
        entry = new_entry(
            case_entry_id(case_id),
            label,
            EntrySource.CONFIRMED_CASE,
            confirmed=confirmed,
            case_id=case_id,
            image_sha256=image_sha256,
        )
        return self.add(entry, embedding, model_version=model_version, thumbnail_png=thumbnail_png)

    def confirm_case(
        self,
        case_id: str,
        label: str,
        embedding: np.ndarray | None = None,
        *,
        model_version: str,
        thumbnail_png: bytes | None = None,
        image_sha256: str | None = None,
    ) -> LibraryEntry:
        """What the annotation workflow calls when an expert confirms (or corrects) a case's diagnosis.

        Confirms the case's entry with this label if it is already stored, otherwise adds it (then `embedding`,
        from `model_version`, is required). Call `save()` afterwards to make it permanent.
        """
        self.ensure_compatible(model_version)
        with self._lock:
            entry_id = case_entry_id(case_id)
            if entry_id in self._row_of:
                return self.confirm(entry_id, label)
            if embedding is None:
                raise InvalidInputError(f"Case {case_id} is not in the similar-case library yet: pass its embedding.")
            return self.add_case(
                case_id,
                label,
                embedding,
                model_version=model_version,
                thumbnail_png=thumbnail_png,
                image_sha256=image_sha256,
            )

    def confirm(self, entry_id: str, label: str) -> LibraryEntry:
        """Mark an entry as expert-confirmed with this (possibly corrected) label; from now on it can be returned."""
        with self._lock:
            row = self._row_of.get(entry_id)
            if row is None:
                raise EntryNotFoundError(f"No similar-case library entry {entry_id!r}.")
            entry = self._rows[row].confirmed_as(label)
            self._rows[row] = entry
            self._hidden_rows.discard(row)
            self._hidden_selector = None
            return entry

    def remove(self, entry_id: str) -> LibraryEntry:
        """Take an entry out of every future search (e.g. a withdrawn diagnosis)."""
        with self._lock:
            row = self._row_of.pop(entry_id, None)
            if row is None:
                raise EntryNotFoundError(f"No similar-case library entry {entry_id!r}.")
            entry = self._rows[row]
            self._rows[row] = None
            self._hidden_rows.add(row)
            self._hidden_selector = None
            self._thumbnails_to_delete.add(self._thumbnail_file(entry_id))
            holes = len(self._rows) - len(self._row_of)
            if holes > COMPACT_HOLE_FRACTION * len(self._rows):
                self._rebuild_index()
            return entry

    def save(self) -> int:
        """Persist atomically (see `store`); returns the new generation. Refused if another writer saved meanwhile."""
        with self._lock:
            self._sync_thumbnails()
            meta = {
                "model_version": self._model_version,
                "embedding_dim": self._embedding_dim,
                "metric": "cosine",
                "created_at": self._created_at,
                "saved_at": _now(),
                "index": {"kind": self._kind.value, "ntotal": int(self._index.ntotal)},
                "rows": [None if entry is None else entry.to_dict() for entry in self._rows],
            }
            self._generation = write_snapshot(self._directory, self._index, meta, expected_generation=self._generation)
            self._delete_removed_thumbnails()
            return self._generation

    # --- internals -----------------------------------------------------------------------------------------------

    def _check_new_ids(self, entry_ids: list[str]) -> None:
        for entry_id in entry_ids:
            validate_entry_id(entry_id)
        taken = [e for e in entry_ids if e in self._row_of]
        if taken:
            raise DuplicateEntryError(f"Already in the similar-case library: {', '.join(taken[:5])}.")
        if len(set(entry_ids)) != len(entry_ids):
            raise DuplicateEntryError("The same entry id appears twice in one addition.")

    def _rebuild_index(self) -> None:
        """Drop removed rows and rebuild the index with the kind the policy picks for the current size."""
        vectors = stored_vectors(self._index)
        live_rows = [row for row, entry in enumerate(self._rows) if entry is not None]
        self._index, self._kind = build_index(np.ascontiguousarray(vectors[live_rows]), self._policy)
        self._rows = [self._rows[row] for row in live_rows]
        self._row_of = {entry.entry_id: row for row, entry in enumerate(self._rows) if entry is not None}
        self._hidden_rows = _hidden_rows(self._rows)
        self._hidden_selector = None

    def _thumbnail_file(self, entry_id: str) -> Path:
        return self._directory / THUMBNAIL_DIR / f"{entry_id}.png"

    def _write_thumbnail(self, entry_id: str, png: bytes) -> None:
        path = self._thumbnail_file(entry_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, png, sync=False)  # made durable in one pass by save()
        self._unsynced_thumbnails.add(path)
        self._thumbnails_to_delete.discard(path)

    def _sync_thumbnails(self) -> None:
        for path in self._unsynced_thumbnails:
            if path.is_file():
                fsync_path(path)
        if self._unsynced_thumbnails:
            fsync_path(self._directory / THUMBNAIL_DIR)
        self._unsynced_thumbnails.clear()

    def _delete_removed_thumbnails(self) -> None:
        """Only after the save is published: until then the previous snapshot may still show these entries."""
        for path in self._thumbnails_to_delete:
            path.unlink(missing_ok=True)
        self._thumbnails_to_delete.clear()


def _hidden_rows(rows: list[LibraryEntry | None]) -> set[int]:
    """Rows no search may return: removed entries and entries no expert has confirmed."""
    return {row for row, entry in enumerate(rows) if entry is None or not entry.confirmed}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
