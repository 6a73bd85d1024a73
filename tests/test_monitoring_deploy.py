"""The monitoring stack in deploy/: the Grafana dashboard and the Prometheus rules name only series the API exports,
the config passes promtool, and (slow) Debian's prometheus scrapes a running backend with it and answers queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_tiny_checkpoint, missing
from tests.live_server import ROOT, free_port, running_api
from tests.monitoring_support import in_process_api, radiograph_png

DEPLOY = ROOT / "deploy"
SERIES = re.compile(r"\bcxr_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "cxr-workstation.json").read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "cxr-alerts.yml").read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def family(series: str) -> str:
    return next((series.removesuffix(s) for s in SUFFIXES if series.endswith(s)), series)


def test_dashboard_and_rules_name_only_exported_metrics(tmp_path: Path) -> None:
    model = make_tiny_checkpoint(tmp_path / "tiny.pt", threshold=0.3)
    with in_process_api(tmp_path / "var", model).client() as http:
        assert http.post("/predict", files={"file": ("x.png", radiograph_png(1), "image/png")}).status_code == 200
        exported = {f.name for f in text_string_to_metric_families(http.get("/metrics").text)}
    named = {family(series) for expr in dashboard_expressions() + rule_expressions() for series in SERIES.findall(expr)}
    assert len(named) >= 12, named
    assert named <= exported, f"not exported: {sorted(named - exported)}"


def test_promtool_accepts_the_config() -> None:
    if shutil.which("promtool") is None:
        missing("promtool (Debian package prometheus) is not installed")
    checked = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout + checked.stderr


@pytest.fixture()
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    if shutil.which("prometheus") is None:
        missing("prometheus (Debian package prometheus) is not installed")
    processes: list[subprocess.Popen] = []

    def start(target: str) -> str:
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        config["rule_files"] = [str(DEPLOY / "cxr-alerts.yml")]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        command = ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                   f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]  # fmt: skip
        log = (tmp_path / "prometheus.log").open("wb")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_prometheus_scrapes_a_running_backend(tmp_path: Path, prometheus_for: Callable[[str], str]) -> None:
    model = make_tiny_checkpoint(tmp_path / "tiny.pt", threshold=0.3)
    env = {"MODEL_PATH": str(model), "VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": "", "TORCH_THREADS": "1"}
    with running_api(env) as api:
        for _ in range(3):
            httpx.get(f"{api}/ready", timeout=30)
        prometheus = prometheus_for(api.removeprefix("http://"))
        deadline, result = time.time() + 120, []
        while time.time() < deadline and not result:
            time.sleep(1)
            try:
                answer = httpx.get(
                    f"{prometheus}/api/v1/query", params={"query": 'cxr_http_requests_total{route="/ready"}'}
                )
                result = answer.json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
        assert result and float(result[0]["value"][1]) >= 3, result
        up = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up"}).json()["data"]["result"]
        assert up[0]["value"][1] == "1"
        rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        assert [len(group["rules"]) for group in rules] == [7]
