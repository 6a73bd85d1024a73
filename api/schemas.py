"""Request and response bodies, and the rules their fields follow (roles, usernames, passwords). Field names are
part of the public contract (issues #2, #4, #5). Nothing else of `api` is imported here: every module can use it."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, StringConstraints


class Role(StrEnum):
    RADIOLOGIST = "radiologist"
    ANNOTATOR = "annotator"
    SENIOR = "senior"  # an annotator who also adjudicates disagreements between two reads
    ADMIN = "admin"


MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256  # hashing is deliberately slow: bound the work one request can ask for
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$")


def require_utf8(text: str) -> str:
    """Reject strings that cannot be stored or hashed (lone surrogates arrive through JSON escapes like \\ud800)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("The text contains characters that are not valid Unicode.") from None
    return text


# A request text field that is safe to hash, store and compare.
Utf8Text = Annotated[str, AfterValidator(require_utf8)]

# Explicit embeddings, overrides and isolates: they reorder how text is shown ("Trojan Source", CVE-2021-42574).
_DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = frozenset("\n\r\t")


def _refuse_controls(text: str, allowed: frozenset[str]) -> str:
    for char in text:
        if char in _DIRECTION_CONTROLS or (unicodedata.category(char) == "Cc" and char not in allowed):
            raise ValueError("contains a control or text-direction character (e.g. NUL, ESC, U+202E); remove it.")
    return text


def clean_line(text: str) -> str:
    """One line a person typed (a name, an id): NFC-normalised; control and direction characters refused."""
    return _refuse_controls(unicodedata.normalize("NFC", require_utf8(text)), frozenset())


def clean_free_text(text: str) -> str:
    """Free text (history, reasons): like `clean_line`, but line breaks and tabs stay."""
    return _refuse_controls(unicodedata.normalize("NFC", require_utf8(text)), _LINE_BREAKS)


def strip_controls(text: str) -> str:
    """A value from a file (a DICOM tag) that cannot be sent back: NFC, with the characters `clean_line` refuses
    removed."""
    normalized = unicodedata.normalize("NFC", text)
    return "".join(c for c in normalized if c not in _DIRECTION_CONTROLS and unicodedata.category(c) != "Cc")


def not_in_the_future(value: date | None) -> date | None:
    if value is not None and value > date.today():
        raise ValueError("the birth date is in the future.")
    return value


LineText = Annotated[str, AfterValidator(clean_line)]
FreeText = Annotated[str, AfterValidator(clean_free_text)]


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"])
    model_loaded: bool
    model_version: str | None = Field(default=None, examples=["pneumonia-resnet18-20261129-224500"])
    uptime_s: float


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, dict[str, str | bool]] = Field(
        examples=[{"database": {"ok": True, "detail": "sqlite"}, "model": {"ok": True, "detail": "loaded"}}]
    )


class ModelInfoOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    task: str
    architecture: str
    classes: list[str]
    input_size: int
    version: str
    threshold: float
    temperature: float
    metrics: dict
    data_fingerprint: str
    preprocess: dict
    extra: dict | None = Field(
        default=None,
        description="`?task=nodule` only: model_kind, location_threshold, operating_point (measured sensitivity and "
        "false marks per film on the test films), validated_populations",
    )


class PredictionOut(BaseModel):
    prediction: str = Field(examples=["PNEUMONIA"])
    confidence: float = Field(ge=0, le=1, examples=[0.93])
    probabilities: dict[str, float] = Field(examples=[{"NORMAL": 0.07, "PNEUMONIA": 0.93}])
    processing_time_ms: float
    model_version: str
    timestamp: datetime
    threshold: float = Field(description="Decision threshold on the probability of the positive class.")
    cached: bool = False
    quality_warnings: list[dict] = Field(default_factory=list)
    uncertainty: dict | None = Field(
        default=None, description="entropy (normalized), std of P(positive) over the passes, method, reasons"
    )
    uncertain: bool = Field(default=False, description="True: the case needs expert review (policy in settings)")
    ood: bool = Field(default=False, description="True: the image does not look like a frontal chest radiograph")
    ood_reason: str | None = None
    scope: str | None = Field(
        default=None,
        description="validated | outside_validated | unchecked: is the film from a validated population",
    )
    scope_reason: str | None = Field(default=None, description="Why the film is outside the validated scope")


