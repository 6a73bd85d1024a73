"""The admin's pages in headless Chromium: a real backend with some data (a dozen analysed films, a firing disk
alert, an audit trail, input drift with the embeddings tested), `streamlit run app.py`, and an admin who opens Health,
Metrics & alerts, Audit and the Annotation queue. Each page must show its content (component checks, charts, the
alert, the drift table with the embedding test, the audit rows and the chain's verdict, the PDF export) and is
photographed to UI_SHOTS_DIR as admin-*.png.

Uses the system's Debian chromium (`apt-get install chromium`), never a browser downloaded by Playwright.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
from PIL import Image

from monitoring import sample_paths
from tests.conftest import make_tiny_checkpoint
from tests.live_server import running_api
from tests.test_ui_browser import browser, page, screenshot_on_failure, shoot, wait_idle  # noqa: F401  (fixtures)
from tests.ui_backend import UI_ADMIN, backend_env, running_ui

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

FILMS = 12


def write_pngs(folder: Path, films: list[Path]) -> None:
    folder.mkdir(parents=True)
    for index, film in enumerate(films):
        buffer = io.BytesIO()
        Image.open(film).convert("L").resize((256, 256)).save(buffer, format="PNG")
        (folder / f"{index:03}.png").write_bytes(buffer.getvalue())


def admin_headers(url: str, password: str) -> dict[str, str]:
    login = httpx.post(f"{url}/v1/auth/login", json={"username": UI_ADMIN, "password": password}, timeout=30)
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def fill_with_data(url: str, password: str, incoming: Path) -> None:
    """Analysed films (summary, prediction mix, audit rows), then drift until its embedding test has run."""
    headers = admin_headers(url, password)
    for path in sorted(incoming.iterdir()):
        answer = httpx.post(f"{url}/v1/studies", headers=headers, timeout=120,
                            files={"file": (path.name, path.read_bytes(), "image/png")})  # fmt: skip
        assert answer.status_code == 201, answer.text
    deadline, state = time.time() + 120, None
    while time.time() < deadline and state != "tested":
        drift = httpx.get(f"{url}/v1/monitoring/drift", headers=headers, timeout=120).json()
        state = drift["embedding"]["state"]
        time.sleep(0.5)
    assert state == "tested", drift
    while time.time() < deadline and not httpx.get(f"{url}/v1/alerts", headers=headers).json()["alerts"]:
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kermany_dir: Path) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("ui-admin-browser")
    chosen = sample_paths(kermany_dir / "train", 40 + FILMS, seed=15)
    chosen = [chosen[i] for i in np.random.default_rng(15).permutation(len(chosen))]  # both classes on both sides
    write_pngs(workdir / "baseline", chosen[:40])
    write_pngs(workdir / "incoming", chosen[40:])
    env = backend_env(workdir / "var", make_tiny_checkpoint(workdir / "tiny.pt", threshold=0.3))
    # only the disk rule can fire: a busy test machine must not add a CPU or memory alert to the list
    env |= {"DRIFT_BASELINE_DIR": str(workdir / "baseline"), "DRIFT_MIN_CASES": "10", "ALERT_INTERVAL_S": "0.5",
            "ALERT_DISK_PERCENT": "0", "ALERT_CPU_PERCENT": "100", "ALERT_MEMORY_PERCENT": "100"}  # fmt: skip
    with running_api(env) as api_url:
        fill_with_data(api_url, env["ADMIN_PASSWORD"], workdir / "incoming")
        with running_ui(api_url) as ui_url:
            yield {**env, "api": api_url, "ui": ui_url}


def log_in(tab: Page, stack: dict[str, str]) -> None:
    tab.goto(stack["ui"])
    tab.get_by_role("button", name="Log in").wait_for(timeout=60_000)
    wait_idle(tab)
    tab.get_by_label("User name").fill(UI_ADMIN)
    tab.get_by_label("Password", exact=True).fill(stack["ADMIN_PASSWORD"])
    tab.get_by_role("button", name="Log in").click()
    tab.get_by_role("heading", name="Analyze a chest radiograph").wait_for(timeout=60_000)


def open_page(tab: Page, title: str) -> None:
    tab.get_by_role("link", name=title, exact=True).click()
    tab.get_by_role("heading", name=title, exact=True).wait_for()
    wait_idle(tab)


def test_admin_pages_in_the_browser(page: Page, stack: dict[str, str]) -> None:  # noqa: F811  (fixture)
    with screenshot_on_failure(page):
        log_in(page, stack)

        open_page(page, "Health")
        components = re.sub(r"\s+", " ", page.get_by_test_id("stTable").first.inner_text())
        assert "database OK sqlite" in components and "image store OK" in components
        # no similar-case library was built for this throw-away model: the page says which component and why
        assert re.search(r"similar cases FAILING .*case_retrieval build", components), components
        assert page.get_by_test_id("stMetricValue").filter(has_text="yes").count() >= 2  # ready, model loaded
        shoot(page, "admin-health")

        open_page(page, "Metrics & alerts")
        page.get_by_text("disk_exhausted").wait_for()
        page.locator(".js-plotly-plot").nth(4).wait_for()  # latency, throughput, error rate, mix, confidence
        titles = page.locator(".js-plotly-plot .gtitle").all_text_contents()  # SVG text: no inner text
        assert {"Latency", "Throughput", "Error rate", "Predictions by class", "Confidence"} <= set(titles)
        assert page.get_by_role("button", name="Acknowledge").count() == 1
        page.get_by_text(
            f"{FILMS} recent cases against 40 baseline films; embeddings: {FILMS} cases by model"
        ).wait_for()
        shoot(page, "admin-metrics-alerts")

        open_page(page, "Audit")
        page.get_by_text(re.compile(r"The \d+ newest matching events\.")).wait_for()
        grid = page.get_by_test_id("stDataFrame")
        # the grid draws on a canvas; its accessible twin holds the cells: column 2 is "Action", 4 is "User"
        grid.locator('td[data-testid^="glide-cell-2-"]').first.wait_for(state="attached")  # drawn after the frame
        actions = grid.locator('td[data-testid^="glide-cell-2-"]').all_text_contents()
        users = set(grid.locator('td[data-testid^="glide-cell-4-"]').all_text_contents())
        assert actions.count("prediction") >= 5 and "login" in actions and UI_ADMIN in users, (actions, users)
        page.get_by_role("button", name="Export these events as PDF").click()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download audit.pdf").click()
        assert Path(download.value.path()).read_bytes().startswith(b"%PDF-")
        page.get_by_role("button", name="Verify the chain").click()  # last: a button's answer lasts one rerun
        page.get_by_text(re.compile(r"Chain intact: \d+ records; head [0-9a-f]{16}")).wait_for()
        shoot(page, "admin-audit")

        open_page(page, "Annotation queue")
        page.get_by_text(f"Waiting for expert reads: {FILMS} cases").wait_for()  # every tiny-model film is doubtful
        shoot(page, "admin-annotation-queue")
