"""End to end in headless Chromium: the real backend, `streamlit run app.py`, and a radiologist's clicks.

Log in (when the backend has accounts), analyse real radiographs from the Kermany test split, see the finding,
heatmap and similar cases, download a PDF report, send for review, sign, reopen the case from the history and
look at the health page. Screenshots of every page go to UI_SHOTS_DIR (default /tmp/ui-shots); the time from
clicking "Run AI analysis" to the whole result on screen is measured and written to ui-timing.json there.

Uses the system's Debian chromium (`apt-get install chromium`), never a browser downloaded by Playwright.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright import sync_api as playwright_api

from tests.conftest import missing
from tests.live_server import ROOT, running_api
from tests.test_clinical_path import BETWEEN_THRESHOLD_AND_HALF
from tests.ui_backend import UI_ADMIN, backend_env, running_ui

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("UI_SHOTS_DIR", "/tmp/ui-shots"))
RESULT_TIMEOUT_MS = 90_000  # generous: the machine is shared with a training job; the measured time is reported
TIMED_RUNS = 3  # 224-px radiographs after the cold first run (which is reported on its own)
LIBRARY_IMAGES = 24
DICOM_SAMPLE = "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"  # DX, male 81, Covid0000
DICOM_JPEG_SAMPLE = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"  # CR PA, JPEG baseline, 1024 px
VIEWPORT = {"width": 1440, "height": 900}  # a common laptop/reading-room browser window

expect = playwright_api.expect


def routes_of(url: str) -> dict[str, dict]:
    return httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]


def build_reference_library(env: dict[str, str], kermany_dir: Path) -> None:
    """A small similar-case library from the train split, with the backend's own CLI (when it has one)."""
    if not (ROOT / "case_retrieval" / "__main__.py").exists():
        return
    command = [sys.executable, "-m", "case_retrieval", "build", "--data", str(kermany_dir), "--split", "train",
               "--checkpoint", env["MODEL_PATH"], "--limit", str(LIBRARY_IMAGES), "--no-progress"]  # fmt: skip
    subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kermany_dir: Path, shipped_model: Path) -> Iterator[dict[str, str]]:
    """Backend on the shipped model (threshold 0.189) + UI, both on free ports."""
    workdir = tmp_path_factory.mktemp("ui-browser")
    model = shipped_model
    env = backend_env(workdir / "var", model)
    build_reference_library(env, kermany_dir)
    with running_api(env) as api_url, running_ui(api_url) as ui_url:
        yield {**env, "api": api_url, "ui": ui_url, "model": model.name}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        missing(f"Debian chromium ({CHROMIUM}) is not installed; scripts/ensure_system_packages.sh installs it")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def shoot(page: Page, name: str) -> Path:
    """A screenshot of the whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    wait_idle(page)
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight ?? 900")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height) + 40)})
    page.wait_for_timeout(500)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    return path


def wait_idle(page: Page, timeout_ms: int = 60_000) -> None:
    """Until Streamlit has finished its current run: no status widget and no element marked stale by a run."""
    page.wait_for_timeout(500)  # the status widget appears only after a short delay
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
                 && !document.querySelector('[data-stale="true"]')""",
        timeout=timeout_ms,
        polling=100,
    )


def open_workstation(page: Page, stack: dict[str, str]) -> None:
    page.goto(stack["ui"])
    page.wait_for_selector("h1", timeout=60_000)
    wait_idle(page)
    analyze = page.get_by_role("heading", name="Analyze a chest radiograph")
    if page.get_by_role("button", name="Log in").count():
        shoot(page, "01-login")
        for _ in range(3):  # a busy machine can still be connecting the session when the form first shows
            page.get_by_label("User name").fill(UI_ADMIN)
            page.get_by_label("Password", exact=True).fill(stack["ADMIN_PASSWORD"])
            page.get_by_role("button", name="Log in").click()
            with suppress(playwright_api.TimeoutError):
                analyze.wait_for(timeout=20_000)
                break
            assert not page.get_by_test_id("stAlertContentError").count(), page.get_by_test_id("stAlert").inner_text()
    analyze.wait_for(timeout=60_000)
    wait_idle(page)