class NoduleLocationOut(BaseModel):
    """One located mark: a box in the stored image's pixels (x, y = top-left), centred on the heatmap's peak."""

    x: float
    y: float
    w: float
    h: float
    score: float = Field(ge=0, le=1, description="Heatmap probability at the mark's centre")


class NodulePerformanceOut(BaseModel):
    """What the nodule model measured on its test films (the checkpoint's operating point), in numbers and words."""

    sensitivity: float
    false_positives_per_film: float
    summary: str = Field(examples=["Finds about 6 of 10 nodules or masses, at about 1 false mark per film."])


class NoduleOut(BaseModel):
    """The second finding (issue 23), computed from the same decoded film as the pneumonia finding."""

    model_config = ConfigDict(protected_namespaces=())

    label: str = Field(examples=["NODULE"])
    probability: float = Field(ge=0, le=1)
    threshold: float
    locations: list[NoduleLocationOut] = Field(default_factory=list)
    model_version: str
    performance: NodulePerformanceOut | None = Field(
        default=None, description="Measured sensitivity and false marks per film; null when the model states none"
    )


class NodulePredictionOut(BaseModel):
    """`?task=nodule` on /predict and /predict/batch: the pneumonia answer's shape for the nodule model, plus the
    located marks (boxes in the sent image's pixels)."""

    model_config = ConfigDict(protected_namespaces=())

    prediction: str = Field(examples=["NODULE"])
    confidence: float = Field(ge=0, le=1)
    probabilities: dict[str, float] = Field(examples=[{"NO_NODULE": 0.3, "NODULE": 0.7}])
    processing_time_ms: float
    model_version: str
    timestamp: datetime
    threshold: float = Field(description="Decision threshold on the probability of a nodule or mass.")
    cached: bool = False
    quality_warnings: list[dict] = Field(default_factory=list)
    locations: list[NoduleLocationOut] = Field(default_factory=list)


class BatchIn(BaseModel):
    images: list[str] = Field(description="Base64-encoded image files (PNG, JPEG, TIFF or DICOM).", min_length=1)


class BatchItemError(BaseModel):
    index: int
    error: str
    status_code: int


class BatchOut(BaseModel):
    batch_size: int
    predictions: list[PredictionOut | NodulePredictionOut | BatchItemError]


class PatientIn(BaseModel):
    """Patient fields sent with a study (the `patient` multipart field, as JSON). All optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    patient_id: LineText | None = Field(default=None, max_length=64, examples=["MRN-0042"])
    name: LineText | None = Field(default=None, max_length=200, examples=["Jane Doe"])
    age: int | None = Field(default=None, ge=0, le=150, examples=[4])
    sex: Literal["M", "F", "O", "U"] | None = Field(default=None, examples=["F"])
    birth_date: Annotated[date | None, AfterValidator(not_in_the_future)] = Field(default=None, examples=["2022-03-01"])
    clinical_history: FreeText | None = Field(default=None, max_length=20000, examples=["Fever and cough for 3 days."])


class PatientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    patient_id: str | None = None
    name: str | None = None
    age: int | None = None
    sex: str | None = None
    birth_date: date | None = None
    clinical_history: str | None = None


class CaseOut(BaseModel):
    """Built from a `storage.CaseRecord` with `model_validate(record, from_attributes=True)`: the names are the
    record's, except `case_id` (record `id`) and `study` (record `study_metadata`)."""

    model_config = ConfigDict(protected_namespaces=(), from_attributes=True)

    case_id: str = Field(validation_alias=AliasChoices("case_id", "id"))
    created_at: datetime
    updated_at: datetime
    status: str
    task: str
    prediction: str
    confidence: float
    probabilities: dict[str, float]
    positive_probability: float | None
    threshold: float | None
    model_version: str
    uncertainty: dict | None = None
    uncertain: bool = False
    ood: bool | None = None
    ood_reason: str | None = None
    scope: str | None = Field(
        default=None,
        description="validated | outside_validated | unchecked: is the film from a validated population",
    )
    scope_reason: str | None = Field(default=None, description="Why the film is outside the validated scope")
    quality_warnings: list[dict] = Field(default_factory=list)
    review_reason: str | None = Field(default=None, description="Why it was sent for review (hidden from annotators)")
    patient: PatientOut
    study: dict = Field(
        default_factory=dict,
        description="Image format, size and DICOM tags",
        validation_alias=AliasChoices("study", "study_metadata"),
    )
    image_sha256: str
    image_format: str
    created_by: str | None = None
    signed_by: str | None = None
    signed_at: datetime | None = None
    processing_time_ms: float | None = Field(default=None, description="Set on the answer that created the case")
    cached: bool | None = None
    nodule: NoduleOut | None = Field(default=None, description="Nodule/mass finding; null when no nodule model served")


