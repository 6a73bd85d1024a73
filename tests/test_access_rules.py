"""Who may do what, written out by hand from the product's rules, and checked against the live server.

This table is deliberately not read from api/permissions.py: it is the independent statement that table must agree
with. The rules (README, DESIGN.md):
- anyone: the probes, the docs and logging in; the metrics to anyone signed in, and anonymously from this host only;
- every signed-in role: who am I, changing one's own password, which model is served, how the machine is doing;
- radiologists (and admins): analysing studies and anything that shows who the patient is or is about one patient
  (case lists searchable by patient id, DICOM tags, PDFs printing the name), heatmaps and similar cases, review and
  sign-off;
- annotators: one case at a time and its image, never the patient's identity; they work the annotation queue
  (claim, read) and read blind: the model's answer and heatmap of a queued case only once their own read is in;
- seniors: annotators who also adjudicate disagreeing reads and export the final labels;
- admins: everything, including users and API keys.
Patient identity (name, patient id, birth date, clinical history, identifying DICOM tags) is shown to radiologists
and admins only. Annotators never receive a PDF, a DICOM file or any identifying field, on any route.
"""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from pypdf import PdfReader

from tests.conftest import LiveApi
from tests.factories import dicom_bytes, synthetic_radiograph, to_stored

RAD, ANN, SEN, ADM = "radiologist", "annotator", "senior", "admin"
ANYONE = frozenset({"anonymous", RAD, ANN, SEN, ADM})
SIGNED_IN = frozenset({RAD, ANN, SEN, ADM})
CLINICAL = frozenset({RAD, ADM})
READERS = frozenset({ANN, SEN, ADM})
ADJUDICATORS = frozenset({SEN, ADM})
NODULE_REVIEWERS = frozenset({RAD, SEN, ADM})
ADMIN = frozenset({ADM})

