"""How informative the neighbours are: query every image of one split against a library built from another.

Measures, next to what chance would give:
- precision@k: share of the k neighbours whose label equals the query's label;
- k-NN vote accuracy: the majority label of the k neighbours (ties to the larger summed similarity) vs the truth;
- baselines: the majority-class rate of the queries (accuracy of always answering the commonest label) and the
  label agreement expected from k neighbours drawn at random from the library.
The Kermany train and test splits share some patients, so every number is also given with neighbours from the
query's own patient left out (patient ids come from the file names).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from case_retrieval.builder import embed
from case_retrieval.entries import EntrySource, LibraryEntry, Neighbour
from case_retrieval.errors import InvalidInputError
from case_retrieval.library import CaseLibrary
from imaging import ImagingError, decode_image
from inference import Predictor
from labelled_data import Sample, patient_id_from_name


@dataclass(frozen=True)
class RetrievalQuality:
    k: int
    queries: int
    library_entries: int
    precision_at_k: float
    knn_accuracy: float
    precision_at_k_other_patients: float
    knn_accuracy_other_patients: float
    majority_class_rate: float  # accuracy of always answering the commonest query label
    chance_precision: float  # label agreement of k random library entries
    per_class_precision: dict[str, float]
    per_class_knn_recall: dict[str, float]
    unreadable: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        k = self.k
        return [
            f"queries {self.queries} against {self.library_entries} library entries (k={k})",
            f"precision@{k}              {self.precision_at_k:.4f}   (random neighbours: {self.chance_precision:.4f})",
            f"{k}-NN vote accuracy       {self.knn_accuracy:.4f}   (class prior, majority class: "
            f"{self.majority_class_rate:.4f})",
            f"other patients only: precision@{k} {self.precision_at_k_other_patients:.4f}, "
            f"{k}-NN accuracy {self.knn_accuracy_other_patients:.4f}",
            "precision@k per class:   " + ", ".join(f"{c} {v:.4f}" for c, v in self.per_class_precision.items()),
            "k-NN recall per class:   " + ", ".join(f"{c} {v:.4f}" for c, v in self.per_class_knn_recall.items()),
        ]


@dataclass(frozen=True)
class _Query:
    label: str
    patient_id: str
    sha256: str
    pixels: np.ndarray


def knn_vote(neighbours: Sequence[Neighbour]) -> str | None:
    """Majority label of the neighbours; a tie goes to the label with the larger summed similarity."""
    if not neighbours:
        return None
    votes: Counter[str] = Counter(n.entry.label for n in neighbours)
    weight: defaultdict[str, float] = defaultdict(float)
    for neighbour in neighbours:
        weight[neighbour.entry.label] += neighbour.similarity
    return max(votes, key=lambda label: (votes[label], weight[label]))


def evaluate_library(
    library: CaseLibrary,
    predictor: Predictor,
    queries: Sequence[Sample],
    library_dataset: str,
    library_split: str,
    k: int = 5,
    batch_size: int = 32,
    progress: bool = True,
) -> RetrievalQuality:
    """Query every sample against the reference entries of `library_dataset`/`library_split` in the library."""
    reference, foreign = _partition(library, library_dataset, library_split)
    if not reference:
        raise InvalidInputError(
            f"The library holds no reference images of {library_dataset}/{library_split}; build it first with "
            f"`python -m case_retrieval build --split {library_split}`."
        )
    by_patient = _entries_by_patient(reference)
    by_image = {e.image_sha256: e.entry_id for e in reference if e.image_sha256}
    scores = _Scores()
    unreadable = 0
    with tqdm(total=len(queries), unit="img", desc="querying", disable=not progress) as bar:
        for start in range(0, len(queries), batch_size):
            batch, failed = _decode_queries(queries[start : start + batch_size])
            unreadable += failed
            if batch:
                embeddings = embed(predictor, [q.pixels for q in batch])
                for query, embedding in zip(batch, embeddings, strict=True):
                    # Never let the query find itself, nor entries outside the reference set being measured.
                    always_skip = foreign | ({by_image[query.sha256]} if query.sha256 in by_image else set())
                    scores.add(
                        query.label,
                        _neighbours(library, embedding, k, predictor.version, always_skip),
                        _neighbours(
                            library, embedding, k, predictor.version, always_skip | by_patient[query.patient_id]
                        ),
                    )
            bar.update(len(queries[start : start + batch_size]))
    return scores.summary(k, len(reference), _chance_precision(scores.labels, reference), unreadable)


class _Scores:
    def __init__(self) -> None:
        self.labels: list[str] = []
        self.precision: list[float] = []
        self.correct: list[bool] = []
        self.precision_other: list[float] = []
        self.correct_other: list[bool] = []

    def add(self, label: str, neighbours: list[Neighbour], other_patients: list[Neighbour]) -> None:
        self.labels.append(label)
        self.precision.append(_agreement(label, neighbours))
        self.correct.append(knn_vote(neighbours) == label)
        self.precision_other.append(_agreement(label, other_patients))
        self.correct_other.append(knn_vote(other_patients) == label)

    def summary(self, k: int, library_entries: int, chance: float, unreadable: int) -> RetrievalQuality:
        if not self.labels:
            raise InvalidInputError("None of the query images could be read.")
        labels = np.array(self.labels)
        classes = sorted(set(self.labels))
        return RetrievalQuality(
            k=k,
            queries=len(self.labels),
            library_entries=library_entries,
            precision_at_k=float(np.mean(self.precision)),
            knn_accuracy=float(np.mean(self.correct)),
            precision_at_k_other_patients=float(np.mean(self.precision_other)),
            knn_accuracy_other_patients=float(np.mean(self.correct_other)),
            majority_class_rate=max(Counter(self.labels).values()) / len(self.labels),
            chance_precision=chance,
            per_class_precision={c: float(np.mean(np.array(self.precision)[labels == c])) for c in classes},
            per_class_knn_recall={c: float(np.mean(np.array(self.correct)[labels == c])) for c in classes},
            unreadable=unreadable,
        )


def _neighbours(
    library: CaseLibrary, embedding: np.ndarray, k: int, model_version: str, skip: set[str]
) -> list[Neighbour]:
    return library.search(embedding, k, model_version=model_version, exclude_entry_ids=skip)


def _partition(library: CaseLibrary, dataset: str, split: str) -> tuple[list[LibraryEntry], set[str]]:
    reference, foreign = [], set()
    for entry in library.entries():
        is_reference = entry.source is EntrySource.REFERENCE and entry.dataset == dataset and entry.split == split
        if is_reference:
            reference.append(entry)
        else:
            foreign.add(entry.entry_id)
    return reference, foreign


def _entries_by_patient(entries: Sequence[LibraryEntry]) -> defaultdict[str, set[str]]:
    by_patient: defaultdict[str, set[str]] = defaultdict(set)
    for entry in entries:
        by_patient[patient_id_from_name(Path(entry.reference_file or entry.entry_id))].add(entry.entry_id)
    return by_patient


def _decode_queries(samples: Sequence[Sample]) -> tuple[list[_Query], int]:
    queries, failed = [], 0
    for sample in samples:
        try:
            data = sample.path.read_bytes()
            pixels = decode_image(data).pixels
        except (OSError, ImagingError):
            failed += 1
            continue
        queries.append(_Query(sample.label, sample.patient_id, hashlib.sha256(data).hexdigest(), pixels))
    return queries, failed


def _agreement(label: str, neighbours: Sequence[Neighbour]) -> float:
    return sum(n.entry.label == label for n in neighbours) / len(neighbours) if neighbours else 0.0


def _chance_precision(query_labels: Sequence[str], reference: Sequence[LibraryEntry]) -> float:
    """Expected label agreement of a random library entry with a random query: sum over classes of p_q * p_lib."""
    query_share = Counter(query_labels)
    library_share = Counter(e.label for e in reference)
    return sum((query_share[c] / len(query_labels)) * (library_share[c] / len(reference)) for c in query_share)
