"""The annotation queue end to end in headless Chromium: the real backend, `streamlit run app.py`, and the clicks
of two annotators and a senior.

The first annotator logs in, claims the uncertain film, drags a box on it, labels PNEUMONIA and submits; the second
reads it blind as NORMAL; the senior sees both reads side by side and records NORMAL as final. The backend must
hold what was clicked (the box in stored-image pixels, the labels, the final label). Screenshots go to
UI_SHOTS_DIR (default /tmp/ui-shots), named queue-*.png.

Uses the system's Debian chromium (`apt-get install chromium`), never a browser downloaded by Playwright.
"""

from __future__ import annotations

import io
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from tests.live_server import running_api
from tests.test_clinical_path import BETWEEN_THRESHOLD_AND_HALF
from tests.test_ui_browser import browser, screenshot_on_failure, shoot, wait_idle  # noqa: F401  (fixture)
from tests.ui_backend import UI_ADMIN, backend_env, running_ui

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# The whole two-reader workflow in Chromium takes about 3 minutes here: run apart (`scripts/test.sh -m slow`); the
# default suite drives the page in Chromium through tests/test_ui_admin_browser.py and every step through AppTest.
pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1440, "height": 900}
PATIENT = {"name": "Octavia Quennell-Braithwaite", "patient_id": "MRN-OQB-5150", "age": 4, "sex": "F"}
RETRAIN_POLLS = 120  # Refresh clicks, about 3.5 s apart: a one-minute retraining on a shared machine
BOX_DRAG = ((0.30, 0.40), (0.55, 0.70))  # where the first reader drags, as fractions of the shown film


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path) -> Iterator[dict[str, str]]:
    env = backend_env(tmp_path_factory.mktemp("ui-queue-browser") / "var", shipped_model)
    env |= {
        "READS_PER_CASE": "2",
        "SHOW_AI_TO_ANNOTATORS": "false",
        "RETRAIN_MIN_NEW_LABELS": "0",
        "RETRAIN_MAX_REFERENCE_IMAGES": "50",
    }  # a retraining of about a minute on 2 cores
    with running_api(env) as api_url, running_ui(api_url) as ui_url:
        yield {**env, "api": api_url, "ui": ui_url}


def admin_headers(stack: dict[str, str]) -> dict[str, str]:
    login = {"username": UI_ADMIN, "password": stack["ADMIN_PASSWORD"]}
    token = httpx.post(f"{stack['api']}/v1/auth/login", json=login, timeout=30).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def readers(stack: dict[str, str]) -> dict[str, str]:
    """username -> password of two annotators and a senior, created by the admin through the API."""
    accounts = {"q-reader-1": "annotator", "q-reader-2": "annotator", "q-senior": "senior"}
    passwords = {}
    for username, role in accounts.items():
        passwords[username] = secrets.token_urlsafe(16)
        created = httpx.post(f"{stack['api']}/v1/users", headers=admin_headers(stack), timeout=30,
                             json={"username": username, "password": passwords[username], "role": role})  # fmt: skip
        assert created.status_code == 201, created.text
    return passwords


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811  (the module fixture imported above)
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    yield tab
    context.close()


def queued_film(stack: dict[str, str], kermany_dir: Path) -> str:
    image = kermany_dir / "test" / BETWEEN_THRESHOLD_AND_HALF[0]
    answer = httpx.post(f"{stack['api']}/v1/studies", headers=admin_headers(stack), timeout=120,
                        files={"file": (image.name, image.read_bytes(), "image/jpeg")},
                        data={"patient": json.dumps(PATIENT)})  # fmt: skip
    assert answer.status_code == 201 and answer.json()["uncertain"], answer.text
    return answer.json()["case_id"]


def log_in(page: Page, stack: dict[str, str], username: str, password: str) -> None:
    """Log in and open the annotation queue (expert readers land on it; the admin lands on Analyze)."""
    page.goto(stack["ui"])
    page.get_by_role("button", name="Log in").wait_for()
    wait_idle(page)
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Annotation queue").click()
    page.get_by_role("heading", name="Annotation queue").wait_for()
    wait_idle(page)


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for()


def claim(page: Page, case_id: str) -> None:
    page.get_by_role("button", name="Claim next case").click()
    page.get_by_text(f"Case {case_id[:8]}", exact=True).wait_for()
    page.locator("canvas.upper-canvas").wait_for()
    wait_idle(page)


def drag_box(page: Page) -> None:
    canvas = page.locator("canvas.upper-canvas").bounding_box()
    (x0, y0), (x1, y1) = (
        (canvas["x"] + fx * canvas["width"], canvas["y"] + fy * canvas["height"]) for fx, fy in BOX_DRAG
    )
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=12)
    page.mouse.up()
    page.get_by_text(re.compile(r"^1 box: ")).wait_for()
    wait_idle(page)