# (method, path) -> who may call it. By hand; a new route fails test_every_route_has_a_rule until it is added here.
WHO_MAY: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/health"): ANYONE,
    ("GET", "/ready"): ANYONE,
    ("POST", "/v1/auth/login"): ANYONE,
    ("GET", "/metrics"): ANYONE,  # anonymous only from this host (a local Prometheus); the tests call from 127.0.0.1
    ("GET", "/v1/auth/me"): SIGNED_IN,
    ("POST", "/v1/auth/logout"): SIGNED_IN,
    ("POST", "/v1/auth/password"): SIGNED_IN,
    ("GET", "/model/info"): SIGNED_IN,
    ("GET", "/v1/system/stats"): SIGNED_IN,
    ("POST", "/predict"): CLINICAL,
    ("POST", "/predict/batch"): CLINICAL,
    ("POST", "/v1/studies"): CLINICAL,
    ("POST", "/v1/dicom/inspect"): CLINICAL,
    ("GET", "/v1/cases"): CLINICAL,
    ("GET", "/v1/cases/{case_id}"): SIGNED_IN,
    ("GET", "/v1/cases/{case_id}/image"): SIGNED_IN,
    ("GET", "/v1/cases/{case_id}/heatmap"): SIGNED_IN,  # expert readers: once their read is in
    ("GET", "/v1/cases/{case_id}/similar"): CLINICAL,
    ("GET", "/similar-cases/{case_id}"): CLINICAL,
    ("GET", "/v1/reference/{ref_id}/thumbnail"): CLINICAL,
    ("GET", "/v1/cases/{case_id}/report"): CLINICAL,
    ("GET", "/v1/cases/{case_id}/dicom"): CLINICAL,  # the patient module names the patient
    ("GET", "/v1/cases/{case_id}/fhir"): CLINICAL,  # so does the Bundle's Patient
    ("POST", "/v1/cases/{case_id}/review"): CLINICAL,
    ("POST", "/v1/cases/{case_id}/sign"): CLINICAL,
    ("GET", "/v1/queue"): READERS,
    ("POST", "/v1/queue"): CLINICAL,  # "send for review", like /v1/cases/{case_id}/review
    ("POST", "/v1/queue/claim"): READERS,
    ("POST", "/v1/queue/claims/{claim_id}/renew"): READERS,
    ("POST", "/v1/queue/claims/{claim_id}/release"): READERS,
    ("POST", "/v1/annotations"): READERS,
    ("GET", "/v1/annotations/{case_id}"): SIGNED_IN,
    ("POST", "/v1/annotations/{case_id}/adjudicate"): ADJUDICATORS,
    ("POST", "/v1/cases/{case_id}/nodule-review"): NODULE_REVIEWERS,  # confirm, reject or add nodule marks
    ("GET", "/v1/cases/{case_id}/nodule-review"): NODULE_REVIEWERS,
    ("GET", "/v1/annotations/stats"): SIGNED_IN,  # everyone sees their own statistics
    ("GET", "/v1/annotations/export"): ADJUDICATORS,
    ("POST", "/v1/retraining"): ADMIN,
    ("GET", "/v1/retraining"): ADMIN,
    ("GET", "/v1/retraining/{job_id}"): ADMIN,
    ("GET", "/v1/models"): ADMIN,  # model operations: versions, promote, rollback
    ("GET", "/v1/models/{name}/versions/{version}"): ADMIN,
    ("POST", "/v1/models/{name}/promote"): ADMIN,
    ("POST", "/v1/models/{name}/rollback"): ADMIN,
    ("GET", "/v1/users"): ADMIN,
    ("POST", "/v1/users"): ADMIN,
    ("GET", "/v1/users/{user_id}"): ADMIN,
    ("PATCH", "/v1/users/{user_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}"): ADMIN,
    ("GET", "/v1/api-keys"): ADMIN,
    ("POST", "/v1/api-keys"): ADMIN,
    ("DELETE", "/v1/api-keys/{key_id}"): ADMIN,
    ("GET", "/v1/audit"): ADMIN,  # the audit trail names who looked at which case
    ("GET", "/v1/audit/verify"): ADMIN,
    ("GET", "/v1/audit/export"): ADMIN,
    ("GET", "/v1/monitoring/summary"): ADMIN,  # watching the workstation is the hospital admin's job
    ("GET", "/v1/monitoring/drift"): ADMIN,
    ("GET", "/v1/alerts"): ADMIN,
    ("POST", "/v1/alerts/{alert_id}/acknowledge"): ADMIN,
}
# Ends the caller's session: called here only anonymously (the roles' shared tokens must survive); each role's own
# logout is checked with a token of its own in tests/security/test_attack_list.py (T6) and tests/test_hardening.py.
ENDS_THE_SESSION = {("POST", "/v1/auth/logout")}
# Served but left out of the OpenAPI schema (a scraper's endpoint, not part of the documented API).
NOT_IN_SCHEMA = {("GET", "/metrics")}
# Routes whose answer, for a radiologist, shows the patient's name (the identity column of the table).
SHOWS_IDENTITY = {
    ("POST", "/v1/studies"),
    ("POST", "/v1/dicom/inspect"),
    ("GET", "/v1/cases"),
    ("GET", "/v1/cases/{case_id}"),
    ("GET", "/v1/cases/{case_id}/report"),
    ("GET", "/v1/cases/{case_id}/dicom"),
    ("GET", "/v1/cases/{case_id}/fhir"),
    ("POST", "/v1/cases/{case_id}/review"),
}

PATIENT = {"name": "Ottoline Quaritch-Vane", "patient_id": "MRN-OQV-4471", "birth_date": "1948-02-29", "age": 77,
           "sex": "F", "clinical_history": "Lives at 12 Wexcombe Rise."}  # fmt: skip
DICOM_NAME, DICOM_ID = "Quaritch-Vane^Ottoline", "DCM-OQV-9913"
IDENTITY = ("Quaritch", "Ottoline", "MRN-OQV-4471", "1948-02-29", "19480229", "Wexcombe", "DCM-OQV-9913")
PATH_PARAMETER = re.compile(r"\{([^}]+)\}")