class CasePageOut(BaseModel):
    items: list[CaseOut]
    total: int
    limit: int
    offset: int


class InspectOut(BaseModel):
    upload_id: str = Field(
        description="sha256 of the upload: name it in POST /v1/studies (`upload_id`) instead of sending the file again"
    )
    format: str
    width: int
    height: int
    metadata: dict
    preview_png_base64: str


class NeighbourOut(BaseModel):
    rank: int
    similarity: float = Field(description="Cosine similarity of the model embeddings (1 = identical direction)")
    label: str = Field(description="Confirmed diagnosis of the earlier case")
    source: str = Field(description="reference (labelled dataset image) or confirmed_case (expert-confirmed case)")
    ref_id: str
    case_id: str | None = None
    dataset: str | None = None
    thumbnail_url: str


class SimilarOut(BaseModel):
    case_id: str
    model_version: str
    k: int
    neighbours: list[NeighbourOut]


class SignIn(BaseModel):
    finding: str | None = Field(
        default=None,
        max_length=64,
        description="The radiologist's own finding (one of the model's classes); one other than the model's sends the "
        "case to the experts' queue",
        examples=["NORMAL"],
    )


class ReviewIn(BaseModel):
    reason: FreeText = Field(min_length=3, max_length=2000, examples=["Subtle opacity, please double-read."])


# --- accounts -----------------------------------------------------------------------------------------------------


class LoginIn(BaseModel):
    username: Utf8Text = Field(min_length=1, max_length=64, examples=["dr.house"])
    password: Utf8Text = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = Field(examples=["bearer"])
    expires_in: int = Field(description="Seconds until the token expires (TOKEN_TTL_MINUTES).")
    role: Role


class MeOut(BaseModel):
    id: str
    username: str
    role: Role
    kind: str = Field(description="`user` (logged in with a token) or `api_key` (service account).")


class PasswordChangeIn(BaseModel):
    current_password: Utf8Text = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    new_password: Utf8Text = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN.pattern, examples=["dr.house"])
    password: Utf8Text = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    role: Role


