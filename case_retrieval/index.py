"""FAISS index choice and the vector operations around it.

Vectors are L2-normalised, so the inner product is the cosine similarity. The index type follows the library size
(`IndexPolicy`, defaults from settings; numbers from `bench/retrieval.py` on the 2-core machine, 512-d):
- up to `flat_max_entries` (20,000): `IndexFlatIP`, exact. One query costs p50 ~1.1 ms at 10k and ~2.3 ms at 20k,
  but ~8 ms at 50k and ~19 ms at 100k once the vectors no longer fit in cache, hence the threshold.
- beyond: `IndexHNSWFlat` (M 32, efConstruction 80, efSearch 128): at 1M vectors shaped like real library
  embeddings, recall@10 0.998 against exact search at p50 1.2 ms / p99 2.2 ms; build ~5 min, 2.2 GB.
FAISS ids are the library's row numbers, so every index type keeps the same id scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import faiss
import numpy as np

from case_retrieval.errors import InvalidInputError, LibraryCorruptError
from settings import Settings


class IndexKind(StrEnum):
    FLAT = "flat"
    HNSW = "hnsw"


@dataclass(frozen=True)
class IndexPolicy:
    """When to switch from exact to graph search and how to tune the graph."""

    flat_max_entries: int = 20_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128

    def __post_init__(self) -> None:
        if self.flat_max_entries < 0 or self.hnsw_m < 2 or self.hnsw_ef_construction < 1 or self.hnsw_ef_search < 1:
            raise ValueError(f"Invalid retrieval index policy: {self}")

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexPolicy:
        return cls(
            flat_max_entries=settings.retrieval_flat_max_entries,
            hnsw_m=settings.retrieval_hnsw_m,
            hnsw_ef_construction=settings.retrieval_hnsw_ef_construction,
            hnsw_ef_search=settings.retrieval_hnsw_ef_search,
        )

    def kind_for(self, n_vectors: int) -> IndexKind:
        return IndexKind.FLAT if n_vectors <= self.flat_max_entries else IndexKind.HNSW


def new_index(kind: IndexKind, dim: int, policy: IndexPolicy) -> faiss.Index:
    """An empty inner-product index of the given kind."""
    if kind is IndexKind.FLAT:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = policy.hnsw_ef_construction
    index.hnsw.efSearch = policy.hnsw_ef_search
    return index


def build_index(vectors: np.ndarray, policy: IndexPolicy) -> tuple[faiss.Index, IndexKind]:
    """An index of the kind the policy picks for this many (already normalised) vectors, holding them in order."""
    kind = policy.kind_for(len(vectors))
    index = new_index(kind, vectors.shape[1], policy)
    if len(vectors):
        index.add(vectors)
    return index, kind


def kind_of(index: faiss.Index) -> IndexKind:
    """Recognise the kind of a loaded index; anything else is not an index this code wrote."""
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise LibraryCorruptError("The saved index does not use inner-product similarity.")
    if isinstance(index, faiss.IndexFlatIP):
        return IndexKind.FLAT
    if isinstance(index, faiss.IndexHNSWFlat):
        return IndexKind.HNSW
    raise LibraryCorruptError(f"The saved index has an unexpected type ({type(index).__name__}).")


def search_parameters(
    kind: IndexKind, policy: IndexPolicy, selector: faiss.IDSelector | None
) -> faiss.SearchParameters:
    if kind is IndexKind.HNSW:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=policy.hnsw_ef_search)
    return faiss.SearchParameters(sel=selector)


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """All vectors of a Flat or HNSW-Flat index, in id order (both keep the exact vectors)."""
    if index.ntotal == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    return index.reconstruct_n(0, index.ntotal)


def normalise_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Validate a (n, dim) or (dim,) array and return float32 unit rows; bad vectors are refused, not fixed."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidInputError(f"Expected embeddings of size {dim}, got an array of shape {np.shape(vectors)}.")
    if not np.isfinite(array).all():
        raise InvalidInputError("The embedding contains NaN or infinite values.")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise InvalidInputError("An all-zero embedding has no direction and cannot be compared.")
    return np.ascontiguousarray(array / norms, dtype=np.float32)
