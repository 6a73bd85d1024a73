"""The input of every report: one case record and the institution it is printed for.

These types are the whole contract between the API (which builds them from its stored case, the model card and the
retrieval results) and the report builders, which are pure functions of them. Every optional field may be None or
empty; the reports then leave the line out rather than printing a gap or "None".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from reports.errors import ReportInputError

ReportKind = Literal["radiologist", "clinical", "patient"]
REPORT_KINDS: tuple[ReportKind, ...] = get_args(ReportKind)
PageSize = Literal["A4", "letter"]

# Generous bounds that keep one report well under a second and a few dozen pages, and keep one-line fields (ids,
# labels, names in the page header) from overrunning their boxes.
MAX_TEXT_CHARS = 20_000  # clinical history (the case store allows as much), model limitations
MAX_NOTE_CHARS = 5_000  # OOD reason, each quality warning, uncertainty method, model calibration (printed clipped)
MAX_NAME_CHARS = 512  # patient and signer names, institution
MAX_ID_CHARS = 128  # report, case, patient and similar-case ids, model version and architecture, labels
MAX_SIMILAR_CASES = 24
MAX_QUALITY_WARNINGS = 200  # the first 20 are printed
MAX_NODULE_MARKS = 20  # the nodule model returns at most 5; a report prints every mark it is given


def _check_probability(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise ReportInputError(f"{name} must be a number between 0 and 1.")


def _check_text(name: str, value: str | None, max_chars: int, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()):
        raise ReportInputError(f"{name} must be a non-empty string." if required else f"{name} must be a string.")
    if len(value) > max_chars:
        raise ReportInputError(f"{name} is longer than {max_chars} characters.")


def _check_image(name: str, value: bytes | None, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, bytes | bytearray) or not value:
        raise ReportInputError(f"{name} must be non-empty image bytes (PNG or JPEG).")


@dataclass(frozen=True)
class PatientDetails:
    """Patient fields as entered on the workstation (DICOM Patient* tags fill in what is missing here)."""

    patient_id: str | None = field(default=None, repr=False)
    name: str | None = field(default=None, repr=False)
    age: int | str | None = None  # years, or free text such as "6 months"
    sex: str | None = None  # "M", "F", "O" or free text
    birth_date: date | str | None = field(default=None, repr=False)
    clinical_history: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_text("patient patient_id", self.patient_id, MAX_ID_CHARS)
        _check_text("patient name", self.name, MAX_NAME_CHARS)
        _check_text("patient sex", self.sex, MAX_ID_CHARS)
        _check_text("patient clinical_history", self.clinical_history, MAX_TEXT_CHARS)
        if isinstance(self.age, str):
            _check_text("patient age", self.age, MAX_ID_CHARS)
        if isinstance(self.birth_date, str):
            _check_text("patient birth_date", self.birth_date, MAX_ID_CHARS)
        if self.age is not None and (
            isinstance(self.age, bool)
            or not isinstance(self.age, int | str)
            or (isinstance(self.age, int) and self.age < 0)
        ):
            raise ReportInputError("patient age must be a non-negative whole number of years or a text.")
        if self.birth_date is not None and not isinstance(self.birth_date, date | str):
            raise ReportInputError("patient birth_date must be a date or a text.")


@dataclass(frozen=True)
class UncertaintyDetails:
    """How unsure the model is about this image (predictive entropy and/or spread over stochastic passes)."""

    entropy: float | None = None
    std: float | None = None
    method: str | None = None  # e.g. "MC dropout, 20 passes"

    def __post_init__(self) -> None:
        for name in ("entropy", "std"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
            ):
                raise ReportInputError(f"uncertainty {name} must be a non-negative number.")
        _check_text("uncertainty method", self.method, MAX_NOTE_CHARS)

    @property
    def is_empty(self) -> bool:
        return self.entropy is None and self.std is None and not self.method


@dataclass(frozen=True)
class ModelCard:
    """The model that produced the result, from its checkpoint / registry entry."""

    version: str
    architecture: str | None = None
    test_metrics: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"auroc": 0.955, "sensitivity": 0.93}
    limitations: str | None = None
    calibration: str | None = None  # e.g. "temperature scaling (T = 1.42)"

    def __post_init__(self) -> None:
        _check_text("model version", self.version, MAX_ID_CHARS, required=True)
        _check_text("model architecture", self.architecture, MAX_ID_CHARS)
        _check_text("model limitations", self.limitations, MAX_TEXT_CHARS)
        _check_text("model calibration", self.calibration, MAX_NOTE_CHARS)
        if not isinstance(self.test_metrics, Mapping):
            raise ReportInputError("model test_metrics must be a mapping of metric name to value.")


@dataclass(frozen=True)
class SimilarCase:
    """One reference case the retrieval index found close to this image."""

    case_id: str
    label: str
    similarity: float  # cosine similarity of the embeddings, higher is closer
    thumbnail_png: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_text("similar case id", self.case_id, MAX_ID_CHARS, required=True)
        _check_text("similar case label", self.label, MAX_ID_CHARS, required=True)
        if isinstance(self.similarity, bool) or not isinstance(self.similarity, int | float):
            raise ReportInputError("similar case similarity must be a number.")
        if not math.isfinite(self.similarity):
            raise ReportInputError("similar case similarity must be finite.")
        _check_image("similar case thumbnail_png", self.thumbnail_png)


def _check_number(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportInputError(f"{name} must be a finite number.")
    if value < 0 or (positive and value == 0):
        raise ReportInputError(f"{name} must be {'greater than' if positive else 'at least'} 0.")


@dataclass(frozen=True)
class NoduleMark:
    """One located nodule or mass: a box in the stored image's pixels (x, y = top-left corner) and its score."""

    x: float
    y: float
    w: float
    h: float
    score: float  # the model's probability at the mark's centre

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            _check_number(f"nodule mark {name}", getattr(self, name))
        for name in ("w", "h"):
            _check_number(f"nodule mark {name}", getattr(self, name), positive=True)
        _check_probability("nodule mark score", self.score)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


