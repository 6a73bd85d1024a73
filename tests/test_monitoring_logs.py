"""Logs as an operator reads them: one JSON object per line in var/logs/cxr.log, each request's lines carry the id
returned in X-Request-ID, the level follows LOG_LEVEL, and no patient name or id appears."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_tiny_checkpoint
from tests.monitoring_support import in_process_api, radiograph_png


def log_lines(var_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (var_dir / "logs" / "cxr.log").read_text(encoding="utf-8").splitlines()]


def test_json_lines_with_request_ids_and_no_patient_data(tmp_path: Path) -> None:
    model = make_tiny_checkpoint(tmp_path / "tiny.pt", threshold=0.3)
    api = in_process_api(tmp_path / "var", model)
    with api.client() as http:
        missing = http.get("/v1/cases/absent-case", headers={"X-Request-ID": "ward3-0123456789"})
        generated = http.get("/v1/cases/absent-case", headers={"X-Request-ID": "no spaces\tor tabs allowed"})
        patient = json.dumps({"patient_id": "MRN-4242", "name": "Jane Roe", "clinical_history": "cough, Jane's"})
        files = {"file": ("cxr.png", radiograph_png(9), "image/png")}
        study = http.post("/v1/studies", files=files, data={"patient": patient})
    assert missing.headers["X-Request-ID"] == "ward3-0123456789"
    assert len(generated.headers["X-Request-ID"]) == 32 and generated.headers["X-Request-ID"].isalnum()
    lines = log_lines(api.settings.var_dir)  # every line parses as JSON
    requests = [line for line in lines if line["message"] == "request"]
    first = next(line for line in requests if line.get("request_id") == "ward3-0123456789")
    assert (first["route"], first["status"], first["method"]) == ("/v1/cases/{case_id}", 404, "GET")
    assert first["level"] == "INFO" and first["time"].endswith("+00:00") and first["duration_ms"] >= 0
    stored = next(line for line in requests if line.get("request_id") == study.headers["X-Request-ID"])
    assert (stored["route"], stored["status"]) == ("/v1/studies", 201)
    server = [line for line in lines if not line["logger"].startswith("httpx")]  # the test client logs its URLs
    text = json.dumps(server)
    assert "Jane Roe" not in text and "MRN-4242" not in text and "absent-case" not in text


def test_the_level_follows_log_level(tmp_path: Path) -> None:
    model = make_tiny_checkpoint(tmp_path / "tiny.pt", threshold=0.3)
    api = in_process_api(tmp_path / "var", model, log_level="WARNING")
    with api.client() as http:
        assert http.get("/v1/cases/absent").status_code == 404
    assert all(line["level"] in ("WARNING", "ERROR", "CRITICAL") for line in log_lines(api.settings.var_dir))