class UserPatch(BaseModel):
    """Any subset; a change of role, password or active flag ends the user's current sessions."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    password: Utf8Text | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    active: bool | None = None


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from storage.UserRecord

    id: str
    username: str
    role: str
    active: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime
    last_login_at: datetime | None
    created_by: str | None


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: LineText = Field(min_length=1, max_length=100, pattern=r"\S", examples=["pacs-router"])
    role: Role
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, description="Empty: never expires.")


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from storage.ApiKeyRecord

    id: str
    name: str
    role: str
    prefix: str = Field(description="The key's first characters, to recognise it; the key itself is never shown again.")
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The secret: send it as `X-API-Key` or `Authorization: Bearer`. Shown only now.")


# --- monitoring: audit trail ------------------------------------------------------------------------------------------


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from monitoring's AuditEvent rows

    id: int
    at: datetime
    action: str = Field(examples=["case.view"])
    outcome: str = Field(examples=["ok"])
    actor_id: str | None
    actor_name: str | None
    actor_role: str | None
    client: str | None = Field(description="The caller's address")
    target_id: str | None = Field(description="The case (or other object) acted on")
    model_version: str | None
    detail: dict[str, Any]
    request_id: str | None
    hash: str


class AuditPageOut(BaseModel):
    items: list[AuditEventOut]
    limit: int
    offset: int


class AuditVerifyOut(BaseModel):
    intact: bool
    records: int
    head_hash: str = Field(description="Keep a copy elsewhere: a chain cut short at the end is still intact")
    problem: str | None = Field(description="The first altered, inserted or deleted record, in words")
    problem_kind: str | None = Field(examples=["altered"])
    problem_record: int | None


# --- monitoring: summary ----------------------------------------------------------------------------------------------


class FiguresOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from monitoring's Figures

    requests: int
    errors: int = Field(description="Answers with a 5xx status")
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    predictions: int
    prediction_mix: dict[str, int] = Field(examples=[{"NORMAL": 31, "PNEUMONIA": 12}])
    mean_confidence: float | None
    uncertain_share: float | None = Field(description="Share of predictions sent for expert review")
    out_of_scope_share: float | None = Field(description="Share the input gate flagged")


class SeriesPointOut(BaseModel):
    start: datetime
    figures: FiguresOut


class MonitoringSummaryOut(BaseModel):
    window: Literal["1h", "24h", "7d"]
    start: datetime
    end: datetime
    throughput_per_min: float
    totals: FiguresOut
    series: list[SeriesPointOut]


# --- monitoring: alerts -----------------------------------------------------------------------------------------------


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from monitoring's Alert rows

    id: int
    rule: str = Field(examples=["p95_latency_high"])
    state: Literal["firing", "acknowledged", "resolved"]
    severity: str = Field(examples=["warning"])
    message: str
    value: float | None
    fired_at: datetime
    last_seen_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    notified_at: datetime | None


class AlertChannelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    channel: str = Field(examples=["webhook"])
    ok: bool
    detail: str = Field(description="The last delivery: where it went, or why it failed")
    at: datetime


class AlertsOut(BaseModel):
    alerts: list[AlertOut]
    channels: list[AlertChannelOut]


# --- monitoring: drift ------------------------------------------------------------------------------------------------


class FeatureTestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from monitoring's FeatureTest

    feature: str = Field(examples=["intensity_mean"])
    test: str = Field(examples=["ks"])
    statistic: float
    p_value: float
    psi: float | None = Field(description="Population stability index: < 0.1 small shift, > 0.25 large")
    drifted: bool


class EmbeddingDriftOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from api.drift's EmbeddingStatus

    state: Literal["tested", "computing", "too_few_cases", "no_model"] = Field(
        description="tested: the `embedding` entry of `tests` is the MMD test; otherwise why it is left out"
    )
    detail: str
    model_version: str | None = Field(description="Only recent cases analysed by this (the serving) model count")
    reference_size: int = Field(description="Baseline films embedded by that model")
    new_size: int = Field(description="Recent cases of that model with an embedding")


class DriftOut(BaseModel):
    at: datetime
    detected: bool | None = Field(description="None: not enough data to say (see reason)")
    reason: str
    alpha: float | None
    threshold: float | None = Field(description="Per-test p-value threshold (alpha / number of tests)")
    baseline_size: int
    new_size: int
    tests: list[FeatureTestOut]
    embedding: EmbeddingDriftOut | None = Field(
        description="The embeddings' MMD test (it joins the Bonferroni family when tested); None with no data"
    )


# --- learning loop: queue, annotations, retraining (issue 14) ---------------------------------------------------------

ExpertLabel = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Z][A-Z0-9_]*$")]


class QueueIn(BaseModel):
    case_id: str = Field(min_length=1, max_length=64)
    reason: FreeText = Field(min_length=3, max_length=2000, examples=["Subtle opacity, please double-read."])


class QueueReasonOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str = Field(
        description="uncertain | ood | disagreement | manual | nodule_disagreement", examples=["uncertain"]
    )
    requested_by: str | None = None
    at: datetime


class QueueItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from active_learning's QueueItem

    id: str
    case_id: str
    state: str = Field(description="open | adjudication | final", examples=["open"])
    reasons: list[QueueReasonOut]
    reads: int = Field(description="Expert reads submitted so far")
    reads_needed: int
    waiting_since: datetime
    claimed_by: str | None = Field(default=None, description="Who holds the case now (None: free)")
    final_label: str | None = None


class QueuePageOut(BaseModel):
    items: list[QueueItemOut]
    total: int
    strategy: str = Field(description="The selection strategy that ordered the list (ACTIVE_LEARNING_STRATEGY)")


class ClaimOut(BaseModel):
    """The lock an annotator holds on one case while reading it; renew it while working, release it when leaving."""

    case_id: str
    claim_id: str
    expires_at: datetime
    claimed_at: datetime
    labels: list[str] = Field(description="The labels a read may give: the model's classes, OTHER, UNGRADABLE")
    show_ai: bool = Field(description="Whether the model's finding and heatmap may be shown before the read is in")
    case: ReadingCaseOut = Field(description="The case without patient identity (and without the AI result when blind)")


class BoxIn(BaseModel):
    x: float = Field(ge=0, description="Left edge, in pixels of the stored image")
    y: float = Field(ge=0)
    w: float = Field(gt=0)
    h: float = Field(gt=0)


class AnnotationIn(BaseModel):
    case_id: str = Field(min_length=1, max_length=64)
    label: ExpertLabel = Field(examples=["PNEUMONIA"])
    confidence: int = Field(ge=1, le=5, description="The expert's confidence, 1 (guess) to 5 (certain)")
    comment: FreeText | None = Field(default=None, max_length=2000)
    boxes: list[BoxIn] = Field(default_factory=list, max_length=20)
    corrects: str | None = Field(default=None, description="Id of the caller's earlier read this one supersedes")


class AdjudicationIn(BaseModel):
    label: ExpertLabel = Field(examples=["NORMAL"])
    comment: FreeText | None = Field(default=None, max_length=2000)


class AnnotationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from active_learning's Annotation

    id: str
    case_id: str
    annotator: str
    kind: str = Field(description="read | adjudication")
    label: str
    confidence: int | None
    comment: str | None
    boxes: list[dict]
    created_at: datetime
    seconds: float | None = Field(description="Time from claim to submission")
    supersedes: str | None = None
    superseded: bool = False


class FinalLabelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from active_learning's FinalLabel

    case_id: str
    label: str
    source: str = Field(description="agreement | adjudication")
    split: str = Field(description="train | val (held back to judge retrained models; never reshuffled)")
    annotators: list[str]
    finalized_at: datetime


class CaseAnnotationsOut(BaseModel):
    case_id: str
    state: str = Field(description="open | adjudication | final | not_queued")
    annotations: list[AnnotationOut] = Field(description="The reads the caller may see (blind until their own is in)")
    final: FinalLabelOut | None = None
    labels: list[str] = Field(
        default_factory=list, description="What a read or an adjudication of this case may say (empty: not queued)"
    )


class NoduleMarkIn(BaseModel):
    """One box of a nodule review. A confirmed or rejected mark is one of the model's marks sent back as received
    (x, y, w, h within 1 px); an added box is the reader's own. Other keys (the mark's score) are ignored."""

    x: float = Field(description="Left edge, in pixels of the stored image")
    y: float = Field(description="Top edge, in pixels of the stored image")
    w: float
    h: float
    verdict: Literal["confirmed", "rejected", "added"]


class NoduleReviewIn(BaseModel):
    marks: list[NoduleMarkIn] = Field(
        default_factory=list, description="A verdict on every one of the model's marks, plus any boxes added"
    )
    finding: Literal["NODULE", "NO_NODULE"]
    comment: FreeText | None = Field(default=None, max_length=2000)


class NoduleMarkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from active_learning's NoduleMark

    x: float
    y: float
    w: float
    h: float
    verdict: str = Field(description="confirmed | rejected | added")
    score: float | None = Field(description="The model's score of the mark; null for an added box")


class NoduleReviewOut(BaseModel):
    """A stored read of a case's nodule marks (never changed; a second read is another review)."""

    model_config = ConfigDict(from_attributes=True)  # built from active_learning's NoduleReview

    id: str
    case_id: str
    finding: str = Field(description="NODULE | NO_NODULE")
    marks: list[NoduleMarkOut]
    comment: str | None = Field(description="Free text; shown to the roles that see the patient's identity")
    reviewer: str = Field(description="Who signed the read")
    reviewer_role: str
    created_at: datetime
    model_label: str = Field(description="The model's finding the read judged")
    model_probability: float
    model_version: str
    disagreement: list[str] = Field(description="finding | rejected_mark | added_box; empty: agrees with the model")
    queued: bool = Field(description="This read sent the case to the experts' queue (reason nodule_disagreement)")
    split: str = Field(description="train | val: the patient's held-back split")


