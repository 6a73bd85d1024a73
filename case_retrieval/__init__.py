"""case_retrieval: similar-case retrieval over a FAISS index of model embeddings, tied to one model version.

Public surface:
- `CaseLibrary`: `create`, `load`, `ensure_compatible`, `carried_over` (same vectors, new model version),
  `is_stale`, `add`, `add_many`, `add_case`, `confirm_case`, `confirm`, `remove`, `search`, `get`, `entries`,
  `thumbnail_path`, `summary`, `save`
- `LibraryEntry`, `EntrySource`, `Neighbour`, `new_entry`, `case_entry_id`, `reference_entry_id`
- `IndexPolicy`, `IndexKind`: index type by library size (Flat up to a threshold, HNSW beyond)
- `build_reference_library`, `rebuild_library` (+ `pixel_reader` for it), `embedding_size`, `make_thumbnail`
- `evaluate_library`, `RetrievalQuality`
- errors: `RetrievalError` and its subclasses (`LibraryNotFoundError`, `LibraryCorruptError`,
  `LibraryConflictError`, `ModelMismatchError`, `EntryNotFoundError`, `DuplicateEntryError`, `InvalidInputError`)
CLI: `python -m case_retrieval build|evaluate|info` (see `case_retrieval.cli`).
"""

from case_retrieval.builder import BuildReport, build_reference_library, embedding_size, pixel_reader, rebuild_library
from case_retrieval.entries import (
    EntrySource,
    LibraryEntry,
    Neighbour,
    case_entry_id,
    new_entry,
    reference_entry_id,
)
from case_retrieval.errors import (
    DuplicateEntryError,
    EntryNotFoundError,
    InvalidInputError,
    LibraryConflictError,
    LibraryCorruptError,
    LibraryNotFoundError,
    ModelMismatchError,
    RetrievalError,
)
from case_retrieval.evaluate import RetrievalQuality, evaluate_library
from case_retrieval.index import IndexKind, IndexPolicy
from case_retrieval.library import MAX_K, CaseLibrary
from case_retrieval.thumbnails import make_thumbnail

__all__ = [
    "MAX_K",
    "BuildReport",
    "CaseLibrary",
    "DuplicateEntryError",
    "EntryNotFoundError",
    "EntrySource",
    "IndexKind",
    "IndexPolicy",
    "InvalidInputError",
    "LibraryConflictError",
    "LibraryCorruptError",
    "LibraryEntry",
    "LibraryNotFoundError",
    "ModelMismatchError",
    "Neighbour",
    "RetrievalError",
    "RetrievalQuality",
    "build_reference_library",
    "case_entry_id",
    "embedding_size",
    "evaluate_library",
    "make_thumbnail",
    "new_entry",
    "pixel_reader",
    "rebuild_library",
    "reference_entry_id",
]
