"""What the reports say in words: the disclaimer, confidence in plain terms, recommendations, patient language.

Kept apart from layout so the clinical wording can be reviewed (and translated) in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.formatting import display_label, format_percent
from reports.records import NoduleReport, ReportCase

DISCLAIMER = "AI decision support for review by a clinician. This is not a diagnosis."
PATIENT_DISCLAIMER = (
    "This report was made with the help of a computer program (artificial intelligence, AI). "
    "A doctor checks the result. It is not a diagnosis on its own."
)
HIGH_CONFIDENCE = 0.90
MODERATE_CONFIDENCE = 0.75

# Plain-language names of the conditions the models screen for; other labels fall back to their display form.
PLAIN_CONDITIONS = {
    "PNEUMONIA": "pneumonia (an infection of the lungs)",
    "NODULE": "a lung nodule (a small round spot in the lung)",
}


@dataclass(frozen=True)
class ConfidenceStatement:
    level: str  # "High", "Moderate", "Low" or "Uncertain"
    explanation: str


def confidence_statement(case: ReportCase) -> ConfidenceStatement:
    """The calibrated confidence in words a referring clinician reads at a glance."""
    percent = format_percent(case.confidence)
    if case.uncertain:
        return ConfidenceStatement(
            "Uncertain",
            f"The AI flagged this result as uncertain (estimated probability {percent}); "
            "it should carry little weight until a radiologist has read the image.",
        )
    if case.confidence >= HIGH_CONFIDENCE:
        level = "High"
    elif case.confidence >= MODERATE_CONFIDENCE:
        level = "Moderate"
    else:
        level = "Low"
    return ConfidenceStatement(level, f"The AI's calibrated estimate that this result is correct is {percent}.")


def clinical_finding_sentence(case: ReportCase) -> str:
    condition = display_label(case.positive_class).lower()
    if case.is_positive:
        return f"Findings suggestive of {condition}."
    return f"No {condition}-like opacity found by the AI. This does not rule out other disease."


def clinical_recommendations(case: ReportCase) -> list[str]:
    """Recommendations for the referring clinician; clinical correlation always comes first."""
    condition = display_label(case.positive_class).lower()
    items = ["Correlate with the clinical picture (history, examination, laboratory results)."]
    if case.is_positive:
        items.append(
            f"Consider follow-up imaging to confirm {condition} and document its resolution, as clinically indicated."
        )
    elif case.uncertain:
        items.append("Consider follow-up imaging, or await the radiologist's report: the AI result is uncertain.")
    else:
        items.append("A negative AI result does not exclude disease; re-image if symptoms persist or worsen.")
    nodule_advice = clinical_nodule_recommendation(case.nodule) if case.nodule is not None else None
    if nodule_advice:
        items.append(nodule_advice)
    if case.ood:
        items.append("Rely on the radiologist's read rather than the AI: the image is unlike the AI's training images.")
    if case.outside_scope:
        items.append("Rely on the radiologist's read: the AI has not been validated on patients like this one.")
    if case.quality_warnings:
        items.append("Image quality limits the assessment; consider repeating the radiograph if it is non-diagnostic.")
    if not case.is_signed:
        items.append("This result has not yet been reviewed by a radiologist.")
    return items


def patient_condition(case: ReportCase) -> str:
    return PLAIN_CONDITIONS.get(case.positive_class.upper(), display_label(case.positive_class).lower())


def patient_result_sentence(case: ReportCase) -> str:
    condition = patient_condition(case)
    if case.is_positive:
        return f"The computer program found signs on your X-ray that can be seen with {condition}."
    return (
        f"The computer program did not find the kind of shadow on your X-ray that {condition} can cause. "
        "It does not look for other illnesses."
    )


def patient_certainty_title(case: ReportCase) -> str:
    """With two findings on the page, say which one the sureness is about (the first: the nodule part has none)."""
    if case.nodule is None:
        return "How sure was it?"
    return f"How sure was it about {patient_condition(case).split(' (')[0]}?"


def patient_certainty_sentences(case: ReportCase) -> list[str]:
    """How sure the program was, as a natural frequency ("about 9 times out of 10") rather than a probability."""
    if case.outside_scope:
        return [
            "The computer program has not been tested on X-rays of people like you, so its result may not apply.",
            "A doctor will look at your X-ray especially carefully.",
        ]
    if case.uncertain or case.ood:
        return [
            "The computer program was not sure about your X-ray.",
            "This happens sometimes. It means a doctor will look at your X-ray especially carefully.",
        ]
    out_of_ten = max(1, min(9, round(case.confidence * 10)))
    sureness = "very sure" if case.confidence >= HIGH_CONFIDENCE else "fairly sure"
    if case.confidence < MODERATE_CONFIDENCE:
        sureness = "only a little sure"
    return [
        f"The program was {sureness} about this result.",
        f"When it is this sure, it is right about {out_of_ten} times out of 10. "
        "It can still be wrong, which is why a doctor checks every result.",
    ]


def no_nodule_model_sentence(case: ReportCase) -> str:
    """Said where the nodule finding would be, when the case has none (no nodule model was served for it)."""
    return f"No nodule model is served; this report covers {display_label(case.positive_class).lower()} only."


def nodule_finding_text(nodule: NoduleReport) -> str:
    """The nodule model's label as a radiologist reads it."""
    return "Lung nodule or mass" if nodule.is_positive else "No lung nodule or mass found"