class NoduleReviewsOut(BaseModel):
    case_id: str
    reviews: list[NoduleReviewOut] = Field(description="Newest first")


class RetrainingIn(BaseModel):
    reason: FreeText | None = Field(default=None, max_length=500)


class RetrainingJobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    state: str = Field(description="queued | running | promoted | rejected | failed")
    trigger: str = Field(description="admin | labels")
    requested_by: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: dict = Field(default_factory=dict)
    reason: str | None = Field(default=None, description="Why the challenger was promoted or rejected")
    error: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    metrics: dict = Field(default_factory=dict)
    mlflow_run_id: str | None = None


class RetrainingPageOut(BaseModel):
    jobs: list[RetrainingJobOut]
    total: int


class AiFindingOut(BaseModel):
    """The model's answer on a case, shown to a reader only when reading is not blind or once their read is in."""

    model_config = ConfigDict(from_attributes=True, protected_namespaces=())  # built from a CaseOut

    prediction: str
    confidence: float
    probabilities: dict[str, float]
    positive_probability: float | None
    threshold: float | None
    uncertain: bool
    ood: bool | None
    scope: str | None
    model_version: str


class ReadingCaseOut(BaseModel):
    """What an expert reader gets of a claimed case: the film's facts, never who the patient is."""

    case_id: str
    task: str
    age: int | None = None
    sex: str | None = None
    study: dict = Field(default_factory=dict, description="Non-identifying study facts: format, size, view")
    image_warnings: list[dict] = Field(default_factory=list)
    ai: AiFindingOut | None = Field(default=None, description="None while reading blind (SHOW_AI_TO_ANNOTATORS)")