def operations(api: LiveApi) -> set[tuple[str, str]]:
    paths = httpx.get(f"{api.url}/openapi.json", timeout=30).json()["paths"]
    methods = ("get", "post", "put", "patch", "delete")
    return {(method.upper(), path) for path, ops in paths.items() for method in ops if method in methods}


def identifying_dicom() -> bytes:
    return dicom_bytes(to_stored(synthetic_radiograph(256, 256, seed=91)), extra_tags={
        "PatientName": DICOM_NAME, "PatientID": DICOM_ID, "PatientBirthDate": "19480229"})  # fmt: skip


@pytest.fixture(scope="module")
def api(sqlite_api: LiveApi) -> LiveApi:
    return sqlite_api


@pytest.fixture(scope="module")
def ids(api: LiveApi) -> dict[str, str]:
    """Real ids for the path parameters: a case carrying the patient's identity, a user, an API key, a reference."""
    with api.client(RAD) as radiologist, api.client(ADM) as admin:
        created = radiologist.post("/v1/studies", files={"file": ("p.dcm", identifying_dicom())},
                                   data={"patient": json.dumps(PATIENT)})  # fmt: skip
        assert created.status_code == 201, created.text
        case_id = created.json()["case_id"]
        similar = radiologist.get(f"/v1/cases/{case_id}/similar", params={"k": 1}).json()
        queued = radiologist.post("/v1/queue", json={"case_id": case_id, "reason": "Ottoline's film, please read."})
        assert queued.status_code == 201, queued.text
        user = admin.post("/v1/users", json={"username": f"rules-{uuid.uuid4().hex[:6]}",
                                              "password": "a long enough password 1", "role": "annotator"})  # fmt: skip
        key = admin.post("/v1/api-keys", json={"name": "rules", "role": "annotator"})
        assert user.status_code == 201 and key.status_code == 201, (user.text, key.text)
    # alert 1 need not exist: the roles allowed get 404, the others 403 before the lookup
    return {"case_id": case_id, "ref_id": similar["neighbours"][0]["ref_id"], "user_id": user.json()["id"],
            "key_id": key.json()["id"], "alert_id": "1", "claim_id": str(uuid.uuid4()),
            "job_id": str(uuid.uuid4()), "name": "cxr-pneumonia", "version": "1"}  # fmt: skip


def request_for(method: str, path: str, ids: dict[str, str]) -> dict:
    """Keyword arguments for httpx: real ids in the path and a realistic body where one is needed."""
    url = PATH_PARAMETER.sub(lambda m: ids[m[1]], path)
    dicom = identifying_dicom()
    bodies: dict[tuple[str, str], dict] = {
        ("POST", "/predict"): {"files": {"file": ("p.dcm", dicom)}},
        ("POST", "/v1/studies"): {"files": {"file": ("p.dcm", dicom)}, "data": {"patient": json.dumps(PATIENT)}},
        ("POST", "/v1/dicom/inspect"): {"files": {"file": ("p.dcm", dicom)}},
        ("POST", "/predict/batch"): {"json": {"images": [base64.b64encode(dicom).decode()]}},
        ("POST", "/v1/cases/{case_id}/review"): {"json": {"reason": "Please double-read."}},
    }
    return {"method": method, "url": url, **bodies.get((method, path), {})}


@pytest.fixture(scope="module")
def callers(api: LiveApi) -> Iterator[dict[str, httpx.Client]]:
    clients = {role: api.client(role) for role in (RAD, ANN, SEN, ADM)} | {"anonymous": api.client(None)}
    yield clients
    for http in clients.values():
        http.close()


def test_every_route_has_a_rule(api: LiveApi) -> None:
    served = operations(api)
    assert served - set(WHO_MAY) == set(), "routes without a hand-written rule in WHO_MAY"
    assert set(WHO_MAY) - served == NOT_IN_SCHEMA, "rules for routes the server no longer has"


