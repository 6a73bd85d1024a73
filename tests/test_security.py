"""Security of the API: passwords, tokens, API keys, first admin, rate limits, timeouts, CORS, headers, redaction of
patient identity for annotators, encryption at rest in the raw database file, no patient data in logs or errors, and
DICOM de-identification.

Three kinds of tests: in-process apps built from the real security pieces (fast, any setting), the session's live
server (tests/conftest.py), and one extra live server whose logs and database file this module reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.auth import (
    AuthService,
    ConfigurationError,
    WeakPasswordError,
    hash_password,
    load_jwt_secret,
    validate_password,
    verify_password,
)
from api.errors import install_error_handlers
from api.permissions import IDENTIFYING_PATIENT_FIELDS, Role, redact_for
from api.routers import auth as auth_routes
from api.routers import users as users_routes
from api.schemas import CaseOut, PatientOut
from api.security import AUTHORIZE, RequestTimeoutMiddleware, install_security
from imaging import DeidentificationError, Deidentifier, ImagingError, decode_image, deidentify_dicom
from monitoring import AuditTrail
from settings import Settings
from storage import Database, migrate_database
from tests.conftest import ApiAccount
from tests.factories import dicom_bytes, png_bytes, synthetic_radiograph, to_stored
from tests.live_server import ROOT, free_port

STRONG_PASSWORD = "correct horse battery staple"


# --- in-process app: the real auth/users routers behind the real security layers ------------------------------------


def security_settings(var_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "var_dir": var_dir,
        "database_url": "",
        "jwt_secret": secrets.token_urlsafe(48),
        "admin_username": "sec-admin",
        "admin_password": STRONG_PASSWORD,
        "rate_limit": "1000/minute",
        "login_rate_limit": "3/hour",
        "cors_origins": "https://ws.example.org",
        "token_ttl_minutes": 5,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def build_app(settings: Settings) -> FastAPI:
    database = Database(settings.resolved_database_url)
    migrate_database(database)
    app = FastAPI(dependencies=[AUTHORIZE])
    install_error_handlers(app)
    app.include_router(auth_routes.router)
    app.include_router(users_routes.router)
    app.state.auth = AuthService.start(settings, database)
    app.state.services = SimpleNamespace(audit=AuditTrail.from_settings(settings, database))  # logins are audited
    install_security(app, settings)

    @app.get("/v1/not-in-the-table")
    def unlisted() -> dict[str, str]:
        return {"secret": "nobody should read this"}

    return app


@pytest.fixture(scope="module")
def secure_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(build_app(security_settings(tmp_path_factory.mktemp("sec")))) as http:
        yield http


def log_in(http: TestClient | httpx.Client, username: str, password: str) -> dict[str, str]:
    answer = http.post("/v1/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def new_user(http: TestClient | httpx.Client, admin: dict[str, str], role: str) -> tuple[str, str, str, dict[str, str]]:
    """Create an account as `admin` and log it in: (id, username, password, auth headers)."""
    username, password = f"{role[:4]}-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    answer = http.post("/v1/users", json={"username": username, "password": password, "role": role}, headers=admin)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], username, password, log_in(http, username, password)


@pytest.fixture(scope="module")
def admin_headers(secure_app: TestClient) -> dict[str, str]:
    return log_in(secure_app, "sec-admin", STRONG_PASSWORD)


def test_password_hashing_and_policy() -> None:
    stored = hash_password(STRONG_PASSWORD)
    assert stored.startswith("$argon2id$") and STRONG_PASSWORD not in stored
    assert verify_password(stored, STRONG_PASSWORD) and not verify_password(stored, STRONG_PASSWORD + "!")
    assert not verify_password("not-a-hash", STRONG_PASSWORD)
    for weak, reason in [("short", "at least"), ("password1234", "easy"), ("aaaaaaaaaaaaaaa", "easy"),
                         ("x" * 300, "at most"), ("my name is dr.house!", "username")]:  # fmt: skip
        with pytest.raises(WeakPasswordError, match=reason):
            validate_password(weak, "dr.house")


def test_login_contract_and_uniform_failures(secure_app: TestClient) -> None:
    answer = secure_app.post("/v1/auth/login", json={"username": "SEC-ADMIN", "password": STRONG_PASSWORD})
    assert answer.status_code == 200  # usernames are case-insensitive
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "role"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 5 * 60 and body["role"] == "admin"
    me = secure_app.get("/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me["username"] == "sec-admin" and me["role"] == "admin" and me["kind"] == "user"
    wrong = secure_app.post("/v1/auth/login", json={"username": "sec-admin", "password": "wrong password!!"})
    unknown = secure_app.post("/v1/auth/login", json={"username": "nobody-here", "password": "wrong password!!"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()  # no hint which usernames exist
    assert secure_app.post("/v1/auth/login", json={"username": "x"}).status_code == 422


def test_failed_logins_are_throttled_per_account(secure_app: TestClient, admin_headers: dict[str, str]) -> None:
    _, username, password, _ = new_user(secure_app, admin_headers, "radiologist")
    for _ in range(3):  # LOGIN_RATE_LIMIT=3/hour
        failed = secure_app.post("/v1/auth/login", json={"username": username, "password": "nope-nope-nope"})
        assert failed.status_code == 401
    blocked = secure_app.post("/v1/auth/login", json={"username": username, "password": password})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    log_in(secure_app, "sec-admin", STRONG_PASSWORD)  # other accounts are not locked out


def test_account_changes_end_old_tokens(secure_app: TestClient, admin_headers: dict[str, str]) -> None:
    user_id, username, _, headers = new_user(secure_app, admin_headers, "radiologist")
    assert secure_app.get("/v1/auth/me", headers=headers).json()["role"] == "radiologist"
    assert (
        secure_app.patch(f"/v1/users/{user_id}", json={"role": "annotator"}, headers=admin_headers).status_code == 200
    )
    stale = secure_app.get("/v1/auth/me", headers=headers)
    assert stale.status_code == 401 and "log in again" in stale.json()["detail"]
    new_password = secrets.token_urlsafe(18)
    reset = secure_app.patch(f"/v1/users/{user_id}", json={"password": new_password}, headers=admin_headers)
    assert reset.status_code == 200
    fresh = log_in(secure_app, username, new_password)
    assert secure_app.get("/v1/auth/me", headers=fresh).json()["role"] == "annotator"
    changed = secure_app.post(
        "/v1/auth/password",
        headers=fresh,
        json={"current_password": new_password, "new_password": secrets.token_urlsafe(18)},
    )
    assert changed.status_code == 204
    assert secure_app.get("/v1/auth/me", headers=fresh).status_code == 401
    weak = secure_app.patch(f"/v1/users/{user_id}", json={"password": "aaaaaaaaaaaaaaaa"}, headers=admin_headers)
    assert weak.status_code == 422 and "easy" in weak.json()["detail"]


def test_admin_rules(secure_app: TestClient, admin_headers: dict[str, str]) -> None:
    me = secure_app.get("/v1/auth/me", headers=admin_headers).json()
    for change in ({"role": "radiologist"}, {"active": False}):
        refused = secure_app.patch(f"/v1/users/{me['id']}", json=change, headers=admin_headers)
        assert refused.status_code == 409 and "last active admin" in refused.json()["detail"]
    assert secure_app.delete(f"/v1/users/{me['id']}", headers=admin_headers).status_code == 409
    taken = secure_app.post("/v1/users", json={"username": "Sec-Admin", "password": STRONG_PASSWORD + "1",
                                               "role": "admin"}, headers=admin_headers)  # fmt: skip
    assert taken.status_code == 409
    assert secure_app.get("/v1/users/unknown-id", headers=admin_headers).status_code == 404
    listed = secure_app.get("/v1/users", headers=admin_headers).json()
    assert all("password_hash" not in user and "$argon2" not in json.dumps(user) for user in listed)


def test_api_keys_shown_once_and_revocable(secure_app: TestClient, admin_headers: dict[str, str]) -> None:
    created = secure_app.post("/v1/api-keys", json={"name": "pacs-router", "role": "radiologist"},
                              headers=admin_headers)  # fmt: skip
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("cxrk_") and created.json()["prefix"] == key[:12]
    listing = secure_app.get("/v1/api-keys", headers=admin_headers).json()
    assert key not in json.dumps(listing) and all("key" not in item for item in listing)
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = secure_app.get("/v1/auth/me", headers=headers).json()
        assert me == {"id": created.json()["id"], "username": "pacs-router", "role": "radiologist", "kind": "api_key"}
    assert secure_app.get("/v1/users", headers={"X-API-Key": key}).status_code == 403  # its role, not an admin's
    assert secure_app.delete(f"/v1/api-keys/{created.json()['id']}", headers=admin_headers).status_code == 204
    assert secure_app.delete(f"/v1/api-keys/{created.json()['id']}", headers=admin_headers).status_code == 204
    revoked = secure_app.get("/v1/auth/me", headers={"X-API-Key": key})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert secure_app.delete("/v1/api-keys/unknown", headers=admin_headers).status_code == 404
    expiring = secure_app.post("/v1/api-keys", json={"name": "x", "role": "admin", "expires_in_days": 0},
                               headers=admin_headers)  # fmt: skip
    assert expiring.status_code == 422


def test_unlisted_route_is_closed_even_to_admins(secure_app: TestClient, admin_headers: dict[str, str]) -> None:
    answer = secure_app.get("/v1/not-in-the-table", headers=admin_headers)
    assert answer.status_code == 403 and "permission table" in answer.json()["detail"]
    assert "nobody" not in answer.text


def test_other_authorization_schemes_are_refused(secure_app: TestClient) -> None:
    answer = secure_app.get("/v1/auth/me", headers={"Authorization": "Basic c2VjLWFkbWluOnB3"})
    assert answer.status_code == 401 and "Bearer" in answer.json()["detail"]


def test_security_headers_and_cors(secure_app: TestClient, admin_headers: dict[str, str]) -> None:
    answer = secure_app.get("/v1/auth/me", headers=admin_headers)
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert answer.headers["cache-control"] == "no-store" and answer.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in answer.headers  # plain HTTP here; set on HTTPS
    assert "cdn.jsdelivr.net" in secure_app.get("/docs").headers["content-security-policy"]
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    allowed = secure_app.options("/v1/auth/me", headers={"Origin": "https://ws.example.org", **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://ws.example.org"
    refused = secure_app.options("/v1/auth/me", headers={"Origin": "https://evil.example.com", **preflight})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    simple = secure_app.get("/v1/auth/me", headers={"Origin": "https://evil.example.com", **admin_headers})
    assert "access-control-allow-origin" not in simple.headers


def test_rate_limit_is_per_user_and_key(tmp_path: Path) -> None:
    with TestClient(build_app(security_settings(tmp_path, rate_limit="6/hour"))) as http:
        admin = log_in(http, "sec-admin", STRONG_PASSWORD)  # login counts against the caller's address
        key = http.post("/v1/api-keys", json={"name": "k", "role": "annotator"}, headers=admin).json()["key"]
        statuses = [http.get("/v1/auth/me", headers=admin).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]  # 6 per hour, one of them spent on creating the key
        limited = http.get("/v1/auth/me", headers=admin)
        assert limited.status_code == 429 and "RATE_LIMIT" in limited.json()["detail"]
        assert int(limited.headers["retry-after"]) >= 1 and limited.headers["x-ratelimit-limit"] == "6"
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert http.get("/v1/auth/me", headers={"X-API-Key": key}).status_code == 200  # its own budget


def test_request_timeout_answers_504() -> None:
    async def slow_async(_: Request) -> PlainTextResponse:
        await asyncio.sleep(5)
        return PlainTextResponse("late")

    def slow_sync(_: Request) -> PlainTextResponse:  # Starlette runs it in a worker thread
        time.sleep(1.5)
        return PlainTextResponse("late")

    async def fast(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/async", slow_async), Route("/sync", slow_sync), Route("/fast", fast)])
    app.add_middleware(RequestTimeoutMiddleware, timeout_s=0.3)
    with TestClient(app) as http:
        for path in ("/async", "/sync"):
            started = time.monotonic()
            answer = http.get(path)
            assert answer.status_code == 504 and "REQUEST_TIMEOUT_S" in answer.json()["detail"]
            assert time.monotonic() - started < 1.4, path
        assert http.get("/fast").text == "ok"


def test_unsafe_settings_refuse_to_start(tmp_path: Path) -> None:
    from api.main import create_app

    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        create_app(Settings(var_dir=tmp_path, environment="production", jwt_secret=""))
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_jwt_secret(Settings(var_dir=tmp_path, jwt_secret="short"))
    with pytest.raises(ConfigurationError, match="ADMIN_PASSWORD"):
        create_app(Settings(var_dir=tmp_path, admin_username="boss", admin_password="admin"))
    with pytest.raises(ConfigurationError, match="neither"):
        create_app(Settings(var_dir=tmp_path, admin_username="boss"))
    with pytest.raises(ConfigurationError, match="CORS_ORIGINS"):
        create_app(Settings(var_dir=tmp_path, cors_origins="*"))


def test_development_secret_is_generated_once_private(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, jwt_secret="")
    first, second = load_jwt_secret(settings), load_jwt_secret(settings)
    assert first == second and len(first) >= 32
    assert (tmp_path / "jwt.secret").stat().st_mode & 0o777 == 0o600


def test_no_default_password_and_the_cli_first_admin(tmp_path: Path) -> None:
    """Without ADMIN_* settings no account exists (no default password), `ensure-admin` prints a random one once."""
    env = {**os.environ, "VAR_DIR": str(tmp_path), "DATABASE_URL": "", "ADMIN_USERNAME": "", "ADMIN_PASSWORD": "",
           "JWT_SECRET": secrets.token_urlsafe(48)}  # fmt: skip
    no_admin = security_settings(tmp_path, admin_username="", admin_password="", login_rate_limit="100/hour")
    with TestClient(build_app(no_admin)) as http:
        for password in ("admin", "password", "changeme", "admin123456789"):
            assert http.post("/v1/auth/login", json={"username": "admin", "password": password}).status_code == 401

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api.admin", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    first = cli("ensure-admin")
    assert first.returncode == 0, first.stderr
    password = first.stdout.split("password: ")[1].split()[0]
    again = cli("ensure-admin")
    assert again.returncode == 0 and password not in again.stdout and "exists" in again.stdout
    with TestClient(build_app(security_settings(tmp_path, admin_username="", admin_password="",
                                                jwt_secret=env["JWT_SECRET"]))) as http:  # fmt: skip
        assert http.post("/v1/auth/login", json={"username": "admin", "password": password}).json()["role"] == "admin"
    assert cli("create-admin", "--username", "admin").returncode == 2  # taken
    listing = cli("list-users")
    assert "admin\tadmin\tactive" in listing.stdout


# --- what an annotator sees of a case (session server) ----------------------------------------------------------------


def test_annotators_never_get_patient_identity(
    client: httpx.Client, annotator_client: httpx.Client, api_accounts: dict[str, ApiAccount], kermany_dir: Path
) -> None:
    # A clearly normal film (P(PNEUMONIA) 0.003) as a DICOM naming the patient: a confident result that does not wait
    # for expert reads, so an annotator may open the case (queued ones are closed to them: blind reading).
    film = decode_image((kermany_dir / "test" / "NORMAL" / "IM-0001-0001.jpg").read_bytes()).pixels
    payload = dicom_bytes(to_stored(film), extra_tags={"PatientName": "Quixote^Alonso", "PatientID": "MRN-QX-1"})
    patient = {"name": "Alonso Quixote", "patient_id": "MRN-QX-1", "birth_date": "1950-05-05", "age": 74, "sex": "M",
               "clinical_history": "Seen at La Mancha clinic."}  # fmt: skip
    created = client.post("/v1/studies", files={"file": ("q.dcm", payload)}, data={"patient": json.dumps(patient)})
    assert created.status_code == 201, created.text
    case = created.json()
    radiologist_id = client.get("/v1/auth/me").json()["id"]
    assert case["created_by"] == radiologist_id and case["patient"]["name"] == "Alonso Quixote"
    assert case["status"] == "analyzed", case  # not queued for expert reads
    seen = annotator_client.get(f"/v1/cases/{case['case_id']}")
    assert seen.status_code == 200
    body = seen.text
    for secret in ("Quixote", "Alonso", "MRN-QX-1", "La Mancha", "1950-05-05"):
        assert secret not in body, secret
    redacted = seen.json()
    assert redacted["patient"]["age"] == 74 and redacted["patient"]["sex"] == "M"
    assert redacted["study"]["Modality"] == "DX" and redacted["prediction"] == case["prediction"]
    assert annotator_client.get(f"/v1/cases/{case['case_id']}/image").status_code == 200
    assert annotator_client.get("/v1/cases").status_code == 403  # the listing filters by patient id
    assert annotator_client.post("/v1/dicom/inspect", files={"file": ("q.dcm", payload)}).status_code == 403


def test_redaction_fails_closed_for_unknown_roles() -> None:
    case = CaseOut(
        case_id="c", created_at="2025-01-01T00:00:00Z", updated_at="2025-01-01T00:00:00Z", status="analyzed",
        task="pneumonia", prediction="NORMAL", confidence=0.9, probabilities={"NORMAL": 0.9, "PNEUMONIA": 0.1},
        positive_probability=0.1, threshold=0.5, model_version="v", image_sha256="0" * 64, image_format="DICOM",
        patient=PatientOut(patient_id="P1", name="N", birth_date="2000-01-01", clinical_history="H", age=25, sex="F"),
        study={"PatientName": "N", "InstitutionName": "I", "Modality": "DX", "width": 10},
    )  # fmt: skip
    assert redact_for(Role.RADIOLOGIST, case) == case and redact_for("admin", case) == case
    for role in (Role.ANNOTATOR, "auditor"):
        hidden = redact_for(role, case)
        assert all(getattr(hidden.patient, name) is None for name in IDENTIFYING_PATIENT_FIELDS)
        assert hidden.study == {"Modality": "DX", "width": 10} and hidden.patient.age == 25


# --- a live server whose logs and database file we read ---------------------------------------------------------------

LOG_SECRETS = {
    "form name": "Wilhelmina Blackwood-Test",
    "form id": "MRN-LOG-77123",
    "history": "Lives at 42 Privet Lane",
    "dicom name": "Featherstonehaugh^Cornelius",
    "dicom id": "DCM-ID-99321",
    "rejected name": "Bartholomew Rejected-Name",
}


@pytest.fixture(scope="module")
def logged_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """uvicorn at DEBUG level with stdout and stderr in a file; its own var dir (database, keys)."""
    var_dir = tmp_path_factory.mktemp("logged-var")
    log_path = var_dir.parent / "server.log"
    password = secrets.token_urlsafe(18)
    env = {**os.environ, "VAR_DIR": str(var_dir), "MODEL_PATH": str(tiny_checkpoint), "DATABASE_URL": "",
           "TORCH_THREADS": "1", "LOG_LEVEL": "DEBUG", "ADMIN_USERNAME": "log-admin", "ADMIN_PASSWORD": password,
           "RATE_LIMIT": "25/hour", "CORS_ORIGINS": "https://ws.example.org"}  # fmt: skip
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "debug"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert process.poll() is None, log_path.read_text()[-3000:]
        with httpx.Client(base_url=base, timeout=60) as http:
            http.headers.update(log_in(http, "log-admin", password))
            yield {"http": http, "log": log_path, "var": var_dir, "password": password}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_no_patient_data_in_logs_or_error_messages(logged_server: dict[str, object]) -> None:
    http: httpx.Client = logged_server["http"]  # type: ignore[assignment]
    png = png_bytes(to_stored(synthetic_radiograph(256, 256, seed=81)))
    form = {"name": LOG_SECRETS["form name"], "patient_id": LOG_SECRETS["form id"], "clinical_history":
            LOG_SECRETS["history"]}  # fmt: skip
    assert (
        http.post("/v1/studies", files={"file": ("a.png", png)}, data={"patient": json.dumps(form)}).status_code == 201
    )
    tagged = dicom_bytes(
        to_stored(synthetic_radiograph(256, 256, seed=82)),
        extra_tags={"PatientName": LOG_SECRETS["dicom name"], "PatientID": LOG_SECRETS["dicom id"]},
    )
    assert http.post("/v1/studies", files={"file": ("b.dcm", tagged)}).status_code == 201
    listed = http.get("/v1/cases", params={"patient_id": LOG_SECRETS["form id"]})
    assert listed.status_code == 200 and listed.json()["total"] == 1
    rejected = http.post(
        "/v1/studies",
        files={"file": ("c.png", png)},
        data={"patient": json.dumps({"name": LOG_SECRETS["rejected name"], "sex": "nonsense"})},
    )
    assert rejected.status_code == 422 and LOG_SECRETS["rejected name"] not in rejected.text
    truncated = http.post("/v1/studies", files={"file": ("d.dcm", tagged[: len(tagged) // 3])})
    assert 400 <= truncated.status_code < 500 and "Featherstonehaugh" not in truncated.text
    assert http.get("/v1/cases/unknown-case").status_code == 404
    time.sleep(0.5)  # let the server flush its last log lines
    log_text = Path(logged_server["log"]).read_text(errors="replace")  # type: ignore[arg-type]
    assert "/v1/cases?[redacted]" in log_text  # the access log was captured, without its query string
    for what, value in LOG_SECRETS.items():
        for fragment in [value, *(part for part in value.replace("^", " ").split() if len(part) >= 6)]:
            assert fragment not in log_text, f"{what} ({fragment}) appears in the server log"


def test_patient_fields_are_unreadable_in_the_raw_database(logged_server: dict[str, object]) -> None:
    http: httpx.Client = logged_server["http"]  # type: ignore[assignment]
    png = png_bytes(to_stored(synthetic_radiograph(256, 256, seed=83)))
    patient = {"name": "Philippa Rawfile-Check", "patient_id": "MRN-RAW-5521", "birth_date": "1961-02-03",
               "clinical_history": "Smoker, forty pack-years, Rawfile."}  # fmt: skip
    created = http.post("/v1/studies", files={"file": ("e.png", png)}, data={"patient": json.dumps(patient)})
    assert created.status_code == 201
    key = http.post("/v1/api-keys", json={"name": "raw-check", "role": "radiologist"}).json()["key"]
    database = Path(logged_server["var"]) / "cxr.db"  # type: ignore[arg-type]
    raw = b"".join(path.read_bytes() for path in database.parent.glob("cxr.db*"))
    for secret in ("Philippa", "Rawfile", "MRN-RAW-5521", "1961-02-03", "pack-years", str(logged_server["password"]),
                   key, LOG_SECRETS["dicom id"], "Featherstonehaugh"):  # fmt: skip
        assert secret.encode() not in raw, secret
    assert b"$argon2id$" in raw and hashlib.sha256(key.encode()).hexdigest().encode() in raw
    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT patient_name, patient_id, clinical_history, study_metadata FROM cases "
                                 "WHERE id = ?", (created.json()["case_id"],)).fetchone()  # fmt: skip
    assert row is not None and all(str(value).startswith("gAAAAA") for value in row)  # Fernet tokens
    assert http.get(f"/v1/cases/{created.json()['case_id']}").json()["patient"]["name"] == "Philippa Rawfile-Check"


def test_live_limits_headers_and_probes(logged_server: dict[str, object]) -> None:
    http: httpx.Client = logged_server["http"]  # type: ignore[assignment]
    probes = [http.get("/health") for _ in range(30)]  # RATE_LIMIT=25/hour: an hour, so no window ends mid-test
    assert all(answer.status_code == 200 for answer in probes)  # probes are exempt
    assert probes[0].headers["x-content-type-options"] == "nosniff"
    _, _, _, user = new_user(http, {}, "annotator")  # the client already sends the admin's token
    statuses = [http.get("/v1/auth/me", headers=user).status_code for _ in range(26)]
    assert statuses == [200] * 25 + [429]


# --- DICOM de-identification ------------------------------------------------------------------------------------------

IDENTIFYING_TAGS = {
    "PatientName": "Ramirez^Dolores^Q",
    "PatientID": "HOSP-000123",
    "PatientBirthDate": "19470312",
    "StudyDate": "20240501",
    "SeriesDate": "20240501",
    "AcquisitionDateTime": "20240501101500.000000",
    "AccessionNumber": "ACC-555",
    "StudyID": "S-77",
    "InstitutionName": "Saint Elsewhere Hospital",
    "InstitutionAddress": "1 Harbour Road",
    "ReferringPhysicianName": "Westphall^Donald",
    "OperatorsName": "Craig^Mark",
    "StationName": "XR-ROOM-3",
    "DeviceSerialNumber": "SN-998877",
    "StudyDescription": "Chest PA for Dolores",
    "OtherPatientIDs": "ALT-42",
    "PatientAddress": "7 Elm Street",
    "PatientAge": "092Y",
    "PatientSex": "F",
}


def identified_dicom(study_uid: str, seed: int, **extra: object) -> bytes:
    tags = {**IDENTIFYING_TAGS, "StudyInstanceUID": study_uid, **extra}
    return dicom_bytes(to_stored(synthetic_radiograph(128, 128, seed=seed)),
                       extra_tags=tags, raw_tags={0x00091010: ("LO", "private Dolores note")})  # fmt: skip


def test_deidentification_removes_identity_and_keeps_the_image() -> None:
    key = Deidentifier(secrets.token_bytes(32))
    study_uid = "1.2.826.0.1.3680043.8.498.12345"
    original_bytes = identified_dicom(study_uid, seed=1)
    cleaned_bytes = deidentify_dicom(original_bytes, key)
    for keyword, value in IDENTIFYING_TAGS.items():
        if keyword not in ("PatientAge", "PatientSex"):
            for part in value.split("^"):
                assert len(part) < 3 or part.encode() not in cleaned_bytes, keyword
    assert b"Dolores" not in cleaned_bytes and study_uid.encode() not in cleaned_bytes  # private tag gone too
    original, cleaned = dcmread(io.BytesIO(original_bytes)), dcmread(io.BytesIO(cleaned_bytes))
    pseudonym = key.pseudonym("HOSP-000123")
    assert cleaned.PatientName == pseudonym and cleaned.PatientID == pseudonym and pseudonym.startswith("ANON-")
    shift = key.date_shift_days("HOSP-000123")
    assert 1 <= shift <= 3650
    assert cleaned.StudyDate != original.StudyDate and len(cleaned.StudyDate) == 8

    def day(text: str) -> datetime:
        return datetime.strptime(text[:8], "%Y%m%d")

    assert (day(original.StudyDate) - day(cleaned.StudyDate)).days == shift
    assert (day(original.PatientBirthDate) - day(cleaned.PatientBirthDate)).days == shift  # intervals kept
    assert cleaned.AcquisitionDateTime.endswith("101500.000000")
    assert cleaned.AccessionNumber == "" and cleaned.ReferringPhysicianName == "" and cleaned.OperatorsName == ""
    for removed in ("InstitutionName", "InstitutionAddress", "StationName", "DeviceSerialNumber", "StudyDescription",
                    "OtherPatientIDs", "PatientAddress"):  # fmt: skip
        assert removed not in cleaned, removed
    assert not any(element.tag.is_private for element in cleaned)
    assert cleaned.PatientAge == "090Y" and cleaned.PatientSex == "F"  # characteristics kept, very old ages capped
    assert cleaned.SOPClassUID == original.SOPClassUID  # a kind of object, not an instance
    assert cleaned.SOPInstanceUID != original.SOPInstanceUID and cleaned.SOPInstanceUID.startswith("2.25.")
    assert cleaned.file_meta.MediaStorageSOPInstanceUID == cleaned.SOPInstanceUID
    assert cleaned.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert cleaned.PatientIdentityRemoved == "YES" and "PS3.15" in cleaned.DeidentificationMethod[0]
    assert [item.CodeValue for item in cleaned.DeidentificationMethodCodeSequence] == ["113100", "113107", "113108"]
    np.testing.assert_array_equal(cleaned.pixel_array, original.pixel_array)
    assert decode_image(cleaned_bytes).width == 128


def test_deidentification_is_consistent_under_one_key() -> None:
    secret = secrets.token_bytes(32)
    study_uid = "1.2.826.0.1.3680043.8.498.777"

    def cleaned(seed: int, key: Deidentifier) -> Dataset:
        return dcmread(io.BytesIO(deidentify_dicom(identified_dicom(study_uid, seed), key)))

    first, second = cleaned(2, Deidentifier(secret)), cleaned(3, Deidentifier(secret))
    other_key = cleaned(2, Deidentifier(secrets.token_bytes(32)))
    assert first.StudyInstanceUID == second.StudyInstanceUID  # same study, two files: still one study
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.PatientID == second.PatientID and first.StudyDate == second.StudyDate
    assert other_key.StudyInstanceUID != first.StudyInstanceUID and other_key.PatientID != first.PatientID
    assert len(first.StudyInstanceUID) <= 64


def test_deidentification_refuses_burned_in_text_and_damaged_files() -> None:
    key = Deidentifier(secrets.token_bytes(32))
    with pytest.raises(DeidentificationError, match="burned-in"):
        deidentify_dicom(identified_dicom("1.2.3.4", 4, BurnedInAnnotation="YES"), key)
    with pytest.raises(ImagingError):
        deidentify_dicom(identified_dicom("1.2.3.4", 5)[:200], key)
    nested = Dataset()
    nested.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    nested.ReferringPhysicianName = "Nested^Person"
    parent = Dataset()
    parent.PatientID = "P"
    parent.ReferencedImageSequence = [nested]
    cleaned = key.dataset(parent)
    assert cleaned.ReferencedImageSequence[0].ReferencedSOPInstanceUID == key.uid("1.2.3.4.5.6")
    assert cleaned.ReferencedImageSequence[0].ReferringPhysicianName == ""
    assert parent.PatientID == "P"  # the input is left untouched
    with pytest.raises(ValueError):
        Deidentifier(b"short")