def read(page: Page, label: str, comment: str) -> None:
    page.get_by_test_id("stRadio").filter(has_text="Label").get_by_text(label, exact=True).click()
    slider = page.get_by_test_id("stSlider").filter(has_text="Your confidence").get_by_role("slider")
    slider.focus()
    slider.press("ArrowRight")  # 3 -> 4
    page.get_by_label("Comment (optional)").fill(comment)
    page.get_by_role("button", name="Submit read").click()
    page.get_by_text("Your read of case").wait_for()
    wait_idle(page)


def test_two_readers_and_a_senior_in_the_browser(
    page: Page, stack: dict[str, str], readers: dict[str, str], kermany_dir: Path
) -> None:
    case_id = queued_film(stack, kermany_dir)
    with screenshot_on_failure(page):
        log_in(page, stack, "q-reader-1", readers["q-reader-1"])
        shoot(page, "queue-01-empty")
        claim(page, case_id)
        body = page.locator("body").inner_text()
        assert "age 4 · female" in body and "Blind read" in body
        assert not any(word in body for word in ("Octavia", "Quennell", "MRN-OQB-5150"))
        drag_box(page)
        shoot(page, "queue-02-claimed-with-box")
        read(page, "PNEUMONIA", "Right lower zone opacity.")
        page.get_by_text("Waiting for the second independent read").wait_for()
        page.locator("h2.ai-finding").wait_for()  # revealed after the read
        shoot(page, "queue-03-read-saved-ai-revealed")
        log_out(page)

        log_in(page, stack, "q-reader-2", readers["q-reader-2"])
        claim(page, case_id)
        body = page.locator("body").inner_text()
        assert "Right lower zone" not in body and "q-reader-1" not in body  # blind to the first read
        assert page.locator("h2.ai-finding").count() == 0  # and to the AI
        read(page, "NORMAL", "No consolidation.")
        page.get_by_text("The reads disagree").wait_for()
        shoot(page, "queue-04-second-read-disagrees")
        log_out(page)

        log_in(page, stack, "q-senior", readers["q-senior"])
        page.get_by_text("Adjudication", exact=True).click()
        page.get_by_text("q-reader-1", exact=True).wait_for()
        wait_idle(page)
        shoot(page, "queue-05-adjudication")
        page.get_by_test_id("stRadio").filter(has_text="Final label").get_by_text("NORMAL", exact=True).click()
        page.get_by_role("button", name="Record final label").click()
        page.get_by_text(f"Final label of case {case_id[:8]}: NORMAL").wait_for()
        page.get_by_text("My statistics", exact=True).click()
        page.get_by_text("Every reader").wait_for()
        wait_idle(page)
        shoot(page, "queue-06-statistics")
        log_out(page)

        log_in(page, stack, UI_ADMIN, stack["ADMIN_PASSWORD"])
        page.get_by_text("Retraining", exact=True).click()
        page.get_by_text("No retraining job yet").wait_for()
        wait_idle(page)
        page.get_by_label("Reason (optional)").fill("Browser test: one adjudicated label")
        page.get_by_role("button", name="Start retraining").click()
        page.get_by_text(re.compile(r"^Retraining job [0-9a-f]{8} is queued\.$")).wait_for()
        wait_idle(page)
        shoot(page, "queue-07-admin-retraining-queued")
        outcome = page.get_by_text(re.compile(r"^Job [0-9a-f]{8} · (promoted|rejected|failed)"))
        for _ in range(RETRAIN_POLLS):  # the admin clicks Refresh until the job has an outcome
            if outcome.count():
                break
            page.wait_for_timeout(3_000)
            page.get_by_role("button", name="Refresh").click()
            wait_idle(page)
        outcome.wait_for(timeout=1_000)
        shoot(page, "queue-08-admin-retraining-outcome")

    stored = httpx.get(f"{stack['api']}/v1/annotations/{case_id}", headers=admin_headers(stack), timeout=30).json()
    first, second = stored["annotations"][:2]
    assert (first["annotator"], first["label"], first["confidence"]) == ("q-reader-1", "PNEUMONIA", 4)
    assert (second["annotator"], second["label"], len(second["boxes"])) == ("q-reader-2", "NORMAL", 0)
    (box,) = first["boxes"]
    width, height = stored_size(stack, case_id)
    # The drag covered 25% x 30% of the shown film; stored in the film's own pixels (the stroke adds a little).
    assert box["w"] == pytest.approx(0.25 * width, rel=0.08) and box["h"] == pytest.approx(0.30 * height, rel=0.08)
    assert box["x"] == pytest.approx(0.30 * width, rel=0.08) and box["y"] == pytest.approx(0.40 * height, rel=0.08)
    assert (stored["final"]["label"], stored["final"]["source"]) == ("NORMAL", "adjudication")


def stored_size(stack: dict[str, str], case_id: str) -> tuple[int, int]:
    data = httpx.get(f"{stack['api']}/v1/cases/{case_id}/image", headers=admin_headers(stack), timeout=30).content
    with Image.open(io.BytesIO(data)) as image:
        return image.size