def test_each_role_may_call_exactly_what_the_rules_say(callers: dict[str, httpx.Client]) -> None:
    """Anonymous callers get 401 and signed-in roles 403 where the rules say no, with a reason; elsewhere neither.
    Requests carry no body and a random id, so the allowed ones end in 2xx/404/422 without changing anything."""
    wrong: list[str] = []
    for (method, path), allowed in sorted(WHO_MAY.items()):
        if (method, path) not in ENDS_THE_SESSION:
            assert callers[ADM].request(method, PATH_PARAMETER.sub(str(uuid.uuid4()), path)).status_code != 405, path
        for who, http in callers.items():
            if (method, path) in ENDS_THE_SESSION and who != "anonymous":
                continue
            answer = http.request(method, PATH_PARAMETER.sub(str(uuid.uuid4()), path))
            got = answer.status_code
            if who in allowed and got in (401, 403):
                wrong.append(f"{who} {method} {path}: {got}, but the rules allow it")
            elif who not in allowed and who == "anonymous" and got != 401:
                wrong.append(f"anonymous {method} {path}: {got}, expected 401")
            elif who not in allowed and who != "anonymous":
                expected = f"Your role ({who}) may not call {method} {path}."
                if got != 403 or answer.json().get("detail") != expected:
                    wrong.append(f"{who} {method} {path}: {got} {answer.text[:100]}, expected 403 '{expected}'")
    assert not wrong, "\n".join(wrong)


def test_annotators_never_receive_identity_a_pdf_or_a_dicom_on_any_route(
    callers: dict[str, httpx.Client], ids: dict[str, str]
) -> None:
    """Every route, called by an annotator with real ids and real bodies (a DICOM naming the patient)."""
    annotator = callers[ANN]
    leaks: list[str] = []
    for method, path in sorted(WHO_MAY):
        if (method, path) in {("DELETE", "/v1/users/{user_id}"), ("DELETE", "/v1/api-keys/{key_id}")}:
            continue  # allowed for admins only (checked above); nothing to receive
        if (method, path) in ENDS_THE_SESSION:
            continue  # answers 204 with no body, and would end the annotator's shared session
        answer = annotator.request(**request_for(method, path, ids))
        content_type = answer.headers.get("content-type", "")
        body = answer.content
        if body.startswith(b"%PDF") or "pdf" in content_type:
            leaks.append(f"{method} {path}: a PDF")
        if body[128:132] == b"DICM" or "dicom" in content_type:
            leaks.append(f"{method} {path}: a DICOM file")
        found = [secret for secret in IDENTITY if secret.encode() in body]
        if found:
            leaks.append(f"{method} {path}: {found}")
    assert not leaks, "\n".join(leaks)
    # The case waits for expert reads (sent in `ids`): an annotator who has not read it gets neither the case nor
    # its heatmap; what a reader may know of it comes with a claim (tests/test_learning_loop_api.py).
    for path in (f"/v1/cases/{ids['case_id']}", f"/v1/cases/{ids['case_id']}/heatmap"):
        answer = annotator.get(path)
        assert answer.status_code == 403 and "Blind double reading" in answer.json()["detail"], answer.text


def test_radiologists_and_admins_see_who_the_patient_is(callers: dict[str, httpx.Client], ids: dict[str, str]) -> None:
    for role in (RAD, ADM):
        for method, path in sorted(SHOWS_IDENTITY):
            kwargs = request_for(method, path, ids)
            if (method, path) == ("GET", "/v1/cases"):
                kwargs["params"] = {"patient_id": PATIENT["patient_id"]}
            answer = callers[role].request(**kwargs)
            assert answer.status_code in (200, 201), (role, method, path, answer.text[:200])
            text = answer.text if "pdf" not in answer.headers["content-type"] else pdf_words(answer.content)
            assert "Quaritch" in text, (role, method, path)


def pdf_words(pdf: bytes) -> str:
    return "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages)
