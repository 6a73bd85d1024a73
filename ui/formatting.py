"""Pure helpers that turn backend JSON into words and form values (no Streamlit, so they are easy to test)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

SEX_LABELS: dict[str, str] = {"F": "Female", "M": "Male", "O": "Other"}
PATIENT_FIELDS: tuple[str, ...] = ("patient_id", "name", "age", "sex", "clinical_history")
_DICOM_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_DAYS_PER_UNIT: dict[str, float] = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}


@dataclass(frozen=True)
class Notice:
    """One plain-language statement about a result, with how loudly to show it."""

    severity: Severity
    title: str
    text: str


def percent(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def dicom_person_name(value: Any) -> str:
    """DICOM PN `Family^Given^Middle^Prefix^Suffix` -> `Family, Given Middle` (plain text passes through)."""
    text = str(value or "").strip()
    if "^" not in text:
        return text
    family, given, middle, *_ = [*text.split("^"), "", "", ""]
    rest = " ".join(part for part in (given, middle) if part)
    return f"{family}, {rest}" if family and rest else family or rest


def dicom_age_years(value: Any) -> int | None:
    """DICOM AS (`045Y`, `006M`, `012W`, `030D`) or a bare number -> whole years; None when unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value) if 0 <= value < 150 else None
    match = _DICOM_AGE.match(str(value))
    if not match:
        return None
    days = int(match.group(1)) * _DAYS_PER_UNIT[(match.group(2) or "Y").upper()]
    years = int(days // 365.25)
    return years if years < 150 else None


def dicom_date(value: Any) -> date | None:
    """DICOM DA (`YYYYMMDD`) or ISO `YYYY-MM-DD` -> date; None when absent or malformed."""
    text = str(value or "").strip().replace("-", "")
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def age_from_dates(birth: date | None, on: date | None) -> int | None:
    if birth is None or on is None or on < birth:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def patient_from_tags(tags: dict[str, Any]) -> dict[str, Any]:
    """Patient form values from DICOM tags: only fields the tags actually provide."""
    values: dict[str, Any] = {}
    if str(tags.get("PatientID") or "").strip():
        values["patient_id"] = str(tags["PatientID"]).strip()
    if name := dicom_person_name(tags.get("PatientName")):
        values["name"] = name
    age = dicom_age_years(tags.get("PatientAge"))
    if age is None:
        study_day = dicom_date(tags.get("StudyDate")) or date.today()
        age = age_from_dates(dicom_date(tags.get("PatientBirthDate")), study_day)
    if age is not None:
        values["age"] = age
    sex = str(tags.get("PatientSex") or "").strip().upper()[:1]
    if sex in SEX_LABELS:
        values["sex"] = sex
    return values


def patient_payload(form: dict[str, Any]) -> dict[str, Any]:
    """The `patient` JSON of `POST /v1/studies`: stripped strings, no empty fields (the backend stores no blanks)."""
    payload: dict[str, Any] = {}
    for field in PATIENT_FIELDS:
        value = form.get(field)
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            continue
        payload[field] = int(value) if field == "age" else value
    return payload


def positive_class(probabilities: dict[str, Any]) -> str | None:
    """The class the threshold applies to: the second of two (the backend keeps the checkpoint's class order)."""
    names = list(probabilities)
    return str(names[1]) if len(names) == 2 else None


def class_text(label: str, positive: str | None) -> str:
    """A class as people read it. The negative says what the model looked for and did not find, never "normal":
    the model does not rule out other disease."""
    if positive is None or label == positive:
        return label
    return f"No {positive.lower()}-like opacity found"


def finding_text(case: dict[str, Any]) -> str:
    """The headline: the model's finding, or why no finding is offered."""
    if case.get("ood"):
        return "No reliable finding"
    prediction = str(case.get("prediction") or "")
    if not prediction:
        return "No finding returned"
    return class_text(prediction, positive_class(case.get("probabilities") or {}))


def result_notices(case: dict[str, Any]) -> list[Notice]:
    """Out-of-distribution, uncertainty and image-quality flags explained in words, loudest first."""
    notices: list[Notice] = []
    if case.get("ood"):
        reason = str(case.get("ood_reason") or "it differs from the training images").rstrip(".")
        notices.append(
            Notice(
                "error",
                "Image outside what the model knows",
                "This image does not look like the frontal chest radiographs the model was trained on: "
                f"{reason}. The model's output is not a usable finding; read the image yourself. "
                "The case has been sent for expert review.",
            )
        )
    if case.get("scope") == "outside_validated":
        reason = str(case.get("scope_reason") or "the patient is outside the validated populations").rstrip(".")
        notices.append(
            Notice(
                "warning",
                "Outside the validated populations",
                f"{reason[0].upper()}{reason[1:]}. The model is validated on frontal films of children aged 1-5 at "
                "the Kermany hospital and of adults at the NIH Clinical Center; for this patient its result is not "
                "validated. The case is queued for expert review.",
            )
        )
    if case.get("uncertain") and not case.get("ood"):
        notices.append(
            Notice(
                "warning",
                "The model is unsure",
                f"Calibrated confidence is only {percent(case.get('confidence'))}"
                f"{spread_clause(case.get('uncertainty'))}, so by the workstation's uncertainty policy this "
                "finding could go either way. Treat it as a weak hint; the case is queued for expert annotation.",
            )
        )
    messages = [
        str(warning.get("message") if isinstance(warning, dict) else warning)
        for warning in case.get("quality_warnings") or []
        # review requests share the list with the image checks; they are shown with the review actions
        if not (isinstance(warning, dict) and warning.get("code") == REVIEW_NOTE_CODE)
    ]
    if len(messages) == 1:
        notices.append(Notice("info", "Image quality", messages[0]))
    elif messages:  # one box with a list reads better than a stack of boxes
        notices.append(Notice("info", "Image quality", "\n".join(f"\n- {message}" for message in messages)))
    return notices


def spread_clause(uncertainty: dict[str, Any] | None) -> str:
    """Mention the spread of repeated predictions only when there is one worth mentioning."""
    std = float((uncertainty or {}).get("std") or 0.0)
    return f" and repeated predictions spread by ±{percent(std)}" if std >= 0.05 else ""


def uncertainty_summary(uncertainty: dict[str, Any] | None) -> str:
    if not uncertainty:
        return "The backend did not report an uncertainty estimate for this case."
    method = str(uncertainty.get("method") or "repeated passes").replace("_", " ")
    return (
        f"Estimated from {method}: predictive entropy {float(uncertainty.get('entropy', 0)):.3f} "
        f"(0 = certain), standard deviation of the probability {float(uncertainty.get('std', 0)):.3f}."
    )


def short_datetime(value: Any) -> str:
    """ISO timestamps as `2026-11-29 22:45` (local reading time); other values unchanged."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(value or "")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def scalar_items(data: dict[str, Any]) -> dict[str, Any]:
    """The scalar (str/number/bool) entries of a dict, for compact key-value tables."""
    return {key: value for key, value in data.items() if isinstance(value, str | int | float | bool)}


# --- model card -------------------------------------------------------------------------------------------------

METRIC_ORDER: tuple[str, ...] = ("auroc", "accuracy", "sensitivity", "specificity", "precision", "f1", "auprc")
NOT_METRICS: frozenset[str] = frozenset({"threshold", "temperature", "best_epoch", "epoch", "seed"})
REVIEW_NOTE_CODE = "review_requested"  # the backend keeps review requests in the case's notes list


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_metrics(split: dict[str, Any]) -> dict[str, str]:
    """One evaluation split -> metric name -> "0.875 (0.849–0.899)" (with the interval when the card has one)."""
    nested = split.get("metrics")
    source = nested if isinstance(nested, dict) else split
    intervals = split.get("intervals") if isinstance(split.get("intervals"), dict) else {}
    cells: dict[str, str] = {}
    for name, value in source.items():
        if not _is_number(value) or name in NOT_METRICS or name.startswith("n_"):
            continue
        cell = f"{value:.3f}"
        bounds = intervals.get(name)
        if isinstance(bounds, list | tuple) and len(bounds) == 2 and all(_is_number(b) for b in bounds):
            cell += f" ({bounds[0]:.3f}–{bounds[1]:.3f})"
        cells[name] = cell
    ordered = [name for name in METRIC_ORDER if name in cells] + [n for n in cells if n not in METRIC_ORDER]
    return {name: cells[name] for name in ordered}


def split_description(name: str, split: dict[str, Any]) -> str:
    """A line on how a split was evaluated: dataset, size, threshold, date (what the card says, nothing more)."""
    parts = [str(split["dataset"])] if split.get("dataset") else []
    if _is_number(split.get("n_images")):
        parts.append(f"{int(split['n_images'])} images")
    if _is_number(split.get("threshold")):
        parts.append(f"at threshold {float(split['threshold']):.3f}")
    if split.get("evaluated_at"):
        parts.append(f"evaluated {short_datetime(split['evaluated_at'])}")
    return f"{name}: " + ", ".join(parts) if parts else ""


def review_notes(case: dict[str, Any]) -> list[str]:
    """Review requests recorded on the case (kept by the backend beside the image-quality warnings)."""
    notes = case.get("quality_warnings") or []
    messages = [str(n.get("message", "")) for n in notes if isinstance(n, dict) and n.get("code") == REVIEW_NOTE_CODE]
    reason = case.get("review_reason")  # the latest request's reason; absent for annotators
    return [*messages, f"Reason: {reason}"] if reason else messages


# --- learning loop: claims, reads, statistics, retraining jobs ------------------------------------------------------

EXTRA_LABELS: dict[str, str] = {"OTHER": "another finding", "UNGRADABLE": "the film cannot be read"}
VIEW_TAGS: tuple[str, ...] = ("ViewPosition",)


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp from the backend as an aware datetime (naive ones are UTC); None when unreadable."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def claim_expiry_text(expires_at: Any, now: datetime | None = None) -> str:
    """When the annotator's lock on a case lapses, as they read it: "expires in 14 min (at 23:58 UTC)"."""
    moment = parse_time(expires_at)
    if moment is None:
        return "expiry unknown"
    left = (moment - (now or datetime.now(UTC))).total_seconds()
    if left <= 0:
        return f"expired at {moment.astimezone(UTC):%H:%M:%S} UTC"
    return f"expires in {duration(left)} (at {moment.astimezone(UTC):%H:%M:%S} UTC)"


def label_option(label: str) -> str:
    """A read's label as the radio shows it: the class name, with what OTHER and UNGRADABLE mean."""
    meaning = EXTRA_LABELS.get(label)
    return f"{label} ({meaning})" if meaning else label


def film_facts(case: dict[str, Any]) -> str:
    """What a reader may know about the film besides its pixels: age, sex, view; never who the patient is.
    Reads a claimed case (`age`, `sex` at the top) and a case record (`patient`) alike."""
    patient = case.get("patient") or {}
    study = case.get("study") or {}
    age = next((v for v in (case.get("age"), patient.get("age"), study.get("patient_age_years")) if v is not None),
               dicom_age_years(study.get("PatientAge")))  # fmt: skip
    sex = SEX_LABELS.get(str(case.get("sex") or patient.get("sex") or study.get("PatientSex") or "").upper()[:1])
    facts = [f"age {age}" if age is not None else "", sex.lower() if sex else ""]
    facts += [f"view {study[tag]}" for tag in VIEW_TAGS if study.get(tag)]
    return " · ".join(fact for fact in facts if fact) or "no age, sex or view recorded"


def image_boxes(canvas_boxes: list[dict[str, Any]], scale: float, size: tuple[int, int]) -> list[dict[str, float]]:
    """Boxes drawn on the displayed film (`left`, `top`, `width`, `height` in its pixels) -> the `BoxIn` shape in
    pixels of the stored image (`scale` = stored / displayed), clipped to the film; slivers are dropped."""
    width, height = size
    boxes: list[dict[str, float]] = []
    for box in canvas_boxes:
        left, top = max(0.0, box["left"] * scale), max(0.0, box["top"] * scale)
        right = min(float(width), (box["left"] + box["width"]) * scale)
        bottom = min(float(height), (box["top"] + box["height"]) * scale)
        if right - left >= 1 and bottom - top >= 1:
            boxes.append({"x": round(left, 1), "y": round(top, 1), "w": round(right - left, 1),
                          "h": round(bottom - top, 1)})  # fmt: skip
    return boxes


def counted(n: int, noun: str) -> str:
    """ "1 box", "2 boxes", "0 cases"."""
    plural = noun + ("es" if noun.endswith(("s", "x")) else "s")
    return f"{n} {noun if n == 1 else plural}"


def box_text(box: dict[str, Any]) -> str:
    return f"{box['w']:.0f}×{box['h']:.0f} px at ({box['x']:.0f}, {box['y']:.0f})"


def read_summary(read: dict[str, Any]) -> dict[str, str]:
    """One expert read as a table row."""
    boxes = read.get("boxes") or []
    return {
        "Reader": str(read.get("annotator") or ""),
        "Label": str(read.get("label") or ""),
        "Confidence": f"{read['confidence']}/5" if read.get("confidence") is not None else "–",
        "Boxes": "; ".join(box_text(box) for box in boxes) if boxes else "none",
        "Comment": str(read.get("comment") or ""),
        "Time": duration(read.get("seconds")) if read.get("seconds") is not None else "–",
        "When": short_datetime(read.get("created_at")),
    }


def case_state_text(state: str, final: dict[str, Any] | None) -> str:
    """Where a case stands after the caller's read, in words."""
    if final:
        how = "the readers agreed" if final.get("source") == "agreement" else "adjudicated by a senior"
        return f"Final label: {final['label']} ({how})."
    return {
        "open": "Waiting for the second independent read; the other read stays hidden until the label is final.",
        "adjudication": "The reads disagree: the case waits for adjudication by a senior reader.",
        "not_queued": "This case is not in the annotation queue.",
    }.get(state, f"Case state: {state}.")


def kappa_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def annotator_stats_row(row: dict[str, Any]) -> dict[str, str]:
    return {
        "Reader": str(row.get("annotator") or ""),
        "Reads": str(row.get("reads", 0)),
        "Agrees with the other reader": percent(row.get("agreement_rate")),
        "Kappa vs final": kappa_text(row.get("kappa_vs_final")),
        "Median time per read": duration(row.get("median_seconds")),
    }


def overall_stats(overall: dict[str, Any]) -> dict[str, str]:
    """The whole team's figures, as metric label -> value."""
    return {
        "All reads": str(overall.get("reads", 0)),
        "Final labels": str(overall.get("final_labels", 0)),
        "Double-read cases": str(overall.get("double_read_cases", 0)),
        "Readers agree": percent(overall.get("agreement_rate")),
        "Kappa between readers": kappa_text(overall.get("kappa_between_readers")),
        "Median read time": duration(overall.get("median_seconds")),
    }


def model_stats_row(row: dict[str, Any]) -> dict[str, str]:
    return {
        "Model version": str(row.get("model_version") or ""),
        "Final labels": str(row.get("n", 0)),
        "Accuracy": percent(row.get("accuracy"), 1),
        "Sensitivity": percent(row.get("sensitivity"), 1),
        "Specificity": percent(row.get("specificity"), 1),
    }


def job_outcome(job: dict[str, Any]) -> str:
    """Why a retraining job ended as it did, or how far it is."""
    if job.get("error"):
        return f"Failed: {job['error']}"
    if job.get("reason"):
        return str(job["reason"])
    step = (job.get("progress") or {}).get("step")
    return f"{job.get('state', '')}: {step}" if step else str(job.get("state") or "")


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested numbers (`{"holdout": {"n": 0}, "tolerance": 0.005}`) as "holdout · n": "0", "tolerance": "0.0050"."""
    cells: dict[str, str] = {}
    for name, value in metrics.items():
        key = f"{prefix} · {name}" if prefix else str(name)
        if isinstance(value, dict):
            cells.update(flat_metrics(value, key))
        elif _is_number(value):
            cells[key] = str(value) if isinstance(value, int) else f"{value:.4f}"
    return cells


def is_comparison(part: Any) -> bool:
    """A job metrics entry that holds the champion's and the challenger's figure on one evaluation set."""
    return isinstance(part, dict) and ("champion" in part or "challenger" in part)


def four_places(value: Any) -> str:
    return f"{value:.4f}" if _is_number(value) else "–"


def comparison_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """A retraining job's champion-versus-challenger figures, one row per evaluation set (4 decimals: the promotion
    tolerance is a few thousandths)."""
    return [
        {"Evaluated on": str(name), "Metric": str(part.get("metric") or ""), "n": str(part.get("n", "")),
         "Champion": four_places(part.get("champion")), "Challenger": four_places(part.get("challenger"))}
        for name, part in metrics.items() if is_comparison(part)
    ]  # fmt: skip


def job_row(job: dict[str, Any]) -> dict[str, str]:
    return {
        "Job": str(job.get("id") or "")[:8],
        "State": str(job.get("state") or ""),
        "Trigger": str(job.get("trigger") or ""),
        "Requested by": str(job.get("requested_by") or "–"),
        "Created": short_datetime(job.get("created_at")),
        "Finished": short_datetime(job.get("finished_at")) if job.get("finished_at") else "–",
        "Outcome": job_outcome(job),
    }
