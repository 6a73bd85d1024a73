"""The plain records the learning loop hands out (frozen, detached from any session) and its policy.

Annotator ids are whatever the caller identifies people by (the API uses usernames); the loop only compares them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from active_learning.strategies import STRATEGIES
from settings import Settings

OTHER, UNGRADABLE = "OTHER", "UNGRADABLE"  # labels a read may give besides the model's classes
NOT_COMPARABLE = frozenset({OTHER, UNGRADABLE})  # final labels the model's answer cannot be judged against
TRAIN, VAL = "train", "val"  # VAL: the held-back share of final labels that judges retrained models
AGREEMENT, ADJUDICATION_SOURCE = "agreement", "adjudication"  # where a final label came from


class ReviewReason(StrEnum):
    """Why a case went to the experts."""

    UNCERTAIN = "uncertain"  # the model was not sure (or the film is outside its validated scope)
    OOD = "ood"  # the input gate refused the film
    DISAGREEMENT = "disagreement"  # the signing radiologist's finding differs from the model's
    MANUAL = "manual"  # a radiologist sent it by hand, with a reason
    NODULE_DISAGREEMENT = "nodule_disagreement"  # a reviewer rejected a nodule mark, added one, or found otherwise


@dataclass(frozen=True)
class QueuePolicy:
    """How the queue orders, locks and settles cases (settings ACTIVE_LEARNING_*, CLAIM_TTL_S, READS_PER_CASE,
    SHOW_AI_TO_ANNOTATORS, EXPERT_HOLDOUT_FRACTION)."""

    strategy: str = "uncertainty"
    min_distance: float = 0.1
    batch_size: int = 20
    seed: int = 0
    claim_ttl_s: float = 900.0
    reads_per_case: int = 2
    show_ai_to_annotators: bool = False
    expert_holdout_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown selection strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        if not (math.isfinite(self.claim_ttl_s) and self.claim_ttl_s > 0):
            raise ValueError("claim_ttl_s must be a positive number of seconds.")
        if self.reads_per_case < 1 or self.batch_size < 1:
            raise ValueError("reads_per_case and batch_size must be at least 1.")
        if not 0 < self.expert_holdout_fraction < 1:
            raise ValueError("expert_holdout_fraction must lie strictly between 0 and 1.")

    @classmethod
    def from_settings(cls, settings: Settings) -> QueuePolicy:
        return cls(
            strategy=settings.active_learning_strategy,
            min_distance=settings.active_learning_min_distance,
            batch_size=settings.active_learning_batch_size,
            seed=settings.active_learning_seed,
            claim_ttl_s=settings.claim_ttl_s,
            reads_per_case=settings.reads_per_case,
            show_ai_to_annotators=settings.show_ai_to_annotators,
            expert_holdout_fraction=settings.expert_holdout_fraction,
        )


@dataclass(frozen=True)
class QueueReason:
    code: ReviewReason
    requested_by: str | None
    at: datetime


@dataclass(frozen=True)
class QueueItem:
    """A case in the queue. `note` (the sender's free text) may name the patient: show it only to roles that see
    patient identity; `to_dict` leaves it out."""

    id: str
    case_id: str
    state: str  # open | adjudication | final
    reasons: tuple[QueueReason, ...]
    reads: int  # current expert reads of the case
    reads_needed: int
    waiting_since: datetime
    claimed_by: str | None  # who holds an unexpired claim on the case now
    final_label: str | None
    note: str | None = field(default=None, repr=False)

    def waiting_s(self, now: datetime) -> float:
        return max(0.0, (now - self.waiting_since).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("note")
        return values


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueItem]
    total: int


@dataclass(frozen=True)
class Claim:
    """A lock on one case for one annotator until `expires_at` (renew it while reading)."""

    id: str
    case_id: str
    item_id: str
    annotator_id: str
    claimed_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Annotation:
    """One expert read (kind "read") or the adjudicator's decision (kind "adjudication", no confidence).
    `comment` is free text and may name the patient (stored encrypted)."""

    id: str
    case_id: str
    annotator: str
    kind: str
    label: str
    confidence: int | None
    comment: str | None = field(repr=False)
    boxes: tuple[dict[str, float], ...]
    created_at: datetime
    seconds: float | None  # claim to submission (first reads only; a correction has none)
    supersedes: str | None = None  # the read this one corrects
    superseded: bool = False  # a later correction replaces this read (it stays, as history)


@dataclass(frozen=True)
class FinalLabel:
    case_id: str
    label: str
    split: str  # train | val (held back): assigned once, by patient, never changed
    patient_key: str  # the case's pseudonym (keyed hash of the patient id, or the case id): never identity
    source: str  # agreement | adjudication
    annotators: tuple[str, ...]  # the readers, then the adjudicator
    finalized_at: datetime
    model_version: str
    prediction: str  # the model's answer on the case, to compare with `label`
    adjudicator: str | None = None


@dataclass(frozen=True)
class NoduleMark:
    """One box of a nodule review, in the stored image's pixels. `score`: the model's, for a mark the model made
    (confirmed or rejected); None for a box the reviewer added."""

    x: float
    y: float
    w: float
    h: float
    verdict: str  # confirmed | rejected | added
    score: float | None


@dataclass(frozen=True)
class NoduleReview:
    """A clinician's read of a case's nodule finding: a verdict on each of the model's marks, the boxes they added,
    their finding, and what the model had said. Never changed; a second review of the case is another record."""

    id: str
    case_id: str
    finding: str  # NODULE | NO_NODULE
    marks: tuple[NoduleMark, ...]
    image_size: tuple[float, float]  # width, height of the stored image: the frame of the marks
    comment: str | None = field(repr=False)
    reviewer: str
    reviewer_role: str
    created_at: datetime
    model_label: str
    model_probability: float
    model_version: str
    disagreement: tuple[str, ...]  # finding | rejected_mark | added_box, in that order; empty: agrees with the model
    queued: bool  # this review sent the case to the experts' queue
    split: str  # train | val, the patient's held-back split
    patient_key: str = field(repr=False)

    @property
    def boxes(self) -> tuple[NoduleMark, ...]:
        """The nodules the reviewer says are on the film: confirmed marks and added boxes."""
        return tuple(mark for mark in self.marks if mark.verdict != REJECTED)


CONFIRMED, REJECTED, ADDED = "confirmed", "rejected", "added"  # verdicts on a nodule mark
NODULE, NO_NODULE = "NODULE", "NO_NODULE"  # a nodule review's finding (the nodule model's classes)
