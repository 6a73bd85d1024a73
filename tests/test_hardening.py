"""Hardening (issue 13): each test states what a user or an attacker sees, and each one failed before its fix.

The backend runs in-process (FastAPI's TestClient) on the tiny checkpoint, with its own var dir per test group, so
a test can read every file the workstation wrote. The outsider's attack list against a live server is in
tests/security/.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.main import create_app
from monitoring import AuditFilter
from settings import Settings
from storage import (
    Database,
    ImageStore,
    PhiCipher,
    generate_phi_key,
    migrate_database,
    rotate_phi_key,
    sweep_orphans,
)
from tests.factories import dicom_bytes, png_bytes, synthetic_radiograph, to_stored
from ui.client import BackendClient

ADMIN = ("hard-admin", "Hardening-" + secrets.token_urlsafe(12))
RADIOGRAPH = png_bytes(to_stored(synthetic_radiograph(256, 256, seed=131)))
# One PHI key for every backend of this module: the key is process-wide, and several backends start here.
PHI_KEY = generate_phi_key()


def hardening_settings(var_dir: Path, model: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "var_dir": var_dir,
        "model_path": model,
        "database_url": "",
        "torch_threads": 1,
        "admin_username": ADMIN[0],
        "admin_password": ADMIN[1],
        "jwt_secret": secrets.token_urlsafe(48),
        "rate_limit": "100000/minute",
        "login_rate_limit": "3/hour",
        "login_account_rate_limit": "6/hour",
        "login_backoff_max_s": 1,
        "phi_encryption_key": PHI_KEY,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def log_in(http: TestClient, username: str, password: str) -> dict[str, str]:
    answer = http.post("/v1/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def add_user(http: TestClient, admin: dict[str, str], role: str) -> tuple[str, str, dict[str, str]]:
    username, password = f"{role[:5]}-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    created = http.post("/v1/users", json={"username": username, "password": password, "role": role}, headers=admin)
    assert created.status_code == 201, created.text
    return username, password, log_in(http, username, password)


@contextmanager
def workstation(settings: Settings, client: tuple[str, int] = ("10.1.1.1", 40000)) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=client) as http:
        yield http


@pytest.fixture(scope="module")
def station(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """One backend for the tests that only read what it answers or wrote: admin, radiologist and annotator."""
    settings = hardening_settings(tmp_path_factory.mktemp("hardening-var"), tiny_checkpoint)
    with workstation(settings) as http:
        admin = log_in(http, *ADMIN)
        yield {
            "http": http,
            "settings": settings,
            "admin": admin,
            "radiologist": add_user(http, admin, "radiologist")[2],
            "annotator": add_user(http, admin, "annotator")[2],
        }


def study(http: TestClient, headers: dict[str, str], data: bytes, patient: dict | str | None = None) -> httpx.Response:
    form = {} if patient is None else {"patient": patient if isinstance(patient, str) else json.dumps(patient)}
    return http.post("/v1/studies", files={"file": ("x.bin", data)}, data=form, headers=headers)


def files_under(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# --- 1. no patient identity readable in any stored file --------------------------------------------------------------

DICOM_NAME, FORM_NAME = "Quennell^Hyacinthe", "Ottoline Varnsworth"


def test_no_file_under_var_names_the_patient(station: dict[str, object]) -> None:
    http, radiologist = station["http"], station["radiologist"]
    tagged = dicom_bytes(
        to_stored(synthetic_radiograph(256, 256, seed=132)),
        modality="CR",
        patient={"PatientName": DICOM_NAME, "PatientID": "QH-771903", "PatientBirthDate": "19510203"},
    )
    by_dicom = study(http, radiologist, tagged)
    assert by_dicom.status_code == 201, by_dicom.text
    by_form = study(http, radiologist, RADIOGRAPH, {"name": FORM_NAME, "patient_id": "OV-55821"})
    assert by_form.status_code == 201, by_form.text
    for created in (by_dicom, by_form):  # everything the workstation keeps of them is read back
        case_id = created.json()["case_id"]
        assert http.get(f"/v1/cases/{case_id}/image", headers=radiologist).status_code == 200
        assert http.get(f"/v1/cases/{case_id}/report", headers=radiologist).status_code == 200
    assert http.get(f"/v1/cases/{by_dicom.json()['case_id']}", headers=radiologist).json()["patient"]["name"] == (
        "Quennell Hyacinthe"
    )
    var_dir = station["settings"].var_dir
    found = {
        str(path.relative_to(var_dir)): secret
        for path, data in files_under(var_dir).items()
        for secret in (b"Quennell", b"Hyacinthe", b"QH-771903", b"19510203", b"Varnsworth", b"OV-55821")
        if secret in data
    }
    assert found == {}, f"patient identity readable in {found}"


def test_key_rotation_re_encrypts_the_stored_images(tmp_path: Path) -> None:
    old_key, new_key = generate_phi_key(), generate_phi_key()
    database = Database(f"sqlite:///{tmp_path / 'cxr.db'}")
    migrate_database(database)
    store = ImageStore(tmp_path / "images", cipher=PhiCipher([old_key]))
    original = dicom_bytes(to_stored(synthetic_radiograph(64, 64, seed=133)), patient={"PatientName": "Rotated^Ruth"})
    sha256 = store.put(original)
    before = store.path(sha256).read_bytes()
    assert b"Rotated" not in before
    rotate_phi_key(database, new_key, [old_key], images=store)
    after = store.path(sha256).read_bytes()
    assert after != before and b"Rotated" not in after
    assert ImageStore(tmp_path / "images", cipher=PhiCipher([new_key])).get(sha256) == original
    with pytest.raises(Exception, match="cannot be decrypted"):
        ImageStore(tmp_path / "images", cipher=PhiCipher([old_key])).get(sha256)


# --- 2. depth and size limits on every JSON input --------------------------------------------------------------------


def test_deeply_nested_json_is_refused_with_422(station: dict[str, object]) -> None:
    http, radiologist = station["http"], station["radiologist"]
    nested = "[" * 2000 + "]" * 2000
    answer = study(http, radiologist, RADIOGRAPH, nested)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "The `patient` field is nested deeper than 32 levels (MAX_JSON_DEPTH)."
    body = '{"username": ' + nested + ', "password": "x"}'
    login = http.post("/v1/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert login.status_code == 422
    assert login.json()["detail"] == "The request body is nested deeper than 32 levels (MAX_JSON_DEPTH)."
    huge = json.dumps({"username": "someone", "password": "x" * (1024 * 1024)})
    too_big = http.post("/v1/auth/login", content=huge, headers={"Content-Type": "application/json"})
    assert too_big.status_code == 422
    assert too_big.json()["detail"] == "The request body is larger than the 256 KB limit for JSON (MAX_JSON_BYTES)."
    big_patient = study(http, radiologist, RADIOGRAPH, json.dumps({"clinical_history": "y" * (300 * 1024)}))
    assert big_patient.status_code == 422
    assert big_patient.json()["detail"] == (
        "The `patient` field is larger than the 256 KB limit for JSON (MAX_JSON_BYTES)."
    )


# --- 8. names without control characters, birth dates not in the future ---------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Evil\x00Name"), ("name", "Esc\x1b[31mName"), ("name", "abc\u202etxt.exe"), ("patient_id", "ID\x07")],
)
def test_control_and_direction_characters_are_refused(station: dict[str, object], field: str, value: str) -> None:
    answer = study(station["http"], station["radiologist"], RADIOGRAPH, {field: value})
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        f"Invalid patient data: {field}: Value error, contains a control or text-direction character "
        "(e.g. NUL, ESC, U+202E); remove it."
    )


def test_birth_date_in_the_future_is_refused_and_names_are_normalised(station: dict[str, object]) -> None:
    http, radiologist = station["http"], station["radiologist"]
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    future = study(http, radiologist, RADIOGRAPH, {"birth_date": tomorrow})
    assert future.status_code == 422
    assert future.json()["detail"] == "Invalid patient data: birth_date: Value error, the birth date is in the future."
    decomposed = study(http, radiologist, RADIOGRAPH, {"name": "Jose\u0301 Nun\u0303ez", "clinical_history": "a\nb"})
    assert decomposed.status_code == 201, decomposed.text
    assert decomposed.json()["patient"]["name"] == "Jos\u00e9 Nu\u00f1ez"  # NFC: one code point per letter
    assert decomposed.json()["patient"]["clinical_history"] == "a\nb"  # line breaks stay in free text


# --- 3. X-Forwarded-For believed only from trusted proxies; backoff instead of lockout; lockouts audited ------------


def login_status(http: TestClient, password: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    body = {"username": ADMIN[0], "password": password}
    return http.post("/v1/auth/login", json=body, headers=headers).status_code


def test_rotating_x_forwarded_for_does_not_buy_more_guesses(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = hardening_settings(tmp_path, tiny_checkpoint, login_account_rate_limit="1000/hour")
    # `uvicorn api.main:app` as started by default: uvicorn believes X-Forwarded-For from 127.0.0.1.
    with TestClient(ProxyHeadersMiddleware(create_app(settings), "127.0.0.1"), client=("127.0.0.1", 50123)) as http:
        answers = [login_status(http, "wrong-guess-123", f"203.0.113.{n}") for n in range(8)]
    assert answers[:3] == [401, 401, 401]  # LOGIN_RATE_LIMIT=3/hour, then a wait
    assert answers[3] == 429 and answers.count(401) <= 4


def test_x_forwarded_for_is_believed_from_a_trusted_proxy(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = hardening_settings(
        tmp_path, tiny_checkpoint, login_account_rate_limit="1000/hour", trusted_proxies="10.0.0.0/8"
    )
    with workstation(settings, client=("10.0.0.5", 40000)) as http:
        assert [login_status(http, "wrong-guess-123", "198.51.100.1") for _ in range(4)] == [401, 401, 401, 429]
        assert login_status(http, "wrong-guess-123", "198.51.100.2") == 401  # another client behind the proxy
        assert login_status(http, ADMIN[1], "198.51.100.3") == 200


def test_an_attacker_cannot_lock_the_real_user_out(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with workstation(hardening_settings(tmp_path, tiny_checkpoint)) as http:  # one address for both
        answers = [login_status(http, f"guess-number-{n}") for n in range(30)]
        checked = answers.count(401)
        assert checked <= 4 and answers.count(429) == 30 - checked  # 3 free guesses, then one per wait
        time.sleep(1.2)  # LOGIN_BACKOFF_MAX_S=1: the longest the real user ever waits
        assert login_status(http, ADMIN[1]) == 200


def test_every_lockout_is_in_the_audit_trail(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with workstation(hardening_settings(tmp_path, tiny_checkpoint), client=("192.0.2.44", 4000)) as http:
        for _ in range(4):
            login_status(http, "wrong-guess-123")
            time.sleep(1.1)  # past each wait, so that every attempt is checked
        events = http.app.state.services.audit.events(AuditFilter(action="login.lockout"))  # type: ignore[attr-defined]
    assert [(e.actor_name, e.client, e.outcome, e.detail["scope"], e.detail["failures"]) for e in events] == [
        (ADMIN[0], "192.0.2.44", "denied", "address", 4),
        (ADMIN[0], "192.0.2.44", "denied", "address", 3),
    ]


# --- 5. logout ends the token on every process ------------------------------------------------------------------------


def test_logout_revokes_the_token_on_every_replica(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = hardening_settings(tmp_path, tiny_checkpoint)
    with workstation(settings) as first, workstation(settings) as second:  # two replicas, one database
        headers = log_in(first, *ADMIN)
        assert second.get("/v1/auth/me", headers=headers).status_code == 200
        assert second.post("/v1/auth/logout", headers=headers).status_code == 204
        for replica in (first, second):
            refused = replica.get("/v1/auth/me", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["detail"] == "The token has been revoked (logged out); log in again."
        assert first.get("/v1/auth/me", headers=log_in(first, *ADMIN)).status_code == 200  # a new login works


def test_the_ui_log_out_calls_the_backend(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with workstation(hardening_settings(tmp_path, tiny_checkpoint)) as http:
        token = http.post("/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]}).json()["access_token"]
        BackendClient("http://testserver", token=token, http=http).logout()
        assert http.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# --- 6. the reason of "send for review" is encrypted and hidden from annotators --------------------------------------


def test_review_reason_is_encrypted_and_redacted(station: dict[str, object]) -> None:
    http, radiologist, annotator = station["http"], station["radiologist"], station["annotator"]
    case_id = study(http, radiologist, RADIOGRAPH).json()["case_id"]
    reason = "Mrs Pemberton-Quayle says it hurts; please double-read."
    sent = http.post(f"/v1/cases/{case_id}/review", json={"reason": reason}, headers=radiologist)
    assert sent.status_code == 200, sent.text
    assert sent.json()["review_reason"] == reason
    assert http.get(f"/v1/cases/{case_id}", headers=radiologist).json()["review_reason"] == reason
    # An annotator meets the case in the queue (its reason code, never the text) and may not open it before reading.
    queue = http.get("/v1/queue", params={"limit": 500}, headers=annotator)
    item = next(item for item in queue.json()["items"] if item["case_id"] == case_id)
    assert "manual" in [reason["code"] for reason in item["reasons"]] and "Pemberton" not in queue.text
    seen_by_annotator = http.get(f"/v1/cases/{case_id}", headers=annotator)
    assert seen_by_annotator.status_code == 403 and "Pemberton" not in seen_by_annotator.text
    database = station["settings"].var_dir / "cxr.db"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(FULL)")
    raw = b"".join(path.read_bytes() for path in database.parent.glob("cxr.db*"))
    assert b"Pemberton" not in raw


# --- 7. what is plainly not a chest radiograph gets a 4xx, never a label --------------------------------------------


@pytest.mark.parametrize(
    ("upload", "detail"),
    [
        (
            dicom_bytes(to_stored(synthetic_radiograph(128, 128, seed=134)), modality="OT"),
            "The DICOM object is a secondary capture (a screenshot, scanned document or test pattern), "
            "not a chest radiograph (CR/DX).",
        ),
        (
            dicom_bytes(to_stored(synthetic_radiograph(128, 128, seed=135)), modality=""),
            "The DICOM object names no modality, so it is not known to be a radiograph; a chest X-ray (CR/DX) "
            "is required.",
        ),
        (
            png_bytes(to_stored(synthetic_radiograph(200, 20000, seed=136))),
            "The image is 100 times longer than wide; no chest radiograph is more than 4 times longer than wide.",
        ),
    ],
    ids=["secondary-capture", "no-modality", "20000x200"],
)
def test_what_is_plainly_not_a_chest_film_is_refused(station: dict[str, object], upload: bytes, detail: str) -> None:
    http, radiologist = station["http"], station["radiologist"]
    total = http.get("/v1/cases", headers=radiologist).json()["total"]
    answer = study(http, radiologist, upload)
    assert answer.status_code == 422 and answer.json()["detail"] == detail
    assert "prediction" not in answer.json()
    stateless = http.post("/predict", files={"file": ("x.bin", upload)}, headers=radiologist)
    assert stateless.status_code == 422 and stateless.json()["detail"] == detail
    assert http.get("/v1/cases", headers=radiologist).json()["total"] == total  # nothing stored


# --- 9. files of studies that were never committed are swept ---------------------------------------------------------


def test_orphaned_images_and_case_files_are_swept(station: dict[str, object]) -> None:
    http, settings = station["http"], station["settings"]
    kept_id = study(http, station["radiologist"], RADIOGRAPH).json()["case_id"]
    services = http.app.state.services  # type: ignore[attr-defined]
    images, artifacts = services.storage.images, services.storage.artifacts
    orphan = images.put(b"bytes of a study whose case row never committed")
    fresh_orphan = images.put(b"bytes of a study still being analysed")
    artifacts.put("c0ffee00-dead-beef-0000-000000000000", "pixels-png16.png", b"pixels of that study")
    hour_ago = time.time() - 2 * settings.orphan_grace_s
    for path in (images.path(orphan), artifacts.root / "c0ffee00-dead-beef-0000-000000000000"):
        os.utime(path, (hour_ago, hour_ago))
    for path in (artifacts.root / "c0ffee00-dead-beef-0000-000000000000").iterdir():
        os.utime(path, (hour_ago, hour_ago))
    kept_sha = http.get(f"/v1/cases/{kept_id}", headers=station["admin"]).json()["image_sha256"]
    os.utime(images.path(kept_sha), (hour_ago, hour_ago))  # old, but its case exists
    removed = sweep_orphans(services.storage, grace_s=settings.orphan_grace_s)
    assert removed.images == 1 and removed.case_folders == 1
    assert not images.exists(orphan) and images.exists(fresh_orphan) and images.exists(kept_sha)
    assert not (artifacts.root / "c0ffee00-dead-beef-0000-000000000000").exists()
    assert (artifacts.root / kept_id).is_dir()
    assert http.get(f"/v1/cases/{kept_id}/image", headers=station["radiologist"]).status_code == 200


def test_the_sweep_runs_at_start(tiny_checkpoint: Path, tmp_path: Path) -> None:
    settings = hardening_settings(tmp_path, tiny_checkpoint)
    store = ImageStore(settings.resolved_image_store_dir, cipher=PhiCipher([PHI_KEY]))
    orphan = store.put(b"left behind by a kill -9")
    long_ago = time.time() - 2 * settings.orphan_grace_s
    os.utime(store.path(orphan), (long_ago, long_ago))
    with workstation(settings):
        deadline = time.time() + 30
        while store.exists(orphan) and time.time() < deadline:
            time.sleep(0.2)
        assert not store.exists(orphan)


# --- 10. the rate limit can be switched off -------------------------------------------------------------------------


def test_rate_limit_enabled_false_switches_the_limit_off(tiny_checkpoint: Path, tmp_path: Path) -> None:
    limited = hardening_settings(tmp_path / "on", tiny_checkpoint, rate_limit="3/minute")
    with workstation(limited) as http:
        answers = [http.get("/openapi.json").status_code for _ in range(5)]
        assert answers[-1] == 429
    unlimited = hardening_settings(tmp_path / "off", tiny_checkpoint, rate_limit="3/minute", rate_limit_enabled=False)
    with workstation(unlimited) as http:
        answers = [http.get("/openapi.json") for _ in range(8)]
        assert [answer.status_code for answer in answers] == [200] * 8
        assert "X-RateLimit-Limit" not in answers[0].headers