def nodule_marks_text(nodule: NoduleReport) -> str:
    count = len(nodule.marks)
    if count == 0:
        return "No location marked."
    return f"{count} location{'s' if count > 1 else ''} marked on the film (box and score)."


def nodule_performance_text(nodule: NoduleReport) -> str:
    """The measured operating point in one sentence, or that the model card states none (never silence)."""
    return nodule.performance or "Not stated: the nodule model's card gives no measured sensitivity."


def clinical_nodule_sentence(nodule: NoduleReport) -> str:
    if nodule.is_positive:
        return "Findings suggestive of a lung nodule or mass."
    return "No lung nodule or mass found by the AI. This does not rule one out: small nodules are often missed."


def clinical_nodule_recommendation(nodule: NoduleReport) -> str | None:
    if not nodule.is_positive:
        return None
    return (
        "Compare the marked nodule or mass with prior imaging; consider chest CT to characterise it, "
        "as clinically indicated."
    )


def patient_nodule_sentence(case: ReportCase) -> str:
    """The second finding in plain words: no numbers, and that most spots are harmless."""
    nodule = case.nodule
    if nodule is None:
        condition = PLAIN_CONDITIONS.get(case.positive_class.upper(), display_label(case.positive_class).lower())
        return f"Your X-ray was not checked for lung nodules; this report is about {condition.split(' (')[0]} only."
    if nodule.is_positive:
        return (
            f"It also found a spot that can be {PLAIN_CONDITIONS['NODULE']}. "
            "Many such spots are harmless; your doctor will decide if you need more tests."
        )
    return f"It also looked for {PLAIN_CONDITIONS['NODULE']} and did not find one. It can miss small spots."


def patient_next_steps(case: ReportCase) -> list[str]:
    steps = []
    if case.is_signed:
        steps.append("A doctor has checked this result. Your doctor will talk with you about what it means for you.")
    else:
        steps.append("A doctor will check this result and then talk with you about what it means for you.")
    if case.is_positive or case.uncertain:
        steps.append("Your doctor may ask for another X-ray or other tests to find out more.")
    if case.nodule is not None and case.nodule.is_positive:
        steps.append("Your doctor may suggest a CT scan (a detailed X-ray picture) to look at the spot more closely.")
    if case.quality_warnings:
        steps.append("The picture was not perfectly clear, so you may be asked to have the X-ray taken again.")
    steps.append("Write down any questions you have and bring them to your next appointment.")
    steps.append(
        "If you feel worse, find it hard to breathe, have chest pain or a high fever, "
        "contact your doctor straight away or call emergency services."
    )
    return steps


def nodule_performance_sentence(sensitivity: float, false_positives_per_film: float) -> str:
    """The nodule model's measured operating point in words a clinician reads in a second (from its model card)."""
    found = round(sensitivity * 10)
    marks = round(false_positives_per_film, 1)
    mark_word = "false mark" if marks == 1 else "false marks"
    return (
        f"Finds about {found} of 10 nodules or masses, at about {marks:g} {mark_word} per film "
        "(measured on test films)."
    )