@dataclass(frozen=True)
class NoduleReport:
    """The second finding, lung nodule or mass, as the case JSON's `nodule` object gives it.

    `image_size` is (width, height) of the stored image the marks' pixels refer to, so the marks land on the report's
    (smaller) copy of the film; None means the report's image itself.
    """

    label: str  # "NODULE" or "NO_NODULE"
    probability: float  # calibrated image-level probability of a nodule or mass
    threshold: float
    model_version: str
    marks: tuple[NoduleMark, ...] = ()
    performance: str | None = None  # the measured operating point in one sentence (nodule_performance_sentence)
    image_size: tuple[int, int] | None = None
    positive_class: str = "NODULE"

    def __post_init__(self) -> None:
        _check_text("nodule label", self.label, MAX_ID_CHARS, required=True)
        _check_text("nodule model_version", self.model_version, MAX_ID_CHARS, required=True)
        _check_text("nodule performance", self.performance, MAX_NOTE_CHARS)
        _check_probability("nodule probability", self.probability)
        _check_probability("nodule threshold", self.threshold)
        if self.probability is None or self.threshold is None:
            raise ReportInputError("nodule probability and threshold are required.")
        if isinstance(self.marks, str | bytes) or len(self.marks) > MAX_NODULE_MARKS:
            raise ReportInputError(f"nodule marks must be a list of at most {MAX_NODULE_MARKS} marks.")
        if not all(isinstance(mark, NoduleMark) for mark in self.marks):
            raise ReportInputError("nodule marks must hold NoduleMark items.")
        if self.image_size is not None:
            if len(self.image_size) != 2:
                raise ReportInputError("nodule image_size must be (width, height).")
            for name, side in zip(("width", "height"), self.image_size, strict=True):
                _check_number(f"nodule image {name}", side, positive=True)

    @property
    def is_positive(self) -> bool:
        return self.label == self.positive_class

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], image_size: tuple[int, int] | None = None) -> NoduleReport:
        """The case JSON's `nodule` object ({label, probability, threshold, locations: [{x, y, w, h, score}],
        model_version, performance: {summary, ...} | None}) as a report record."""
        if not isinstance(data, Mapping):
            raise ReportInputError("nodule must be an object.")
        locations = data.get("locations") or []
        if not isinstance(locations, Sequence) or not all(isinstance(item, Mapping) for item in locations):
            raise ReportInputError("nodule locations must be a list of {x, y, w, h, score} objects.")
        try:
            marks = tuple(NoduleMark(**{key: item[key] for key in ("x", "y", "w", "h", "score")}) for item in locations)
        except KeyError as error:
            raise ReportInputError(f"a nodule location lacks {error.args[0]!r}.") from error
        performance = data.get("performance")
        return cls(
            label=data.get("label"),  # type: ignore[arg-type]  # checked in __post_init__
            probability=data.get("probability"),  # type: ignore[arg-type]
            threshold=data.get("threshold"),  # type: ignore[arg-type]
            model_version=data.get("model_version"),  # type: ignore[arg-type]
            marks=marks,
            performance=performance.get("summary") if isinstance(performance, Mapping) else None,
            image_size=image_size,
        )


