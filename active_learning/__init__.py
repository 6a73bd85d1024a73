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
- retraining jobs (active_learning.jobs, revision 0008_retraining_jobs): `RetrainingJobs(database)` (`start`, `get`,
  `list`, `active`, `latest`; runners: `claim_due`, `heartbeat`, `record_step`, `set_versions`, `finish`),
  `JobRecord`, `JobPage`, `JobState`, `RetrainingJob` (table); errors `RetrainingJobError` (422),
  `JobNotFoundError` (404), `JobAlreadyActiveError` (409), `JobLostError` (a runner's job was taken over)
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
from active_learning.jobs import (
    JobAlreadyActiveError,
    JobLostError,
    JobNotFoundError,
    JobPage,
    JobRecord,
    JobState,
    RetrainingJob,
    RetrainingJobError,
    RetrainingJobs,
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
    "JobAlreadyActiveError",
    "JobLostError",
    "JobNotFoundError",
    "JobPage",
    "JobRecord",
    "JobState",
    "NotReadyForAdjudicationError",
    "NotYourAnnotationError",
    "NotYourClaimError",
    "QueueItemNotFoundError",
    "QueueItemRow",
    "RetrainingJob",
    "RetrainingJobError",
    "RetrainingJobs",
    "Strategy",
    "make_strategy",
]
