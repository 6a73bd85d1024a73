"""Plain-text formatting of record values: dates, ages, DICOM values, numbers. None/blank in, None out."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

# What a report prints of machine-written notes (quality warnings, OOD reason, tag values): the record may hold more,
# but a report stays readable and its layout time bounded.
DISPLAY_NOTE_CHARS = 600
DISPLAY_WARNINGS = 20

_DICOM_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DICOM_AGE = re.compile(r"^(\d{3})([DWMY])$")
_DICOM_AGE_UNITS = {"D": "days", "W": "weeks", "M": "months", "Y": "years"}
_SEX_NAMES = {"M": "Male", "F": "Female", "O": "Other", "U": "Unknown"}
_CAMEL_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

# Labels for the DICOM keywords and image facts the imaging room records; others are split from their CamelCase.
TAG_LABELS = {
    "StudyInstanceUID": "Study instance UID",
    "SeriesInstanceUID": "Series instance UID",
    "SOPInstanceUID": "SOP instance UID",
    "SOPClassUID": "SOP class UID",
    "AccessionNumber": "Accession number",
    "StudyDate": "Study date",
    "StudyTime": "Study time",
    "StudyDescription": "Study description",
    "Modality": "Modality",
    "ViewPosition": "View position",
    "BodyPartExamined": "Body part",
    "Manufacturer": "Manufacturer",
    "ManufacturerModelName": "Scanner model",
    "InstitutionName": "Acquired at",
    "ReferringPhysicianName": "Referring physician",
    "PhotometricInterpretation": "Photometric interpretation",
    "TransferSyntaxUID": "Transfer syntax UID",
    "format": "Image format",
    "width": "Width (px)",
    "height": "Height (px)",
}
# Known metric names of the model card; others are title-cased.
METRIC_LABELS = {
    "auroc": "AUROC",
    "roc_auc": "AUROC",
    "auprc": "AUPRC",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "recall": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision (PPV)",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1 score",
    "ece": "Calibration error (ECE)",
    "brier": "Brier score",
    "threshold": "Decision threshold",
    "n": "Test images",
    "n_test": "Test images",
}


def text_or_none(value: Any) -> str | None:
    """The stripped text of a value, or None for None, blank text and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def format_datetime(value: datetime) -> str:
    """`2026-03-14 10:32 UTC` for aware values (converted to UTC), `2026-03-14 10:32` for naive ones."""
    if value.tzinfo is None:
        return value.strftime("%Y-%m-%d %H:%M")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_date(value: date | str | None) -> str | None:
    """ISO date for dates and DICOM DA strings (YYYYMMDD); other text as given."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = text_or_none(value)
    if text is None:
        return None
    match = _DICOM_DATE.match(text)
    return f"{match[1]}-{match[2]}-{match[3]}" if match else text


def format_age(value: int | str | None) -> str | None:
    """`45 years` for whole numbers and DICOM AS strings (045Y); other text as given."""
    if isinstance(value, int):
        return f"{value} year" if value == 1 else f"{value} years"
    text = text_or_none(value)
    if text is None:
        return None
    if text.isdigit():
        return format_age(int(text))
    match = _DICOM_AGE.match(text.upper())
    if match:
        return f"{int(match[1])} {_DICOM_AGE_UNITS[match[2]]}"
    return text


def format_sex(value: str | None) -> str | None:
    text = text_or_none(value)
    if text is None:
        return None
    return _SEX_NAMES.get(text.upper(), text)


def format_person_name(value: str | None) -> str | None:
    """DICOM PN (`Family^Given^Middle^Prefix^Suffix`) as `Family, Given Middle`; other text as given."""
    text = text_or_none(value)
    if text is None or "^" not in text:
        return text
    family, *rest = (part.strip() for part in text.split("^"))
    given = " ".join(part for part in rest[:2] if part)
    return f"{family}, {given}" if family and given else family or given or None


def tag_label(keyword: str) -> str:
    """A readable label for a DICOM keyword or metadata key."""
    if keyword in TAG_LABELS:
        return TAG_LABELS[keyword]
    words = _CAMEL_WORD.findall(keyword.replace("_", " ")) or [keyword]
    label = " ".join(word if word.isupper() and len(word) > 1 else word.lower() for word in words)
    return label[:1].upper() + label[1:]


def format_tag_value(keyword: str, value: Any) -> str | None:
    text = text_or_none(value)
    if text is None:
        return None
    if keyword.endswith("Date"):
        return format_date(text)
    if keyword.endswith("Name") and "^" in text:
        return format_person_name(text)
    return text


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name.lower(), tag_label(name))


def format_metric(value: Any) -> str | None:
    """Three decimals for fractions and scores, whole numbers as they are, anything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else None
    return text_or_none(value)


def format_percent(probability: float) -> str:
    """`93%`; values that would round to 0% or 100% say `<1%` / `>99%` so nothing reads as certain."""
    percent = probability * 100
    if 0 < percent < 0.5:
        return "<1%"
    if 99.5 <= percent < 100:
        return ">99%"
    return f"{percent:.0f}%"


def display_label(label: str) -> str:
    """`PNEUMONIA` -> `Pneumonia`, `ground_glass` -> `Ground glass` (labels keep their own case when mixed)."""
    words = label.replace("_", " ").strip()
    return words.capitalize() if words.isupper() or words.islower() else words


def class_text(label: str, positive_class: str) -> str:
    """How a class of the model is named for people. The negative class says what the model looked for and did not
    find ("No pneumonia-like opacity found"), never "Normal": the model does not rule out other disease."""
    if label == positive_class:
        return display_label(label)
    return f"No {display_label(positive_class).lower()}-like opacity found"


def clip(text: str, max_chars: int = DISPLAY_NOTE_CHARS) -> str:
    """`text` stripped, and cut at `max_chars` with an ellipsis when longer."""
    text = text.strip()
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def displayed_warnings(warnings: Sequence[str]) -> list[str]:
    """The first DISPLAY_WARNINGS warnings, each clipped, and a count of the rest."""
    shown = [clip(warning) for warning in warnings[:DISPLAY_WARNINGS]]
    hidden = len(warnings) - len(shown)
    if hidden > 0:
        shown.append(f"… and {hidden} more in the case record.")
    return shown
