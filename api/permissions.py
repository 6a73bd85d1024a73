"""THE role/permission table of the API, and what each role may see of a case.

Every route the app serves is looked up here by (HTTP method, route path template) before its handler runs
(api/security.py: `AuthenticationMiddleware`, then the app-wide `authorize` dependency): public routes need nothing;
every other route needs a valid token or API key whose role is listed, else 401 (who are you?) or 403 (not for your
role). A route missing from the table is denied to everyone, admins included, so a new endpoint is closed until
someone adds its line here (tests/test_authz_matrix.py fails until then).

Roles
- radiologist: analyses studies, reads cases with their patient fields, reports, signs, sends for expert review.
- annotator: works the annotation queue on images; never sees who the patient is (`redact_for`).
- senior: an annotator who also settles two disagreeing reads (adjudication), sees every reader's statistics and
  exports the final labels.
- admin: everything, including users, API keys, model operations and the audit trail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.schemas import CaseOut, Role


@dataclass(frozen=True)
class Access:
    """Who may call one route: anyone (`public`), or a signed-in caller whose role is in `roles`; with `loopback`,
    also an anonymous caller on this machine (no proxy in between: api/security.py `is_anonymous_loopback`)."""

    roles: frozenset[Role] = frozenset()
    public: bool = False
    loopback: bool = False

    def allows(self, role: Role | str) -> bool:
        return role in self.roles


PUBLIC = Access(public=True)
EVERY_ROLE = Access(frozenset(Role))
CLINICAL = Access(frozenset({Role.RADIOLOGIST, Role.ADMIN}))
IMAGE_READERS = Access(frozenset({Role.RADIOLOGIST, Role.ANNOTATOR, Role.SENIOR, Role.ADMIN}))  # redacted per role
READERS = Access(frozenset({Role.ANNOTATOR, Role.SENIOR, Role.ADMIN}))  # expert reads of queued cases
ADJUDICATORS = Access(frozenset({Role.SENIOR, Role.ADMIN}))
NODULE_REVIEWERS = Access(frozenset({Role.RADIOLOGIST, Role.SENIOR, Role.ADMIN}))  # read the model's nodule marks
ADMIN_ONLY = Access(frozenset({Role.ADMIN}))

# (method, route path template) -> who may call it. HEAD is looked up as GET.
ROUTE_PERMISSIONS: Mapping[tuple[str, str], Access] = {
    # Probes, docs and the login itself: open.
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("POST", "/v1/auth/login"): PUBLIC,
    # Any signed-in caller: who am I, own password, which model, how is the machine.
    ("GET", "/v1/auth/me"): EVERY_ROLE,
    ("POST", "/v1/auth/logout"): EVERY_ROLE,
    ("POST", "/v1/auth/password"): EVERY_ROLE,
    ("GET", "/model/info"): EVERY_ROLE,
    ("GET", "/v1/system/stats"): EVERY_ROLE,
    # Prometheus scrapes with an API key of any role, or anonymously from this machine; never anonymous from outside.
    ("GET", "/metrics"): Access(frozenset(Role), loopback=True),
    # Clinical work: analysis, patient-identifying data, reports, sign-off.
    ("POST", "/predict"): CLINICAL,
    ("POST", "/predict/batch"): CLINICAL,
    ("POST", "/v1/studies"): CLINICAL,
    ("POST", "/v1/dicom/inspect"): CLINICAL,  # answers the DICOM patient tags
    ("GET", "/v1/cases"): CLINICAL,  # filterable by patient id
    ("GET", "/v1/cases/{case_id}/similar"): CLINICAL,
    ("GET", "/similar-cases/{case_id}"): CLINICAL,  # older path of the same
    ("GET", "/v1/reference/{ref_id}/thumbnail"): CLINICAL,  # reference-library images shown with similar cases
    ("GET", "/v1/cases/{case_id}/report"): CLINICAL,  # PDFs print the patient's name
    ("GET", "/v1/cases/{case_id}/dicom"): CLINICAL,  # DICOM objects carry the patient module
    ("GET", "/v1/cases/{case_id}/fhir"): CLINICAL,  # the FHIR Bundle holds the Patient
    ("POST", "/v1/cases/{case_id}/review"): CLINICAL,
    ("POST", "/v1/cases/{case_id}/sign"): CLINICAL,
    # The learning loop: radiologists send cases, expert readers claim and read them (blind: api/learning.py),
    # seniors settle disagreements, admins retrain.
    ("GET", "/v1/queue"): READERS,
    ("POST", "/v1/queue"): CLINICAL,
    ("POST", "/v1/queue/claim"): READERS,
    ("POST", "/v1/queue/claims/{claim_id}/renew"): READERS,
    ("POST", "/v1/queue/claims/{claim_id}/release"): READERS,
    ("POST", "/v1/annotations"): READERS,
    ("GET", "/v1/annotations/stats"): EVERY_ROLE,  # everyone sees their own statistics
    ("GET", "/v1/annotations/export"): ADJUDICATORS,
    ("GET", "/v1/annotations/{case_id}"): IMAGE_READERS,
    ("POST", "/v1/annotations/{case_id}/adjudicate"): ADJUDICATORS,
    # Nodule marks: a clinician or senior confirms, rejects or adds them (an expert label); annotators read queued
    # cases through their claims instead.
    ("POST", "/v1/cases/{case_id}/nodule-review"): NODULE_REVIEWERS,
    ("GET", "/v1/cases/{case_id}/nodule-review"): NODULE_REVIEWERS,
    ("POST", "/v1/retraining"): ADMIN_ONLY,
    ("GET", "/v1/retraining"): ADMIN_ONLY,
    ("GET", "/v1/retraining/{job_id}"): ADMIN_ONLY,
    # Model operations: the registry's versions, promote and rollback (served at once, audited).
    ("GET", "/v1/models"): ADMIN_ONLY,
    ("GET", "/v1/models/{name}/versions/{version}"): ADMIN_ONLY,
    ("POST", "/v1/models/{name}/promote"): ADMIN_ONLY,
    ("POST", "/v1/models/{name}/rollback"): ADMIN_ONLY,
    # Images and one case at a time: annotators too (the case comes back without patient identity).
    ("GET", "/v1/cases/{case_id}"): IMAGE_READERS,
    ("GET", "/v1/cases/{case_id}/image"): IMAGE_READERS,
    ("GET", "/v1/cases/{case_id}/heatmap"): IMAGE_READERS,  # expert readers: after their read (blind reading)
    # Administration.
    ("GET", "/v1/users"): ADMIN_ONLY,
    ("POST", "/v1/users"): ADMIN_ONLY,
    ("GET", "/v1/users/{user_id}"): ADMIN_ONLY,
    ("PATCH", "/v1/users/{user_id}"): ADMIN_ONLY,
    ("DELETE", "/v1/users/{user_id}"): ADMIN_ONLY,
    ("GET", "/v1/api-keys"): ADMIN_ONLY,
    ("POST", "/v1/api-keys"): ADMIN_ONLY,
    ("DELETE", "/v1/api-keys/{key_id}"): ADMIN_ONLY,
    ("GET", "/v1/audit"): ADMIN_ONLY,
    ("GET", "/v1/audit/verify"): ADMIN_ONLY,
    ("GET", "/v1/audit/export"): ADMIN_ONLY,
    ("GET", "/v1/monitoring/summary"): ADMIN_ONLY,
    ("GET", "/v1/monitoring/drift"): ADMIN_ONLY,
    ("GET", "/v1/alerts"): ADMIN_ONLY,
    ("POST", "/v1/alerts/{alert_id}/acknowledge"): ADMIN_ONLY,
}


def access_for(method: str, path: str) -> Access | None:
    """The table's entry for a route (None: not listed, so denied)."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    return ROUTE_PERMISSIONS.get((method, path))