@dataclass
class Timing:
    file: str
    browser_s: float  # click -> finding, charts, heatmap and gallery drawn in the browser
    server_s: float  # the UI process's share: POST /v1/studies plus the image, heatmap and neighbour fetches


def analyse(page: Page, image: Path, patient_id: str | None, shot_before: str | None = None) -> Timing:
    """Upload, fill the patient ID, click Run; time from the click until finding, heatmap and gallery show.

    `patient_id` None keeps what the DICOM tags filled in; `shot_before` names a screenshot of the filled form.
    """
    new_analysis = page.get_by_role("button", name="New analysis")
    if new_analysis.count():
        new_analysis.click()
    run = page.get_by_role("button", name="Run AI analysis")
    run.wait_for()
    wait_idle(page)
    page.locator("input[type=file]").set_input_files(str(image))
    page.locator("[data-testid='stFileChip']").wait_for()
    page.locator("[data-testid='stImage']").first.wait_for()  # the preview: the backend has read the file
    expect(run).to_be_enabled()
    wait_idle(page)
    if patient_id is not None:
        page.get_by_label("Patient ID").fill(patient_id)
    if shot_before:
        shoot(page, shot_before)
    started = time.perf_counter()
    run.click()
    page.locator("h2.ai-finding").wait_for(timeout=RESULT_TIMEOUT_MS)
    page.get_by_text("Similar confirmed cases").wait_for(timeout=RESULT_TIMEOUT_MS)
    # The images row and the gallery are drawn in the same run, after the finding.
    page.wait_for_function(
        """() => {
            const text = document.body.innerText;
            const overlay = text.includes('Grad-CAM overlay') || text.includes('Grad-CAM heatmap:');
            const tiles = document.querySelectorAll('[data-testid="stImage"]').length >= 3;
            const galleryNote = text.includes('Similar cases') && text.includes('unavailable')
                || text.includes('reference library holds no') || text.includes('Similar cases:');
            const charts = document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg').length >= 2;
            return overlay && (tiles || galleryNote) && charts
                && !document.querySelector('[data-testid="stStatusWidget"]');
        }""",
        timeout=RESULT_TIMEOUT_MS,
        polling="raf",
    )
    browser_s = time.perf_counter() - started
    caption = page.get_by_text("Result ready").first.inner_text()
    server_s = float(re.search(r"Result ready ([0-9.]+) s", caption).group(1))
    return Timing(image.name, round(browser_s, 3), server_s)


@contextmanager
def screenshot_on_failure(page: Page) -> Iterator[None]:
    """Keep a picture of what the browser showed when a step failed (zz-failure.png)."""
    try:
        yield
    except Exception:
        with suppress(Exception):
            shoot(page, "zz-failure")
        raise


def assert_shows_what_the_api_returned(page: Page, stack: dict[str, str], film: Path) -> None:
    """A film the threshold calls PNEUMONIA although NORMAL has the larger probability: the headline and the bar
    labels in the browser are the class and the probabilities the API stored for the case."""
    analyse(page, film, "UI-BROWSER-THRESHOLD")
    login = {"username": UI_ADMIN, "password": stack["ADMIN_PASSWORD"]}
    token = httpx.post(f"{stack['api']}/v1/auth/login", json=login, timeout=30).json()["access_token"]
    cases = httpx.get(f"{stack['api']}/v1/cases", params={"patient_id": "UI-BROWSER-THRESHOLD"},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["items"]  # fmt: skip
    case = cases[0]
    assert case["prediction"] == "PNEUMONIA" and case["probabilities"]["NORMAL"] > 0.5
    assert page.locator("h2.ai-finding").inner_text() == case["prediction"]
    labels = page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"] text')).map(t => t.textContent)"""
    )
    for name, probability in case["probabilities"].items():
        assert f"{probability * 100:.1f}%" in labels, (name, probability, labels)
    shoot(page, "05b-analyze-threshold-film")