@dataclass(frozen=True)
class ReportCase:
    """Everything a report shows about one analysed study. Images are encoded PNG (or JPEG) bytes."""

    report_id: str
    case_id: str
    created_at: datetime
    finding: str  # the model's label for this image, e.g. "PNEUMONIA" or "NORMAL"
    positive_class: str  # the abnormal class the model screens for, e.g. "PNEUMONIA"
    probabilities: Mapping[str, float]  # calibrated, one per class
    confidence: float  # calibrated probability of `finding`
    model: ModelCard
    image_png: bytes = field(repr=False)
    threshold: float | None = None  # decision threshold on the probability of `positive_class`
    patient: PatientDetails = field(default_factory=PatientDetails)
    study: Mapping[str, Any] = field(default_factory=dict, repr=False)  # DICOM tags and image facts
    uncertainty: UncertaintyDetails | None = None
    uncertain: bool = False
    ood: bool = False  # the image looks unlike the training data
    ood_reason: str | None = None
    scope_reason: str | None = None  # set when the film is outside the populations the model is validated on
    quality_warnings: Sequence[str] = ()
    similar_cases: Sequence[SimilarCase] = ()
    heatmap_png: bytes | None = field(default=None, repr=False)  # Grad-CAM overlay of the same image
    signed_by: str | None = None
    signed_at: datetime | None = None
    nodule: NoduleReport | None = None  # the second finding; None when no nodule model is served

    def __post_init__(self) -> None:
        for name in ("report_id", "case_id", "finding", "positive_class"):
            _check_text(name, getattr(self, name), MAX_ID_CHARS, required=True)
        if not isinstance(self.created_at, datetime):
            raise ReportInputError("created_at must be a datetime.")
        self._check_result()
        _check_image("image_png", self.image_png, required=True)
        _check_image("heatmap_png", self.heatmap_png)
        _check_text("ood_reason", self.ood_reason, MAX_NOTE_CHARS)
        _check_text("scope_reason", self.scope_reason, MAX_NOTE_CHARS)
        self._check_lists()
        self._check_signature()

    def _check_result(self) -> None:
        if not isinstance(self.probabilities, Mapping) or not self.probabilities:
            raise ReportInputError("probabilities must name at least one class.")
        for label, probability in self.probabilities.items():
            _check_text("probability class name", label, MAX_ID_CHARS, required=True)
            _check_probability(f"probability of {label}", probability)
        _check_probability("confidence", self.confidence)
        _check_probability("threshold", self.threshold)
        if not isinstance(self.model, ModelCard):
            raise ReportInputError("model must be a ModelCard.")
        if self.uncertainty is not None and not isinstance(self.uncertainty, UncertaintyDetails):
            raise ReportInputError("uncertainty must be an UncertaintyDetails or None.")
        if not isinstance(self.patient, PatientDetails):
            raise ReportInputError("patient must be a PatientDetails.")
        if not isinstance(self.study, Mapping):
            raise ReportInputError("study must be a mapping of tag name to value.")
        if self.nodule is not None and not isinstance(self.nodule, NoduleReport):
            raise ReportInputError("nodule must be a NoduleReport or None.")

    def _check_lists(self) -> None:
        if isinstance(self.quality_warnings, str) or len(self.quality_warnings) > MAX_QUALITY_WARNINGS:
            raise ReportInputError(f"quality_warnings must be a list of at most {MAX_QUALITY_WARNINGS} texts.")
        for warning in self.quality_warnings:
            _check_text("quality warning", warning, MAX_NOTE_CHARS, required=True)
        if len(self.similar_cases) > MAX_SIMILAR_CASES:
            raise ReportInputError(f"at most {MAX_SIMILAR_CASES} similar cases fit in a report.")
        if not all(isinstance(similar, SimilarCase) for similar in self.similar_cases):
            raise ReportInputError("similar_cases must hold SimilarCase items.")

    def _check_signature(self) -> None:
        _check_text("signed_by", self.signed_by, MAX_NAME_CHARS)
        if (self.signed_by is None or not self.signed_by.strip()) != (self.signed_at is None):
            raise ReportInputError("signed_by and signed_at must be given together.")
        if self.signed_at is not None and not isinstance(self.signed_at, datetime):
            raise ReportInputError("signed_at must be a datetime.")

    @property
    def is_positive(self) -> bool:
        return self.finding == self.positive_class

    @property
    def outside_scope(self) -> bool:
        return bool(self.scope_reason)

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None


@dataclass(frozen=True)
class ReportContext:
    """Where the report is printed: the institution's name and logo (from settings) and the page format.

    `extra_font_paths` are TrueType fonts (.ttf/.ttc) consulted, in order, for characters the bundled fonts lack.
    """

    institution_name: str = "CXR Workstation"
    logo_path: Path | None = None
    page_size: PageSize = "A4"
    extra_font_paths: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        _check_text("institution_name", self.institution_name, MAX_NAME_CHARS, required=True)
        if self.page_size not in get_args(PageSize):
            raise ReportInputError("page_size must be 'A4' or 'letter'.")