# --- what a role sees of a case ---------------------------------------------------------------------------------------

ROLES_SEEING_PATIENT_IDENTITY: frozenset[Role] = frozenset({Role.RADIOLOGIST, Role.ADMIN})
# PatientOut fields that identify a person (clinical history is free text and may name them too).
IDENTIFYING_PATIENT_FIELDS: tuple[str, ...] = ("patient_id", "name", "birth_date", "clinical_history")
# Study metadata keys other roles keep. An allowlist, so a DICOM tag added to the metadata later stays hidden.
NON_IDENTIFYING_STUDY_KEYS: frozenset[str] = frozenset(
    {
        "format",
        "width",
        "height",
        "Modality",
        "ViewPosition",
        "BodyPartExamined",
        "PhotometricInterpretation",
        "TransferSyntaxUID",
        "PatientSex",
        "PatientAge",
        "patient_age_years",
    }
)


REVIEW_NOTE_CODE = "review_requested"  # a "send for review" entry in a case's notes list


def sees_patient_identity(role: Role | str) -> bool:
    return role in ROLES_SEEING_PATIENT_IDENTITY


def redact_study(study: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in study.items() if key in NON_IDENTIFYING_STUDY_KEYS}


def redact_for(role: Role | str, case: CaseOut) -> CaseOut:
    """The case as `role` may see it: unchanged for roles that need the patient's identity, otherwise without the
    identifying patient fields and with only non-identifying study metadata. Unknown roles get the redacted form."""
    if sees_patient_identity(role):
        return case
    patient = case.patient.model_copy(update=dict.fromkeys(IDENTIFYING_PATIENT_FIELDS))
    notes = [redact_note(note) for note in case.quality_warnings]
    hidden = {"patient": patient, "study": redact_study(case.study), "review_reason": None, "quality_warnings": notes}
    return case.model_copy(update=hidden)


def redact_note(note: dict[str, Any]) -> dict[str, Any]:
    """A review request without its free text (cases sent for review before the reason was stored apart)."""
    if note.get("code") != REVIEW_NOTE_CODE or not isinstance(note.get("message"), str):
        return note
    return {**note, "message": note["message"].split(":", 1)[0].rstrip(".") + "."}
