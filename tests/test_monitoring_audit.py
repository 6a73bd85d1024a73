"""The audit trail as an admin or an auditor uses it: who did what to which patient's case, from where, with which
model; tampering with the database is found and the first altered, inserted or deleted record is named."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import text

from monitoring import AuditEntry, AuditFilter, AuditTrail
from storage import Database, migrate_database
from tests.conftest import DATABASES, make_tiny_checkpoint, postgres_schema
from tests.live_server import ROOT
from tests.monitoring_support import ADMIN, OUTSIDE, in_process_api, radiograph_png

KEY = b"k" * 48


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", threshold=0.3)


def actions(page: dict) -> list[tuple]:
    return [(e["action"], e["outcome"], e["actor_name"]) for e in reversed(page["items"])]


def test_the_trail_says_who_did_what_to_which_case(tmp_path: Path, model: Path) -> None:
    api = in_process_api(tmp_path, model)
    with api.client(login=False) as anonymous:
        assert (
            anonymous.post("/v1/auth/login", json={"username": ADMIN, "password": "wrong-password"}).status_code == 401
        )
        assert anonymous.get("/v1/cases").status_code == 401
    with api.client() as admin:
        for role in ("radiologist", "annotator"):
            created = admin.post(
                "/v1/users", json={"username": f"t-{role}", "password": "Long-enough-pw-1", "role": role}
            )
            assert created.status_code == 201, created.text
    with api.client(login=False) as radiologist, api.client(login=False) as annotator:
        for http, name in ((radiologist, "t-radiologist"), (annotator, "t-annotator")):
            token = http.post("/v1/auth/login", json={"username": name, "password": "Long-enough-pw-1"}).json()
            http.headers["Authorization"] = f"Bearer {token['access_token']}"
        patient = json.dumps({"patient_id": "MRN-77", "name": "Jane Roe"})
        files = {"file": ("cxr.png", radiograph_png(5), "image/png")}
        case = radiologist.post("/v1/studies", files=files, data={"patient": patient}).json()
        viewed = radiologist.get(f"/v1/cases/{case['case_id']}")
        assert radiologist.get(f"/v1/cases/{case['case_id']}/report", params={"kind": "clinical"}).status_code == 200
        assert annotator.get(f"/v1/cases/{case['case_id']}/report").status_code == 403
    with api.client() as admin:
        trail = admin.get("/v1/audit", params={"limit": 1000}).json()
        by_patient = admin.get("/v1/audit", params={"patient_id": "mrn-77 "}).json()  # normalised like case filters
        verified = admin.get("/v1/audit/verify").json()
        exported = admin.get("/v1/audit/export", params={"action": "case.view"})

    assert actions(trail)[:3] == [
        ("login.failed", "failed", ADMIN),
        ("access.denied", "denied", None),  # anonymous GET /v1/cases
        ("login", "ok", ADMIN),
    ]
    events = {(e["action"], e["actor_name"]): e for e in trail["items"]}
    study = events[("prediction", "t-radiologist")]
    assert study["target_id"] == case["case_id"] and study["model_version"] == "test-tiny-1"
    assert study["actor_role"] == "radiologist" and study["client"] == OUTSIDE[0]
    view = events[("case.view", "t-radiologist")]
    assert view["request_id"] == viewed.headers["X-Request-ID"] and view["detail"] == {"what": "case"}
    assert events[("report.download", "t-radiologist")]["detail"] == {"what": "report", "kind": "clinical"}
    denied = events[("access.denied", "t-annotator")]
    assert denied["target_id"] == case["case_id"] and denied["outcome"] == "denied"
    assert denied["detail"] == {"method": "GET", "route": "/v1/cases/{case_id}/report", "status": 403}
    assert actions(by_patient) == [
        ("prediction", "ok", "t-radiologist"),
        ("case.view", "ok", "t-radiologist"),
        ("report.download", "ok", "t-radiologist"),
        ("access.denied", "denied", "t-annotator"),
    ]
    assert verified["intact"] is True and verified["records"] == len(trail["items"]) and verified["problem"] is None
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(row["action"], row["actor_name"], row["target_id"]) for row in rows] == [
        ("case.view", "t-radiologist", case["case_id"])
    ]
    raw = Path(api.settings.var_dir / "cxr.db").read_bytes()
    with Database(api.settings.resolved_database_url).engine.connect() as connection:
        dumped = json.dumps([list(r) for r in connection.execute(text("SELECT * FROM audit_events"))], default=str)
    assert "Jane Roe" not in dumped and "MRN-77" not in dumped and b"Jane Roe" not in raw


def test_annotations_are_found_by_their_action_and_reader(tmp_path: Path, model: Path) -> None:
    api = in_process_api(tmp_path, model)
    with api.client() as admin:
        reader = {"username": "t-reader", "password": "Long-enough-pw-1", "role": "annotator"}
        assert admin.post("/v1/users", json=reader).status_code == 201
        files = {"file": ("cxr.png", radiograph_png(6), "image/png")}
        case_id = admin.post("/v1/studies", files=files).json()["case_id"]
        queued = admin.post("/v1/queue", json={"case_id": case_id, "reason": "double-read this one"})
        assert queued.status_code in (200, 201), queued.text
    with api.client(login=False) as annotator:
        token = annotator.post("/v1/auth/login", json={"username": "t-reader", "password": reader["password"]})
        annotator.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        assert annotator.post("/v1/queue/claim").json()["case_id"] == case_id
        read = {"case_id": case_id, "label": "PNEUMONIA", "confidence": 4}
        assert annotator.post("/v1/annotations", json=read).status_code == 201
    with api.client() as admin:
        submitted = admin.get("/v1/audit", params={"action": "annotation.submit"}).json()["items"]
        by_reader = admin.get("/v1/audit", params={"user": "t-reader"}).json()
    assert [(e["actor_name"], e["actor_role"], e["target_id"], e["detail"]) for e in submitted] == [
        ("t-reader", "annotator", case_id, {"label": "PNEUMONIA", "corrects": None})
    ]
    assert actions(by_reader) == [
        ("login", "ok", "t-reader"),
        ("queue.claim", "ok", "t-reader"),
        ("annotation.submit", "ok", "t-reader"),
    ]


def pdf_pages(pdf: bytes) -> list[str]:
    assert pdf.startswith(b"%PDF-")
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def test_pdf_export_lists_the_records_under_the_chains_verdict(tmp_path: Path, model: Path) -> None:
    api = in_process_api(tmp_path, model)
    database = Database(api.settings.resolved_database_url)
    today = datetime.now(UTC).date().isoformat()
    with api.client() as admin:
        files = {"file": ("cxr.png", radiograph_png(7), "image/png")}
        case_id = admin.post("/v1/studies", files=files).json()["case_id"]
        trail = AuditTrail.from_settings(api.settings, database)  # the backend's key (var dir): one chain
        for _ in range(70):  # enough rows for several pages
            trail.record(AuditEntry("case.view", actor_name="reader-zoe", actor_role="radiologist", case_id=case_id,
                                    model_version="test-tiny-1", detail={"what": "case"}))  # fmt: skip
        verified = admin.get("/v1/audit/verify").json()
        wanted = {"user": "reader-zoe", "date_from": today, "date_to": today}
        answer = admin.get("/v1/audit/export", params={**wanted, "format": "pdf"})
        csv_rows = list(csv.DictReader(io.StringIO(admin.get("/v1/audit/export", params=wanted).text)))
        with database.engine.begin() as connection:  # someone edits a record in the database
            connection.execute(text("UPDATE audit_events SET action = 'case.list' WHERE id = 5"))
        tampered = pdf_pages(admin.get("/v1/audit/export", params={"format": "pdf"}).content)
        exports = admin.get("/v1/audit", params={"action": "audit.export"}).json()["items"]
    database.dispose()

    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-disposition"] == 'attachment; filename="audit.pdf"'
    pages = pdf_pages(answer.content)
    first, everything = pages[0], "\n".join(pages)
    assert f"Chain verified intact: {verified['records']} records." in first
    assert verified["head_hash"] in re.sub(r"\s+", "", first)  # the hash may wrap onto two lines
    assert f"Period{today}to{today}(UTC,inclusive)" in re.sub(r"\s+", "", first) and "user reader-zoe" in first
    assert len(pages) >= 2 and all(f"Page {n} of {len(pages)}" in page for n, page in enumerate(pages, start=1))
    assert everything.count("reader-zoe\n(radiologist)") == 70 and everything.count("case.view") == 70
    assert "mon-admin" not in everything and "prediction" not in everything  # the admin's records are filtered out
    assert len(csv_rows) == 70 and csv_rows[0]["actor_name"] == "reader-zoe"  # CSV stays the default format
    assert "Chain verification FAILED: record 5 was altered" in tampered[0]
    assert [e["detail"]["format"] for e in exports] == ["pdf", "csv", "pdf"][::-1]  # newest first


# --- tampering, on both databases ------------------------------------------------------------------------------------


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        db = Database(url)
        migrate_database(db)
        yield db
        db.dispose()
        return
    with postgres_schema(request.getfixturevalue("postgres_server"), "test_audit") as url:
        db = Database(url)
        migrate_database(db)
        yield db
        db.dispose()


def fill(trail: AuditTrail, count: int) -> None:
    for index in range(count):
        trail.record(
            AuditEntry("case.view", actor_name=f"user{index}", case_id=f"case-{index}", detail={"b": 1, "a": 2})
        )


def execute(database: Database, sql: str) -> None:
    with database.write_connection() as connection:
        connection.execute(text(sql))


def test_verify_names_the_first_altered_record(database: Database) -> None:
    trail = AuditTrail(database, KEY)
    fill(trail, 6)
    assert trail.verify().intact  # JSONB reorders keys on PostgreSQL: the hash does not depend on it
    execute(database, "UPDATE audit_events SET actor_name = 'someone-else' WHERE id = 3")
    execute(database, "UPDATE audit_events SET action = 'login' WHERE id = 5")
    problem = trail.verify().problem
    assert problem is not None and (problem.kind, problem.record_id) == ("altered", 3)
    assert problem.message == "record 3 was altered (it no longer matches its hash)"


def test_verify_names_the_first_deleted_and_inserted_records(database: Database) -> None:
    trail = AuditTrail(database, KEY)
    fill(trail, 6)
    execute(database, "DELETE FROM audit_events WHERE id = 4")
    problem = trail.verify().problem
    assert problem is not None and (problem.kind, problem.record_id) == ("deleted", 5)
    assert problem.message == "records before record 5 were deleted (it links to none)"
    # A forged record where the deleted one was, linking to record 3 as it should; its hash cannot be made without
    # the key.
    execute(
        database,
        "INSERT INTO audit_events (id, at, action, outcome, detail, prev_hash, hash) SELECT 4, at, 'login', 'ok', "
        "'{}', hash, '" + "f" * 64 + "' FROM audit_events WHERE id = 3",
    )
    problem = trail.verify().problem
    assert problem is not None and (problem.kind, problem.record_id) == ("inserted", 4)


def test_appends_from_many_threads_keep_one_chain(database: Database) -> None:
    trail = AuditTrail(database, KEY)
    threads = [threading.Thread(target=fill, args=(trail, 10)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = trail.verify()
    assert (result.intact, result.records) == (True, 40)


def test_cli_verify_and_export(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    database = Database(url)
    migrate_database(database)
    key = secrets.token_urlsafe(32)
    fill(AuditTrail(database, key.encode()), 3)
    env = {**os.environ, "DATABASE_URL": url, "VAR_DIR": str(tmp_path), "AUDIT_KEY": key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "monitoring.audit", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    ok = cli("verify")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 3 records, chain intact; head "), ok.stderr
    today = datetime.now(UTC).date().isoformat()
    out = tmp_path / "audit.csv"
    exported = cli("export", "--from", today, "--to", today, "--out", str(out))
    assert exported.returncode == 0 and exported.stdout.strip() == f"wrote 3 records to {out}", exported.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [row["actor_name"] for row in rows] == ["user0", "user1", "user2"]
    assert cli("export", "--from", "2000-01-01", "--to", "2000-01-02", "--out", str(out)).stdout.startswith("wrote 0")
    execute(database, "UPDATE audit_events SET target_id = 'case-x' WHERE id = 2")
    tampered = cli("verify")
    assert tampered.returncode == 1
    assert (
        tampered.stdout.strip() == "TAMPERED: record 2 was altered (it no longer matches its hash) (altered); 3 records"
    )
    assert AuditTrail(database, key.encode()).events(AuditFilter(action="case.view"), limit=1)[0].id == 3
    database.dispose()
