"""Why a learning-loop operation was refused. Messages are written for the person who asked and never carry patient
data. The API maps the classes with one table (api/errors.py); the status each one means is noted beside it.
"""


class ActiveLearningError(Exception):
    """Base class of every error raised by the learning-loop room."""


class QueueItemNotFoundError(ActiveLearningError, LookupError):
    """No queue item for that case or id (404)."""


class ClaimNotFoundError(ActiveLearningError, LookupError):
    """No claim with that id, or the annotator holds no claim on the case (404)."""


class AnnotationNotFoundError(ActiveLearningError, LookupError):
    """No annotation with that id (404)."""


class ClaimExpiredError(ActiveLearningError):
    """The claim has lapsed (CLAIM_TTL_S), was released or was used: claim the case again (409)."""


class ClaimConflictError(ActiveLearningError):
    """Another annotator holds the case right now (409)."""


class AlreadyReadError(ActiveLearningError):
    """The annotator has already read this case (a second read must come from someone else) (409)."""


class NotReadyForAdjudicationError(ActiveLearningError):
    """The case's reads agree or are not all in yet, so there is nothing to adjudicate (409)."""


class CaseAlreadyFinalError(ActiveLearningError):
    """The case has its final label; it never changes afterwards (409)."""


class AnnotationSupersededError(ActiveLearningError):
    """A newer version of that read exists: correct the latest one (409)."""


class NotYourClaimError(ActiveLearningError):
    """The claim belongs to another annotator (403)."""


class NotYourAnnotationError(NotYourClaimError):
    """Only the annotator who wrote a read may correct it (403)."""


class NoNoduleFindingError(ActiveLearningError):
    """The case has no nodule finding (no nodule model was served when it was analysed), so no marks to review (409)."""


class InvalidAnnotationError(ActiveLearningError, ValueError):
    """A label, confidence, comment, box or reason is not acceptable; the message says which and why (422)."""
