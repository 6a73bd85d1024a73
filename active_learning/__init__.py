"""active_learning: the learning loop (which cases experts read, and in what order; their reads; the final labels).

Public surface:
- `LearningLoop(database, policy, *, clock=utcnow)` (active_learning.loop), `QueuePolicy.from_settings(settings)`:
  queue: `enqueue(case_id, reason, *, requested_by, note) -> QueueItem`, `list_queue(*, state, limit, offset) ->
  QueuePage`, `queue_item(case_id)`, `queue_state(case_id)`; claims (expiring locks on a case, safe across
  processes): `claim_next(annotator_id) -> Claim | None`, `renew(claim_id, annotator_id)`, `release(...)`;
  reads: `labels_for(case_id)`, `submit(annotator_id, case_id, *, label, confidence, comment, boxes) -> Annotation`,
  `correct(annotation_id, annotator_id, ...)` (supersedes), `annotations_for(case_id, *, viewer_id)` (blind),
  `adjudicate(case_id, adjudicator_id, *, label, comment) -> FinalLabel`; final labels: `final_label(case_id)`,
  `final_labels(*, since, split)`, `count_final_labels(*, since)`; quality: `stats(*, annotator_id) ->
  AnnotationStats` (`AnnotatorStats`, `OverallStats`, `ModelVersionStats`), `expert_feedback(limit)` ((model's
  answer, expert label) pairs for the monitoring rule), `cohen_kappa(pairs)`; export: `export_csv()`,
  `write_export(artifacts, out) -> ExportResult`, `MANIFEST_COLUMNS`; `python -m active_learning export --out DIR`;
  nodule reviews (active_learning.nodule_reviews, revision 0010_nodule_reviews): `review_nodules(case_id, reviewer,
  reviewer_role, *, finding, marks, comment) -> NoduleReview` (queues a disagreeing review: reason
  nodule_disagreement), `nodule_reviews(case_id)` (newest first), `nodule_labels()`, `nodule_export_csv()`,
  `NODULE_MANIFEST_COLUMNS` (DIR/nodule_manifest.csv of the export)
- records (active_learning.records): `ReviewReason`, `QueueReason`, `QueueItem`, `QueuePage`, `Claim`,
  `Annotation`, `FinalLabel`, `NoduleReview`, `NoduleMark`; labels besides the model's classes `OTHER`, `UNGRADABLE`
- selection strategies (active_learning.strategies): `Strategy` (name, `info()`, `rank(candidates, k)`),
  `Candidate`, `STRATEGIES` ("uncertainty", "margin", "random", "diversity"), `make_strategy(name, *,
  min_distance, seed)`
- tables (active_learning.models, revision 0007_learning_loop): `QueueItemRow`, `ClaimRow`, `AnnotationRow`,
  `FinalLabelRow` on storage's `Base`; `NoduleReviewRow` (revision 0010_nodule_reviews)
- errors (active_learning.errors): `ActiveLearningError` and its subclasses `QueueItemNotFoundError`,
  `ClaimNotFoundError`, `AnnotationNotFoundError` (404); `ClaimExpiredError`, `ClaimConflictError`,
  `AlreadyReadError`, `NotReadyForAdjudicationError`, `CaseAlreadyFinalError`, `AnnotationSupersededError`,
  `NoNoduleFindingError` (409);
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
    NoNoduleFindingError,
    NotReadyForAdjudicationError,
    NotYourAnnotationError,
    NotYourClaimError,
    QueueItemNotFoundError,
)
from active_learning.export import MANIFEST_COLUMNS, NODULE_MANIFEST_COLUMNS, ExportResult
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
from active_learning.loop import LearningLoop
from active_learning.models import AnnotationRow, ClaimRow, FinalLabelRow, NoduleReviewRow, QueueItemRow
from active_learning.quality import AnnotationStats, AnnotatorStats, ModelVersionStats, OverallStats, cohen_kappa
from active_learning.records import (
    OTHER,
    UNGRADABLE,
    Annotation,
    Claim,
    FinalLabel,
    NoduleMark,
    NoduleReview,
    QueueItem,
    QueuePage,
    QueuePolicy,
    QueueReason,
    ReviewReason,
)
from active_learning.strategies import STRATEGIES, Candidate, Strategy, make_strategy

__all__ = [
    "MANIFEST_COLUMNS",
    "NODULE_MANIFEST_COLUMNS",
    "OTHER",
    "STRATEGIES",
    "UNGRADABLE",
    "ActiveLearningError",
    "AlreadyReadError",
    "Annotation",
    "AnnotationNotFoundError",
    "AnnotationRow",
    "AnnotationStats",
    "AnnotationSupersededError",
    "AnnotatorStats",
    "Candidate",
    "CaseAlreadyFinalError",
    "Claim",
    "ClaimConflictError",
    "ClaimExpiredError",
    "ClaimNotFoundError",
    "ClaimRow",
    "ExportResult",
    "FinalLabel",
    "FinalLabelRow",
    "InvalidAnnotationError",
    "JobAlreadyActiveError",
    "JobLostError",
    "JobNotFoundError",
    "JobPage",
    "JobRecord",
    "JobState",
    "LearningLoop",
    "ModelVersionStats",
    "NoNoduleFindingError",
    "NoduleMark",
    "NoduleReview",
    "NoduleReviewRow",
    "NotReadyForAdjudicationError",
    "NotYourAnnotationError",
    "NotYourClaimError",
    "OverallStats",
    "QueueItem",
    "QueueItemNotFoundError",
    "QueueItemRow",
    "QueuePage",
    "QueuePolicy",
    "QueueReason",
    "RetrainingJob",
    "RetrainingJobError",
    "RetrainingJobs",
    "ReviewReason",
    "Strategy",
    "cohen_kappa",
    "make_strategy",
]
