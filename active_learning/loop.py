"""`LearningLoop`: the one object the API holds for the queue, claims, expert reads, final labels, statistics and the
export. Each call is one write transaction (a read-only call one session); it returns plain records.

The rules live in the modules it calls: active_learning/queue.py (queue, claims and their locking),
active_learning/annotations.py (reads, double reading, adjudication, blindness, the held-back split),
active_learning/quality.py (agreement, kappa, the model against final labels), active_learning/export.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

# The modules themselves, not through the package: the package's __init__ imports this module.
import active_learning.annotations as annotations
import active_learning.export as export
import active_learning.nodule_reviews as nodule_reviews
import active_learning.quality as quality
import active_learning.queue as queue
from active_learning.errors import ClaimConflictError, InvalidAnnotationError, QueueItemNotFoundError
from active_learning.models import FinalLabelRow, QueueItemRow
from active_learning.quality import AnnotationStats
from active_learning.records import (
    Annotation,
    Claim,
    FinalLabel,
    NoduleReview,
    QueueItem,
    QueuePage,
    QueuePolicy,
    ReviewReason,
)
from active_learning.strategies import make_strategy
from storage import ArtifactStore, Case, CaseNotFoundError, Database, StorageUnavailableError, utcnow

MAX_PERSON_ID_LENGTH = 64


class LearningLoop:
    """Thread-safe (no state besides the database); `clock` is for tests of expiry."""

    def __init__(self, database: Database, policy: QueuePolicy, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.database, self.policy, self._clock = database, policy, clock
        self.strategy = make_strategy(policy.strategy, min_distance=policy.min_distance, seed=policy.seed)

    # --- the queue ----------------------------------------------------------------------------------------------------

    def enqueue(
        self, case_id: str, reason: ReviewReason | str, *, requested_by: str | None = None, note: str | None = None
    ) -> QueueItem:
        """Send a case to the experts; a case is in the queue once, a further reason joins its item."""
        requested_by = None if requested_by is None else _person(requested_by)
        with self._writing() as session:
            item = queue.enqueue(session, case_id, reason, requested_by, note, self._clock())
            return queue.item_records(session, [item], self.policy, self._clock())[0]

    def list_queue(self, *, state: str | None = None, limit: int = 50, offset: int = 0) -> QueuePage:
        with self._reading() as session:
            return queue.list_queue(
                session, self.strategy, self.policy, self._clock(), state=state, limit=limit, offset=offset
            )

    def queue_item(self, case_id: str) -> QueueItem:
        with self._reading() as session:
            item = session.scalar(select(QueueItemRow).where(QueueItemRow.case_id == case_id))
            if item is None:
                raise QueueItemNotFoundError(f"Case {case_id} is not in the review queue.")
            return queue.item_records(session, [item], self.policy, self._clock())[0]

    def queue_state(self, case_id: str) -> str | None:
        """open | adjudication | final, or None for a case that was never sent."""
        with self._reading() as session:
            return session.scalar(select(QueueItemRow.state).where(QueueItemRow.case_id == case_id))

    # --- claims -------------------------------------------------------------------------------------------------------

    def claim_next(self, annotator_id: str) -> Claim | None:
        """Lock the next case for `annotator_id` (their claim if they hold one); None: nothing left for them."""
        annotator_id = _person(annotator_id)
        with self._writing() as session:
            claim = queue.claim_next(session, self.strategy, self.policy, annotator_id, self._clock())
            return None if claim is None else queue.claim_record(claim)

    def renew(self, claim_id: str, annotator_id: str) -> Claim:
        with self._writing() as session:
            return queue.claim_record(queue.renew(session, self.policy, claim_id, annotator_id, self._clock()))

    def release(self, claim_id: str, annotator_id: str) -> None:
        with self._writing() as session:
            queue.release(session, claim_id, annotator_id, self._clock())

    # --- reads --------------------------------------------------------------------------------------------------------

    def labels_for(self, case_id: str) -> list[str]:
        with self._reading() as session:
            return annotations.labels_for(_case(session, case_id))

    def submit(
        self,
        annotator_id: str,
        case_id: str,
        *,
        label: str,
        confidence: int,
        comment: str | None = None,
        boxes: Sequence[Mapping[str, float]] = (),
    ) -> Annotation:
        """A read under the annotator's unexpired claim; the case's final label follows once its reads agree."""
        read = {"label": label, "confidence": confidence, "comment": comment, "boxes": boxes}
        with self._writing() as session:
            row = annotations.submit(session, self.policy, _person(annotator_id), case_id, read, self._clock())
            return annotations.annotation_record(row, superseded=False)

    def correct(
        self,
        annotation_id: str,
        annotator_id: str,
        *,
        label: str,
        confidence: int,
        comment: str | None = None,
        boxes: Sequence[Mapping[str, float]] = (),
    ) -> Annotation:
        """A new version of the annotator's own read; the old one stays as history."""
        read = {"label": label, "confidence": confidence, "comment": comment, "boxes": boxes}
        with self._writing() as session:
            row = annotations.correct(session, annotation_id, annotator_id, read, self._clock())
            return annotations.annotation_record(row, superseded=False)

    def annotations_for(self, case_id: str, *, viewer_id: str | None) -> list[Annotation]:
        """The reads of the case that `viewer_id` may see: blind until their own read is in (active_learning/
        annotations.py). Pass None only for viewers who never read blind (clinicians, audits): they see every read."""
        with self._reading() as session:
            return annotations.visible_annotations(session, case_id, viewer_id)

    def adjudicate(self, case_id: str, adjudicator_id: str, *, label: str, comment: str | None = None) -> FinalLabel:
        """The final label of a case whose reads disagree, by an expert who did not read it."""
        with self._writing() as session:
            row = annotations.adjudicate(
                session, self.policy, case_id, _person(adjudicator_id), label, comment, self._clock()
            )
            return annotations.final_record(row)

    # --- nodule reviews -------------------------------------------------------------------------------------------

    def review_nodules(
        self,
        case_id: str,
        reviewer: str,
        reviewer_role: str,
        *,
        finding: str,
        marks: Sequence[Mapping[str, Any]],
        comment: str | None = None,
    ) -> NoduleReview:
        """A clinician's verdicts on the case's nodule marks, added boxes and finding (active_learning/
        nodule_reviews.py); a review that disagrees with the model queues the case (reason nodule_disagreement)."""
        body = {"finding": finding, "marks": marks, "comment": comment}
        with self._writing() as session:
            row = nodule_reviews.review(
                session, self.policy, case_id, (_person(reviewer), reviewer_role), body, self._clock()
            )
            return nodule_reviews.review_record(row)

    def nodule_reviews(self, case_id: str) -> list[NoduleReview]:
        """Every review of the case's nodule marks, newest first."""
        with self._reading() as session:
            return nodule_reviews.reviews_of(session, case_id)

    def nodule_labels(self) -> list[NoduleReview]:
        """Each reviewed case's newest review: the expert labels of the nodule task."""
        with self._reading() as session:
            return nodule_reviews.latest_reviews(session)

    # --- final labels, quality, export --------------------------------------------------------------------------------

    def final_label(self, case_id: str) -> FinalLabel | None:
        with self._reading() as session:
            row = session.get(FinalLabelRow, case_id)
            return None if row is None else annotations.final_record(row)

    def final_labels(self, *, since: datetime | None = None, split: str | None = None) -> list[FinalLabel]:
        """Final labels in the order they became final (`since`: strictly after that time)."""
        with self._reading() as session:
            return annotations.final_labels(session, since, split)

    def count_final_labels(self, *, since: datetime | None = None) -> int:
        with self._reading() as session:
            return annotations.count_final_labels(session, since)

    def stats(self, *, annotator_id: str | None = None) -> AnnotationStats:
        with self._reading() as session:
            return quality.annotation_stats(session, annotator_id)

    def expert_feedback(self, limit: int = 500) -> list[tuple[str, str]]:
        """(model's answer, final expert label) of the most recent comparable final labels, newest first."""
        with self._reading() as session:
            return quality.expert_feedback(session, limit)

    def export_csv(self) -> str:
        return export.manifest_csv(self.final_labels())

    def nodule_export_csv(self) -> str:
        """Each reviewed case's newest nodule review as a row of export.NODULE_MANIFEST_COLUMNS."""
        return export.nodule_manifest_csv(self.nodule_labels())

    def write_export(self, artifacts: ArtifactStore, out: Path) -> export.ExportResult:
        """manifest.csv (final labels), nodule_manifest.csv (nodule reviews) and the images both name."""
        return export.write_export(self.final_labels(), self.nodule_labels(), artifacts, out)

    # --- transactions -------------------------------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with _database_errors(), self.database.transaction() as session:
            yield session

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with _database_errors(), self.database.session() as session:
            yield session


@contextmanager
def _database_errors() -> Iterator[None]:
    """Driver errors as errors the API maps: a value the database refuses is bad input, a constraint that trips is
    a request that raced another one on the same case, an unreachable database is a 503."""
    try:
        yield
    except DataError as exc:
        raise InvalidAnnotationError("The database refused a value of this request (too long or malformed).") from exc
    except IntegrityError as exc:
        raise ClaimConflictError("Another request changed this case at the same moment; try again.") from exc
    except OperationalError as exc:
        raise StorageUnavailableError("The database is not reachable or too busy; try again.") from exc


def _person(person_id: Any) -> str:
    if not isinstance(person_id, str) or not person_id.strip() or len(person_id) > MAX_PERSON_ID_LENGTH:
        raise InvalidAnnotationError(
            f"A person is named by a non-empty id of at most {MAX_PERSON_ID_LENGTH} characters."
        )
    return person_id


def _case(session: Session, case_id: str) -> Case:
    case = session.get(Case, case_id)
    if case is None:
        raise CaseNotFoundError(f"No case with id {case_id}.")
    return case
