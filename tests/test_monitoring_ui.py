"""The admin's monitoring pages (streamlit AppTest against a real backend): an alert is listed and acknowledged from
"Metrics & alerts", the summary and its charts are drawn, and "Audit" lists the logins and verifies the chain."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from settings import get_settings
from tests.conftest import make_tiny_checkpoint
from tests.live_server import ROOT, running_api
from tests.ui_backend import UI_ADMIN, backend_env

APP = str(ROOT / "app.py")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("monitoring-ui")
    model = make_tiny_checkpoint(workdir / "tiny.pt", threshold=0.3)
    # only the disk rule can fire: a busy test machine must not add a CPU or memory alert to the list
    env = {**backend_env(workdir / "var", model), "ALERT_INTERVAL_S": "0.5", "ALERT_DISK_PERCENT": "0",
           "ALERT_CPU_PERCENT": "100", "ALERT_MEMORY_PERCENT": "100"}  # fmt: skip
    with running_api(env) as url:
        deadline = time.time() + 60  # the first evaluation raises the disk alert
        token = httpx.post(f"{url}/v1/auth/login", json={"username": UI_ADMIN, "password": env["ADMIN_PASSWORD"]})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        while time.time() < deadline and not httpx.get(f"{url}/v1/alerts", headers=headers).json()["alerts"]:
            time.sleep(0.5)
        yield {**env, "url": url}


@pytest.fixture()
def admin_app(backend: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    monkeypatch.setenv("BACKEND_URL", backend["url"])
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input(UI_ADMIN)
    at.text_input[1].input(backend["ADMIN_PASSWORD"])
    at.button[0].click().run()
    assert not at.exception, at.exception
    yield at
    get_settings.cache_clear()


def markdown(at: AppTest) -> str:
    return "\n".join(str(element.value) for kind in ("markdown", "success", "info", "error", "caption")
                     for element in getattr(at, kind))  # fmt: skip


def test_metrics_page_lists_and_acknowledges_an_alert(admin_app: AppTest) -> None:
    at = admin_app.switch_page("ui/pages/metrics_alerts.py").run()
    assert not at.exception, at.exception
    assert "**disk_exhausted** (critical, firing)" in markdown(at)
    assert {metric.label for metric in at.metric} >= {"p50 / p95 latency", "Throughput", "Error rate (5xx)"}
    assert len(at.get("plotly_chart")) >= 4  # latency, throughput, error rate, prediction mix, confidence
    disk = next(button for button in at.button if button.label == "Acknowledge")
    disk.click().run()
    assert not at.exception, at.exception
    assert "**disk_exhausted** (critical, acknowledged)" in markdown(at)
    assert f"acknowledged by {UI_ADMIN}" in markdown(at)


def test_audit_page_lists_events_and_verifies_the_chain(admin_app: AppTest) -> None:
    at = admin_app.switch_page("ui/pages/audit.py").run()
    assert not at.exception, at.exception
    frame = at.dataframe[0].value
    assert "login" in set(frame["Action"]) and UI_ADMIN in set(frame["User"])
    next(button for button in at.button if button.label == "Verify the chain").click().run()
    assert any(str(s.value).startswith("Chain intact: ") for s in at.success), markdown(at)
    next(button for button in at.button if button.label == "Export these events as PDF").click().run()
    assert not at.exception, at.exception
    assert [download.proto.label for download in at.get("download_button")] == ["Download audit.pdf"]
