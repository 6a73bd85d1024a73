"""The outside probe's attack list (issue 13), re-run as an outsider would against a live server. One test per attack;
each asserts the attack was held, and says what the attacker sees.

Groups: credentials and tokens (T), roles (R), throttles and addresses (L), hostile inputs (I), stored data (D).
Crash recovery after kill -9 and the orphan sweep are checked in tests/test_hardening.py and tests/test_storage.py.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import time
from pathlib import Path

import jwt
import numpy as np
import pydicom
import pytest

from tests.factories import dicom_bytes, png_bytes, synthetic_radiograph, to_stored
from tests.security.conftest import Target

RADIOGRAPH = png_bytes(to_stored(synthetic_radiograph(256, 256, seed=201)))
PROTECTED = [("GET", "/v1/cases"), ("GET", "/v1/users"), ("POST", "/v1/studies"), ("GET", "/v1/auth/me")]


def study(target: Target, headers: dict[str, str], data: bytes, patient: str | None = None) -> dict:
    with target.client(headers) as http:
        answer = http.post("/v1/studies", files={"file": ("x", data)}, data={"patient": patient} if patient else {})
        return {"status": answer.status_code, "body": answer.json() if answer.content else {}}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def new_account(target: Target, role: str = "radiologist") -> tuple[str, str, str]:
    username, password = f"victim-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    with target.client(target.admin) as http:
        created = http.post("/v1/users", json={"username": username, "password": password, "role": role})
    assert created.status_code == 201
    return created.json()["id"], username, password


def token_of(target: Target, username: str, password: str) -> str:
    with target.client() as http:
        return http.post("/v1/auth/login", json={"username": username, "password": password}).json()["access_token"]


# --- T: credentials and tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_t1_no_credentials(target: Target, method: str, path: str) -> None:
    with target.client() as http:
        assert http.request(method, path).status_code == 401


def test_t2_unsigned_token(target: Target) -> None:
    forged = jwt.encode({"sub": "x", "ver": 1, "role": "admin"}, key=None, algorithm="none")
    with target.client({"Authorization": f"Bearer {forged}"}) as http:
        assert http.get("/v1/users").status_code == 401


def test_t3_token_signed_with_a_guessed_secret(target: Target) -> None:
    forged = jwt.encode({"sub": "x", "ver": 1, "iss": "cxr-workstation", "exp": 4_000_000_000, "iat": 1}, "secret" * 8)
    with target.client({"Authorization": f"Bearer {forged}"}) as http:
        assert http.get("/v1/users").status_code == 401


def test_t4_role_claim_edited_in_a_real_token(target: Target) -> None:
    header, payload, signature = target.annotator["Authorization"].split()[1].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    edited = f"{header}.{b64({**claims, 'role': 'admin'})}.{signature}"
    with target.client({"Authorization": f"Bearer {edited}"}) as http:
        assert http.get("/v1/users").status_code == 401


def test_t5_other_authorization_schemes(target: Target) -> None:
    basic = base64.b64encode(f"attack-admin:{target.passwords['attack-admin']}".encode()).decode()
    with target.client({"Authorization": f"Basic {basic}"}) as http:
        assert http.get("/v1/users").status_code == 401


def test_t6_token_after_logout(target: Target) -> None:
    _, username, password = new_account(target)
    headers = {"Authorization": f"Bearer {token_of(target, username, password)}"}
    with target.client(headers) as http:
        assert http.post("/v1/auth/logout").status_code == 204
        answer = http.get("/v1/auth/me")
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]


def test_t7_token_after_password_change_and_deactivation(target: Target) -> None:
    user_id, username, password = new_account(target)
    first = {"Authorization": f"Bearer {token_of(target, username, password)}"}
    with target.client(target.admin) as admin:
        assert admin.patch(f"/v1/users/{user_id}", json={"password": secrets.token_urlsafe(18)}).status_code == 200
    with target.client(first) as http:
        assert http.get("/v1/auth/me").status_code == 401
    _, username, password = new_account(target)
    second = {"Authorization": f"Bearer {token_of(target, username, password)}"}
    with target.client(target.admin) as admin:
        listed = {u["username"]: u["id"] for u in admin.get("/v1/users").json()}
        assert admin.patch(f"/v1/users/{listed[username]}", json={"active": False}).status_code == 200
    with target.client(second) as http:
        assert http.get("/v1/auth/me").status_code == 401


def test_t8_revoked_api_key_and_key_in_the_query_string(target: Target) -> None:
    with target.client(target.admin) as admin:
        created = admin.post("/v1/api-keys", json={"name": "probe", "role": "radiologist"}).json()
        with target.client({"X-API-Key": created["key"]}) as http:
            assert http.get("/v1/auth/me").status_code == 200
            assert target.client().get("/v1/auth/me", params={"api_key": created["key"]}).status_code == 401
            assert admin.delete(f"/v1/api-keys/{created['id']}").status_code in (200, 204)
            assert http.get("/v1/auth/me").status_code == 401


def test_t9_injection_and_oversized_credentials(target: Target) -> None:
    with target.client() as http:
        for username in ("' OR 1=1 --", "attack-admin'--", "a" * 64, "\u0000admin"):
            assert http.post("/v1/auth/login", json={"username": username, "password": "x"}).status_code in (401, 422)
        started = time.monotonic()
        huge = http.post("/v1/auth/login", json={"username": "attack-admin", "password": "p" * 2_000_000})
        assert huge.status_code == 422 and time.monotonic() - started < 5


# --- R: roles ------------------------------------------------------------------------------------------------------


def test_r1_annotator_gets_no_identity_pdf_or_listing(target: Target) -> None:
    case = study(target, target.radiologist, RADIOGRAPH, json.dumps({"name": "Rosamund Quill"}))["body"]
    case_id = case["case_id"]
    with target.client(target.annotator) as http:
        assert http.get(f"/v1/cases/{case_id}/report").status_code == 403
        assert http.get("/v1/cases").status_code == 403
        assert http.post("/v1/dicom/inspect", files={"file": ("x", RADIOGRAPH)}).status_code == 403
        seen = http.get(f"/v1/cases/{case_id}")
    # A case waiting for expert reads is closed to a reader who has not read it (blind double reading).
    blind = case["status"] == "queued_for_review"
    assert seen.status_code == (403 if blind else 200) and "Rosamund" not in seen.text, seen.text


def test_r2_radiologist_cannot_administer_or_promote_itself(target: Target) -> None:
    with target.client(target.radiologist) as http:
        me = http.get("/v1/auth/me").json()
        assert http.get("/v1/users").status_code == 403
        assert http.post("/v1/api-keys", json={"name": "x", "role": "admin"}).status_code == 403
        assert http.patch(f"/v1/users/{me['id']}", json={"role": "admin"}).status_code == 403


def test_r3_review_reason_is_hidden_from_annotators(target: Target) -> None:
    case_id = study(target, target.radiologist, RADIOGRAPH)["body"]["case_id"]
    with target.client(target.radiologist) as http:
        http.post(f"/v1/cases/{case_id}/review", json={"reason": "Mr Thaddeus Grimsby-Vole, ward 4"})
    with target.client(target.annotator) as http:
        assert "Grimsby" not in http.get(f"/v1/cases/{case_id}").text


# --- L: throttles and addresses --------------------------------------------------------------------------------------


def test_l1_rotating_x_forwarded_for_buys_no_guesses(target: Target) -> None:
    _, username, _ = new_account(target)
    with target.client() as http:
        answers = [
            http.post(
                "/v1/auth/login",
                json={"username": username, "password": "wrong-guess-123"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(30)
        ]
    assert answers.count(401) <= 6 and answers.count(429) >= 24  # LOGIN_RATE_LIMIT=5/hour, then waits


def test_l2_guessing_cannot_lock_the_real_user_out(target: Target) -> None:
    _, username, password = new_account(target)
    with target.client() as http:  # the attacker and the user share an address (same hospital NAT)
        for _ in range(40):
            http.post("/v1/auth/login", json={"username": username, "password": "wrong-guess-123"})
        time.sleep(2.2)  # LOGIN_BACKOFF_MAX_S=2
        assert http.post("/v1/auth/login", json={"username": username, "password": password}).status_code == 200


def test_l3_no_cors_for_another_origin(target: Target) -> None:
    with target.client({"Origin": "https://evil.example.com"}) as http:
        answer = http.get("/health")
    assert "access-control-allow-origin" not in answer.headers


# --- I: hostile inputs -----------------------------------------------------------------------------------------------


def test_i1_deeply_nested_json(target: Target) -> None:
    nested = "[" * 2000 + "]" * 2000
    assert study(target, target.radiologist, RADIOGRAPH, nested)["status"] == 422
    with target.client(target.radiologist) as http:
        body = '{"reason": ' + nested + "}"
        answer = http.post("/v1/cases/x/review", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422


@pytest.mark.parametrize(
    "patient",
    [{"name": "A\u0000B"}, {"name": "\u001b[2Jx"}, {"name": "evil\u202egnp.exe"}, {"birth_date": "2999-01-01"}],
    ids=["nul", "esc", "rlo", "future-birth"],
)
def test_i2_hostile_patient_fields(target: Target, patient: dict) -> None:
    answer = study(target, target.radiologist, RADIOGRAPH, json.dumps(patient))
    assert answer["status"] == 422 and next(iter(patient)) in answer["body"]["detail"]


@pytest.mark.parametrize(
    "upload",
    [
        png_bytes(np.full((200, 20000), 128, dtype=np.uint8)),  # a flat strip: small as a file
        dicom_bytes(to_stored(synthetic_radiograph(128, 128, seed=203)), modality="OT"),
        dicom_bytes(to_stored(synthetic_radiograph(128, 128, seed=204)), modality=""),
    ],
    ids=["20000x200", "secondary-capture", "no-modality"],
)
def test_i3_not_a_chest_radiograph_gets_no_label(target: Target, upload: bytes) -> None:
    answer = study(target, target.radiologist, upload)
    assert answer["status"] == 422 and "prediction" not in answer["body"]


def test_i4_pydicom_test_corpus(target: Target) -> None:
    corpus = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
    labelled = []
    for path in corpus:
        answer = study(target, target.radiologist, path.read_bytes())
        assert answer["status"] < 500, path.name
        if answer["status"] == 201:
            labelled.append(path.name)
    assert labelled == []  # CT, MR, RT, secondary captures and modality-less objects: none is a chest film


def test_i5_mutated_uploads_never_get_a_5xx(target: Target) -> None:
    rng = random.Random(13)
    seeds = [RADIOGRAPH, dicom_bytes(to_stored(synthetic_radiograph(128, 128, seed=205)))]
    statuses = []
    for index in range(120):
        data = bytearray(seeds[index % 2])
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if index % 7 == 0:
            data = data[: rng.randrange(1, len(data))]
        statuses.append(study(target, target.radiologist, bytes(data))["status"])
    assert all(status < 500 for status in statuses)


def test_i6_oversized_upload(target: Target) -> None:
    assert study(target, target.radiologist, RADIOGRAPH + bytes(3 * 1024 * 1024))["status"] == 413


# --- D: stored data --------------------------------------------------------------------------------------------------


def test_d1_no_patient_identity_in_any_stored_file(target: Target) -> None:
    tagged = dicom_bytes(
        to_stored(synthetic_radiograph(256, 256, seed=206)),
        modality="DX",
        patient={"PatientName": "Zebedee^Wolstenholme", "PatientID": "ZW-930114", "PatientBirthDate": "19470321"},
    )
    assert study(target, target.radiologist, tagged)["status"] == 201
    form = json.dumps({"name": "Perpetua Ashcombe-Tye", "patient_id": "PAT-44172"})
    assert study(target, target.radiologist, RADIOGRAPH, form)["status"] == 201
    secrets_ = (b"Wolstenholme", b"ZW-930114", b"19470321", b"Ashcombe", b"PAT-44172")
    leaks = [
        (str(path.relative_to(target.var_dir)), secret)
        for path in target.var_dir.rglob("*")
        if path.is_file()
        for secret in secrets_
        if secret in path.read_bytes()
    ]
    assert leaks == []
