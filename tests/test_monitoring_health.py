"""/health and /ready as an admin or a load balancer reads them: every component, which one fails and why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitoring import check_database, check_schema
from storage import Database, head_revision
from tests.conftest import make_tiny_checkpoint
from tests.monitoring_support import in_process_api

COMPONENTS = {"database", "schema", "image_store", "disk", "model", "similar_cases", "alert_channels"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", threshold=0.3)


def test_ready_lists_every_component_and_names_the_broken_one(tmp_path: Path, model: Path) -> None:
    api = in_process_api(tmp_path, model)
    with api.client(login=False) as http:
        ready = http.get("/ready")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert set(checks) == COMPONENTS
        assert checks["database"] == {"ok": True, "detail": "sqlite", "required": True}
        assert checks["schema"] == {"ok": True, "detail": head_revision(), "required": True}
        assert checks["model"] == {"ok": True, "detail": "test-tiny-1", "required": True}
        assert checks["disk"]["ok"] is True and "GB free" in checks["disk"]["detail"]
        assert checks["alert_channels"] == {"ok": True, "detail": "no alert channel is configured", "required": False}
        # No library was built: reported with the command that builds one, but the workstation stays in service.
        assert checks["similar_cases"]["ok"] is False and checks["similar_cases"]["required"] is False
        assert "python -m case_retrieval build" in checks["similar_cases"]["detail"]

        images = api.settings.resolved_image_store_dir
        shutil.rmtree(images)
        images.write_text("not a folder")  # the store's folder is gone: nothing can be saved
        broken = http.get("/ready")
        assert broken.status_code == 503
        assert broken.json()["ready"] is False
        failing = {name: check["detail"] for name, check in broken.json()["checks"].items() if not check["ok"]}
        assert failing == {
            "image_store": "The image store folder is missing or not writable.",
            "similar_cases": checks["similar_cases"]["detail"],
        }
        assert http.get("/health").json()["status"] == "ok"  # liveness: the process itself is fine


def test_ready_fails_without_a_model_or_disk_space(tmp_path: Path) -> None:
    api = in_process_api(tmp_path, tmp_path / "absent.pt", disk_min_free_gb=1e9)
    with api.client(login=False) as http:
        ready = http.get("/ready")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["model"]["ok"] is False and "absent.pt" in checks["model"]["detail"]
        assert checks["disk"]["ok"] is False and "below DISK_MIN_FREE_GB=1e+09" in checks["disk"]["detail"]
        assert checks["database"]["ok"] is True
        assert http.get("/health").json() == {**http.get("/health").json(), "status": "degraded", "model_loaded": False}


def test_database_and_schema_checks_say_why(tmp_path: Path) -> None:
    unreachable = Database("postgresql://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    try:
        check = check_database(unreachable)
    finally:
        unreachable.dispose()
    assert (check.ok, check.detail) == (False, "The database is not reachable.")
    empty = Database(f"sqlite:///{tmp_path / 'never-migrated.db'}")
    try:
        schema = check_schema(empty)
    finally:
        empty.dispose()
    assert schema.ok is False
    assert schema.detail == f"at None, the code needs {head_revision()} (run `python -m storage migrate`)"