def test_radiologist_workflow(page: Page, stack: dict[str, str], kermany_dir: Path, dicom_samples_dir: Path) -> None:
    with screenshot_on_failure(page):
        routes = routes_of(stack["api"])
        open_workstation(page, stack)
        shoot(page, "02-analyze-empty")

        dicom = dicom_samples_dir / "dcm" / DICOM_SAMPLE
        cold = analyse(page, dicom, None, shot_before="03-analyze-dicom-prefilled")
        shoot(page, "04-analyze-result-dicom")
        assert page.get_by_text("Patient ID Covid0000").count() == 1  # the DICOM tags reached the stored case

        images = sorted((kermany_dir / "test" / "PNEUMONIA").glob("*.jpg"))[:2]
        images += sorted((kermany_dir / "test" / "NORMAL").glob("*.jpg"))[: TIMED_RUNS - 2]
        timings = [analyse(page, image, f"UI-BROWSER-{i}") for i, image in enumerate(images)]
        assert_shows_what_the_api_returned(page, stack, kermany_dir / "test" / BETWEEN_THRESHOLD_AND_HALF[0])
        warm_dicom = analyse(page, dicom_samples_dir / "dcm" / DICOM_JPEG_SAMPLE, None)
        shoot(page, "05-analyze-result")
        finding = page.locator("h2.ai-finding").inner_text()
        assert finding in ("No pneumonia-like opacity found", "PNEUMONIA", "No reliable finding")
        assert page.get_by_text("Traceback").count() == 0

        if "/v1/cases/{case_id}/heatmap" in routes:
            assert page.get_by_text("Grad-CAM overlay").count() >= 1
            # Drag the opacity to 100%: the overlay is re-blended in its fragment, without a whole-page run.
            thumb = page.get_by_role("slider").first.bounding_box()
            track = page.locator("[data-testid='stSlider']").first.bounding_box()
            page.mouse.move(thumb["x"] + thumb["width"] / 2, thumb["y"] + thumb["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] + 40, thumb["y"] + thumb["height"] / 2, steps=8)
            page.mouse.up()
            page.get_by_text("Grad-CAM overlay (100% opacity)").wait_for()
        else:
            assert page.get_by_text("Grad-CAM heatmap: not available on this backend yet").count() == 1

        if "/v1/cases/{case_id}/report" in routes:
            with page.expect_download(timeout=60_000) as download_info:
                page.get_by_role("button", name="Radiologist report", exact=True).click()
            pdf = Path(download_info.value.path()).read_bytes()
            assert pdf.startswith(b"%PDF"), pdf[:20]
        else:
            assert page.get_by_text("PDF reports are not available on this backend yet").count() == 1

        if "/v1/cases/{case_id}/review" in routes:
            page.get_by_label("Reason").fill("Please confirm the right lower zone opacity.")
            page.get_by_role("button", name="Send for expert review").click()
            page.get_by_text("Sent for expert review.").wait_for()
        if "/v1/cases/{case_id}/sign" in routes:
            page.get_by_role("button", name="Sign case").click()
            page.get_by_text("Case signed.").wait_for()
        shoot(page, "06-analyze-actions")

        page.get_by_role("link", name="Case history").click()
        page.get_by_role("heading", name="Case history").wait_for()
        shoot(page, "07-history")
        page.get_by_label("Patient ID").fill("UI-BROWSER-0")
        page.get_by_test_id("stFormSubmitButton").get_by_role("button", name="Search").click()
        page.get_by_text("Cases 1–1 of 1").wait_for()
        grid = page.locator("[data-testid='stDataFrame']").first.bounding_box()
        page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 17)  # the first row's selection box (glide data grid canvas)
        page.locator("h2.ai-finding").wait_for(timeout=RESULT_TIMEOUT_MS)
        wait_idle(page)
        assert "UI-BROWSER-0" in page.get_by_role("heading", level=3).first.inner_text()
        shoot(page, "08-history-case")

        page.get_by_role("link", name="Health").click()
        page.get_by_role("heading", name="Health").wait_for()
        page.get_by_text("Served model").wait_for()
        shoot(page, "09-health")
        served = httpx.get(f"{stack['api']}/health", timeout=10).json()["model_version"]
        assert page.get_by_text(served, exact=True).count() >= 1  # the model card names the served version

        steady = [t.browser_s for t in timings]
        report = {
            "model": stack["model"],
            "cold_first_run_dicom": asdict(cold),
            "warm_dicom_jpeg_1024px": asdict(warm_dicom),
            "runs_224px": [asdict(t) for t in timings],
            "median_224px_browser_s": round(statistics.median(steady), 3),
            "max_224px_browser_s": round(max(steady), 3),
            "backend_routes": sorted(routes),
        }
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "ui-timing.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
