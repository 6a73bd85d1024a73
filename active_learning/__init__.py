"""active_learning: the learning loop (which cases experts read, and in what order; their reads; the final labels).

Public surface:
- selection strategies (active_learning.strategies): `Strategy` (name, `info()`, `rank(candidates, k)`),
  `Candidate`, `STRATEGIES` ("uncertainty", "margin", "random", "diversity"), `make_strategy(name, *,
  min_distance, seed)`
- tables (active_learning.models, revision 0007_learning_loop): `QueueItemRow`, `ClaimRow`, `AnnotationRow`,
  `FinalLabelRow` on storage's `Base`
- errors (active_learning.errors): `ActiveLearningError` and its subclasses `QueueItemNotFoundError`,
  `ClaimNotFoundError`, `AnnotationNotFoundError` (404); `ClaimExpiredError`, `ClaimConflictError`,
  `AlreadyReadError`, `NotReadyForAdjudicationError`, `CaseAlreadyFinalError`, `AnnotationSupersededError` (409);
  `NotYourClaimError`, `NotYourAnnotationError` (403); `InvalidAnnotationError` (422)
"""

from active_learning.errors import (
    ActiveLearningError,
    AlreadyReadError,
    AnnotationNotFoundError,
    AnnotationSupersededError,
    CaseAlreadyFinalError,
    ClaimConflictError,
    ClaimExpiredError,
    ClaimNotFoundError,
    InvalidAnnotationError,
    NotReadyForAdjudicationError,
    NotYourAnnotationError,
    NotYourClaimError,
    QueueItemNotFoundError,
)
from active_learning.models import AnnotationRow, ClaimRow, FinalLabelRow, QueueItemRow
from active_learning.strategies import STRATEGIES, Candidate, Strategy, make_strategy

__all__ = [
    "STRATEGIES",
    "ActiveLearningError",
    "AlreadyReadError",
    "AnnotationNotFoundError",
    "AnnotationRow",
    "AnnotationSupersededError",
    "Candidate",
    "CaseAlreadyFinalError",
    "ClaimConflictError",
    "ClaimExpiredError",
    "ClaimNotFoundError",
    "ClaimRow",
    "FinalLabelRow",
    "InvalidAnnotationError",
    "NotReadyForAdjudicationError",
    "NotYourAnnotationError",
    "NotYourClaimError",
    "QueueItemNotFoundError",
    "QueueItemRow",
    "Strategy",
    "make_strategy",
]
