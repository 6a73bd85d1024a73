"""GET /metrics: what a Prometheus scraper reads after real requests, who may read it, and that the counts stay
exact when two uvicorn worker processes share the work (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_tiny_checkpoint
from tests.live_server import ROOT, free_port
from tests.monitoring_support import LOOPBACK, OUTSIDE, InProcessApi, in_process_api, radiograph_png, sample


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", threshold=0.3)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, model: Path) -> InProcessApi:
    return in_process_api(tmp_path_factory.mktemp("var"), model)


def test_requests_and_predictions_are_counted_by_route_template(api: InProcessApi) -> None:
    with api.client() as http:
        before = http.get("/metrics").text
        assert http.get("/v1/cases/no-such-case").status_code == 404
        first = http.post("/predict", files={"file": ("a.png", radiograph_png(1), "image/png")}).json()
        again = http.post("/predict", files={"file": ("a.png", radiograph_png(1), "image/png")}).json()
        images = [base64.b64encode(radiograph_png(seed)).decode() for seed in (2, 3, 4)]
        batch = http.post("/predict/batch", json={"images": images}).json()
        after = http.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    # Labelled by template, never by the raw path (a case id would be one series per case).
    assert delta("cxr_http_requests_total", method="GET", route="/v1/cases/{case_id}", status="404") == 1
    assert "no-such-case" not in after
    assert delta("cxr_http_requests_total", method="POST", route="/predict", status="200") == 2
    assert delta("cxr_http_request_duration_seconds_count", method="POST", route="/predict") == 2
    assert again["cached"] is True and first["cached"] is False
    assert delta("cxr_prediction_cache_total", task="pneumonia", result="hit") == 1
    assert delta("cxr_prediction_cache_total", task="pneumonia", result="miss") == 4
    labels = [first["prediction"], again["prediction"], *(p["prediction"] for p in batch["predictions"])]
    for label in set(labels):
        counted = delta("cxr_predictions_total", task="pneumonia", label=label, model_version="test-tiny-1")
        assert counted == labels.count(label), label
    # Two model calls reached the model: one image, then a batch of three (the cache hit never did).
    assert delta("cxr_inference_batch_size_count", task="pneumonia") == 2
    assert delta("cxr_inference_batch_size_sum", task="pneumonia") == 4
    assert delta("cxr_inference_seconds_count", task="pneumonia") == 4
    assert delta("cxr_prediction_confidence_count", task="pneumonia") == 5
    assert sample(after, "cxr_model_info", task="pneumonia", version="test-tiny-1", architecture="resnet18") == 1
    assert sample(after, "cxr_model_loaded", task="pneumonia") == 1
    assert 0 <= sample(after, "cxr_system_disk_percent") <= 100
    assert sample(after, "cxr_review_queue_length", state="open") == 0  # /predict stores no case


def test_metrics_are_never_anonymous_from_outside(api: InProcessApi, tmp_path: Path, model: Path) -> None:
    with api.client(OUTSIDE, login=False) as outside:
        denied = outside.get("/metrics")
        assert denied.status_code == 401 and "Authentication required" in denied.json()["detail"]
    with api.client(OUTSIDE) as admin:
        assert admin.get("/metrics").status_code == 200
        key = admin.post("/v1/api-keys", json={"name": "prometheus", "role": "annotator"}).json()["key"]
    with api.client(OUTSIDE, login=False) as scraper:
        assert scraper.get("/metrics", headers={"X-API-Key": key}).status_code == 200
    with api.client(LOOPBACK, login=False) as local:
        assert local.get("/metrics").status_code == 200
        assert "cxr_http_requests_total" in local.get("/metrics").text
        # Relayed by a proxy on this machine: the real caller is elsewhere.
        assert local.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"}).status_code == 401
        assert local.get("/metrics", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        assert local.get("/v1/cases").status_code == 401  # loopback opens /metrics only
    closed = in_process_api(tmp_path, model, metrics_loopback_anonymous=False)
    with closed.client(LOOPBACK, login=False) as local:
        assert local.get("/metrics").status_code == 401


# --- several worker processes ----------------------------------------------------------------------------------------


@pytest.fixture()
def two_workers(tmp_path: Path, model: Path) -> Iterator[tuple[str, Path]]:
    """`uvicorn api.main:app --workers 2` with PROMETHEUS_MULTIPROC_DIR; yields (base URL, that folder)."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(model), "VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": "",
           "TORCH_THREADS": "1", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}  # fmt: skip
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert process.poll() is None, (tmp_path / "server.log").read_text(errors="replace")[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield base, metrics_dir
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def worker_pids(metrics_dir: Path) -> set[str]:
    """Processes that wrote counters (prometheus-client names its files counter_<pid>.db)."""
    return {path.stem.split("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}


def test_two_workers_report_one_exact_total(two_workers: tuple[str, Path]) -> None:
    base, metrics_dir = two_workers
    sent = 0
    # New connection per request: the kernel hands them to both workers; go on until both have served some.
    while sent < 40 or (len(worker_pids(metrics_dir)) < 2 and sent < 400):
        assert httpx.get(f"{base}/ready", timeout=30).status_code == 200
        sent += 1
    assert len(worker_pids(metrics_dir)) == 2, "every request went to one worker"
    for _ in range(6):  # whichever worker answers the scrape, it reports the sum over both
        text = httpx.get(f"{base}/metrics", timeout=30).text
        assert sample(text, "cxr_http_requests_total", method="GET", route="/ready", status="200") == sent
        assert sample(text, "cxr_http_request_duration_seconds_count", method="GET", route="/ready") == sent
