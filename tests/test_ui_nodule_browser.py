"""The nodule/mass finding in headless Chromium (issue 23): the real backend serving the fixture nodule model
(location threshold 0, so every film gets marks), `streamlit run app.py`, and a radiologist's clicks.

Analyse a film; the marks are drawn on the film where the case JSON puts them and hovering one shows its score; the
measured performance sentence stands next to the finding; hide and show the marks; then review them: confirm the
first, reject the others, draw a missed one, give the finding and a comment, submit, and find the review stored by
the backend (boxes in stored-image pixels) and listed on the page. Screenshots go to UI_SHOTS_DIR (nodule-*.png).

Uses the system's Debian chromium (`apt-get install chromium`), never a browser downloaded by Playwright.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from tests.live_server import running_api
from tests.nodule_fixtures import make_nodule_checkpoint
from tests.test_ui_browser import (
    VIEWPORT,
    analyse,
    browser,  # noqa: F401  (fixture)
    open_workstation,
    screenshot_on_failure,
    shoot,
    wait_idle,
)
from tests.ui_backend import UI_ADMIN, backend_env, running_ui

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# 36-43 s here on 2 idle cores (a backend and a Streamlit server start, one film, one drawn box); 70 s while a
# training run shares them. It stays in the default suite: the hover and the drag are checked nowhere else.
pytestmark = pytest.mark.browser

NODULE_THRESHOLD = 0.37
ADDED_DRAG = ((0.60, 0.55), (0.75, 0.70))  # where the radiologist draws the missed nodule, as fractions of the film
SUMMARY = "Finds about 6 of 10 nodules or masses, at about 1 false mark per film"  # the fixture's 0.6 and 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("ui-nodule-browser")
    make_nodule_checkpoint(workdir / "nodule.pt", threshold=NODULE_THRESHOLD, location_threshold=0.0)
    env = backend_env(workdir / "var", shipped_model) | {"NODULE_MODEL_PATH": str(workdir / "nodule.pt")}
    with running_api(env) as api_url, running_ui(api_url) as ui_url:
        yield {**env, "api": api_url, "ui": ui_url}


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811  (the module fixture imported above)
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def admin_get(stack: dict[str, str], path: str) -> httpx.Response:
    login = {"username": UI_ADMIN, "password": stack["ADMIN_PASSWORD"]}
    token = httpx.post(f"{stack['api']}/v1/auth/login", json=login, timeout=30).json()["access_token"]
    return httpx.get(f"{stack['api']}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def newest_case(stack: dict[str, str], patient_id: str) -> dict[str, Any]:
    return admin_get(stack, f"/v1/cases?patient_id={patient_id}").json()["items"][0]


# The plotly chart that holds the film (an SVG image): the probability bars draw their threshold as a shape too.
FILM_CHART = """Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
                .find(c => c.querySelector('image'))"""


def shape_boxes(page: Page) -> list[dict[str, float]]:
    """The screen boxes of the rectangles plotly drew over the film (the chart with the film image)."""
    return page.evaluate(
        f"""() => Array.from(({FILM_CHART}).querySelectorAll('.shapelayer path'))
                  .map(p => {{ const r = p.getBoundingClientRect();
                              return {{x: r.x, y: r.y, width: r.width, height: r.height}}; }})"""
    )


def hover_text_at(page: Page, box: dict[str, float]) -> str:
    """Hover inside the box, off its centre and edges: the whole box answers."""
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7)
    hover = page.locator("[data-testid='stPlotlyChart'] .hoverlayer .hovertext")
    hover.first.wait_for()
    return hover.first.text_content() or ""


def check_marks_drawn(page: Page, nodule: dict[str, Any]) -> None:
    ranked = sorted(nodule["locations"], key=lambda loc: -loc["score"])
    boxes = shape_boxes(page)
    assert len(boxes) == len(ranked) and all(b["width"] > 4 and b["height"] > 4 for b in boxes), boxes
    # The first rectangle is mark 1; its drawn shape keeps the stored box's proportions.
    first = ranked[0]
    assert boxes[0]["width"] / boxes[0]["height"] == pytest.approx(first["w"] / first["h"], rel=0.1)
    assert hover_text_at(page, boxes[0]) == f"Mark 1: score {first['score'] * 100:.0f}%"
    page.get_by_text(SUMMARY).wait_for()
    page.get_by_text(f"Probability {nodule['probability'] * 100:.1f}% (threshold 37%)").wait_for()


def toggle_marks(page: Page, count: int) -> None:
    page.get_by_text("Show nodule marks", exact=True).click()
    wait_idle(page)
    page.wait_for_function(f"() => ({FILM_CHART}).querySelectorAll('.shapelayer path').length === {count}")


def review(page: Page, marks: int) -> None:
    """Confirm mark 1, reject the rest, draw one missed nodule, find a nodule, comment, submit."""
    page.get_by_text("Review the nodule marks", exact=True).click()
    page.locator("canvas.upper-canvas").wait_for()
    wait_idle(page)
    page.locator("canvas.upper-canvas").scroll_into_view_if_needed()  # the mouse drags only what is in view
    canvas = page.locator("canvas.upper-canvas").bounding_box()
    (x0, y0), (x1, y1) = ((canvas["x"] + fx * canvas["width"], canvas["y"] + fy * canvas["height"])
                          for fx, fy in ADDED_DRAG)  # fmt: skip
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=12)
    page.mouse.up()
    page.get_by_text(re.compile(r"^1 box: ")).wait_for()
    wait_idle(page)
    for number in range(1, marks + 1):
        verdict = "Confirm" if number == 1 else "Reject"
        radio = page.get_by_test_id("stRadio").filter(has_text=f"Mark {number} · score")
        radio.get_by_text(verdict, exact=True).click()
    finding = page.get_by_test_id("stRadio").filter(has_text="Your nodule finding")
    finding.get_by_text(re.compile(r"^Nodule or mass suspected")).click()  # whatever the AI said: mark 1 is one
    page.get_by_label("Comment (optional)").last.fill("Mark 1 is real; the rest are vessels.")
    shoot(page, "nodule-03-review-filled")
    page.get_by_role("button", name="Submit nodule review").click()
    page.get_by_text("Your nodule review is saved").wait_for()
    wait_idle(page)
    assert page.get_by_text("the case goes to the experts' annotation queue").count() == 1  # a rejected mark


def stored_size(stack: dict[str, str], case_id: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(admin_get(stack, f"/v1/cases/{case_id}/image").content)) as image:
        return image.size


def test_nodule_marks_drawn_hovered_and_reviewed(page: Page, stack: dict[str, str], kermany_dir: Path) -> None:
    film = sorted((kermany_dir / "test" / "PNEUMONIA").glob("*.jpg"))[0]
    with screenshot_on_failure(page):
        open_workstation(page, stack)
        analyse(page, film, "UI-NODULE-BROWSER")
        case = newest_case(stack, "UI-NODULE-BROWSER")
        nodule = case["nodule"]
        assert nodule and nodule["locations"], case
        check_marks_drawn(page, nodule)
        shoot(page, "nodule-01-result-with-marks")
        toggle_marks(page, 0)
        toggle_marks(page, len(nodule["locations"]))
        review(page, len(nodule["locations"]))
        page.get_by_text("Earlier reviews of these marks").wait_for()
        shoot(page, "nodule-04-review-saved")

    stored = admin_get(stack, f"/v1/cases/{case['case_id']}/nodule-review").json()
    reviews = stored if isinstance(stored, list) else stored.get("reviews", stored.get("items"))
    (saved,) = reviews
    assert saved["finding"] == "NODULE" and saved["comment"] == "Mark 1 is real; the rest are vessels."
    verdicts = [mark["verdict"] for mark in saved["marks"]]
    assert verdicts == ["confirmed"] + ["rejected"] * (len(nodule["locations"]) - 1) + ["added"]
    added = saved["marks"][-1]
    width, height = stored_size(stack, case["case_id"])
    (fx0, fy0), (fx1, _) = ADDED_DRAG
    assert added["x"] == pytest.approx(fx0 * width, rel=0.08) and added["y"] == pytest.approx(fy0 * height, rel=0.08)
    assert added["w"] == pytest.approx((fx1 - fx0) * width, rel=0.12)
    queue = admin_get(stack, "/v1/queue?limit=50").json()["items"]
    (item,) = [item for item in queue if item["case_id"] == case["case_id"]]
    assert "nodule_disagreement" in [reason["code"] for reason in item["reasons"]]