# --- model operations ------------------------------------------------------------------------------------------------


class ModelVersionOut(BaseModel):
    """One registered version: what it scored, what it was trained on, and who moved the champion to it, when and
    why (mlops.registry.VersionDetails)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: int
    checkpoint_version: str = Field(description="The version every prediction made by it carries (model_version)")
    aliases: list[str] = Field(description="e.g. ['champion']")
    created: str
    run_id: str
    source: str
    metrics: dict[str, float] = Field(description="Test metrics stored with the version (auroc, sensitivity, ...)")
    data_fingerprint: str = Field(description="Fingerprint of the data it was trained on")
    test_data_fingerprint: str
    promoted_by: str
    promoted_at: str
    promotion_reason: str
    rolled_back_by: str
    rolled_back_at: str
    rollback_reason: str
    serving: bool = Field(description="This backend answers with this version now")
    warm: bool = Field(description="Loaded in this backend: switching to it takes no load (blue-green)")


class RegisteredModelOut(BaseModel):
    name: str
    champion: int | None = Field(description="The version the `champion` alias points to")
    versions: list[ModelVersionOut]


class ModelsOut(BaseModel):
    models: list[RegisteredModelOut]
    serving: dict[str, str] = Field(description="Task -> the checkpoint version this backend serves")


class PromoteIn(BaseModel):
    version: int = Field(ge=1)
    reason: FreeText = Field(min_length=3, max_length=500, examples=["Better sensitivity on the site's expert labels."])


class RollbackIn(BaseModel):
    reason: FreeText = Field(min_length=3, max_length=500, examples=["Sensitivity dropped on Monday's films."])


class ModelSwitchOut(BaseModel):
    """The outcome of a promotion or rollback: the alias moved and this backend already serves the new version."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    alias: str
    version: int
    previous_version: int | None
    checkpoint_version: str
    serving: str = Field(description="The checkpoint version this backend answers with now")
    swap_ms: float = Field(description="Load, warm-up and switch (not the registry writes); ~0 when kept warm")
