"""The nodule/mass finding in the workstation UI (issue 23): the marks drawn where the case JSON puts them, the
scores on hover, the measured performance beside the finding, the reason when no nodule model is served, and the
radiologist's review of the marks as the backend receives it.

Pure functions and the HTTP client here (no backend); the page against a live backend serving the fixture nodule
checkpoint is in the second half.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from settings import get_settings
from tests.live_server import running_api
from tests.nodule_fixtures import make_nodule_checkpoint
from tests.test_ui_apptest import APP, RUN_TIMEOUT_S, auth_headers, kermany_jpeg, page_text
from tests.ui_backend import UI_ADMIN, backend_env
from ui.case_data import why_no_nodule_finding
from ui.client import BackendClient
from ui.nodules import (
    mark_figure,
    mark_text,
    no_model_note,
    nodule_cell,
    nodule_headline,
    nodule_marks,
    performance_line,
    probability_line,
    review_body_marks,
    review_row,
)
from ui.session import IDENTITY_KEY, Identity

STORED = (1000, 800)  # stored film: width, height
SHOWN = (500, 400)  # its display copy
NODULE = {
    "label": "NODULE",
    "probability": 0.734,
    "threshold": 0.42,
    "locations": [
        {"x": 600.0, "y": 600.0, "w": 60.0, "h": 40.0, "score": 0.31},  # lower third, film right = patient's left
        {"x": 100.0, "y": 80.0, "w": 50.0, "h": 50.0, "score": 0.87},  # upper third, film left = patient's right
    ],
    "model_version": "nodule-fixture-1",
    "performance": {
        "sensitivity": 0.6,
        "false_positives_per_film": 1.0,
        "summary": "Finds about 6 of 10 nodules or masses, at about 1 false mark per film (measured on test films).",
    },
}
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a4944415478da63f80f00010101001b7d8a3a0000000049454e44ae426082"
)


def figure_spec(marks_shown: bool = True) -> dict[str, Any]:
    marks = nodule_marks(NODULE) if marks_shown else []
    return json.loads(mark_figure(PNG_1PX, SHOWN, STORED, marks, height=400).to_json())


def test_marks_are_numbered_by_score() -> None:
    marks = nodule_marks(NODULE)
    assert [(m.number, m.score, m.x) for m in marks] == [(1, 0.87, 100.0), (2, 0.31, 600.0)]
    assert nodule_marks(None) == [] and nodule_marks({**NODULE, "locations": []}) == []


def test_boxes_are_drawn_where_the_case_puts_them() -> None:
    """The rectangles are the case JSON's boxes in stored-image pixels, over a film spread exactly over that range."""
    spec = figure_spec()
    rects = [(s["x0"], s["y0"], s["x1"], s["y1"]) for s in spec["layout"]["shapes"]]
    assert rects == [(100, 80, 150, 130), (600, 600, 660, 640)]
    image = spec["data"][0]
    assert image["type"] == "image" and image["source"].startswith("data:image/png;base64,")
    assert (image["dx"], image["dy"]) == (2.0, 2.0)  # 500 shown pixels over 1000 stored ones
    assert (image["x0"], image["y0"]) == (1.0, 1.0)  # first pixel centred half a pixel in: edges at 0 and 1000
    assert spec["layout"]["xaxis"]["range"] == [0, 1000] and spec["layout"]["yaxis"]["range"] == [800, 0]


def test_hovering_a_box_tells_its_score() -> None:
    """Each box is also an invisible filled area named by its score: hovering anywhere inside it shows the score."""
    *areas, numbers = figure_spec()["data"][1:]
    assert [area["name"] for area in areas] == ["Mark 1: score 87%", "Mark 2: score 31%"]
    first = areas[0]
    assert (first["x"], first["y"]) == ([100, 150, 150, 100, 100], [80, 80, 130, 130, 80])  # the box, closed
    assert (first["fill"], first["hoveron"], first["fillcolor"]) == ("toself", "fills", "rgba(0,0,0,0)")
    assert numbers["text"] == ["1", "2"] and numbers["hoverinfo"] == "skip"


def test_marks_off_leaves_the_film_alone() -> None:
    spec = figure_spec(marks_shown=False)
    assert [trace["type"] for trace in spec["data"]] == ["image"] and not spec["layout"].get("shapes")


def test_the_finding_in_words() -> None:
    assert nodule_headline(NODULE) == "Nodule or mass suspected"
    assert nodule_headline({**NODULE, "label": "NO_NODULE"}) == "No nodule or mass found"
    assert nodule_headline(NODULE, ood=True) == "No reliable finding"  # outside the training domain, as pneumonia
    assert nodule_cell({"nodule": NODULE}) == "Nodule or mass suspected (2 marks)"  # the case history's column
    assert nodule_cell({"nodule": None}) == "not read"
    assert probability_line(NODULE) == "Probability 73.4% (threshold 42%) · 2 marks"
    first, second = nodule_marks(NODULE)
    assert mark_text(first, STORED) == (
        "Mark 1 · score 87% · upper third, patient's right · 50×50 px box centred at (125, 105)"
    )
    assert mark_text(second, STORED).startswith("Mark 2 · score 31% · lower third, patient's left")


def test_the_measured_performance_is_said_next_to_the_finding() -> None:
    assert performance_line(NODULE) == NODULE["performance"]["summary"]
    assert performance_line({**NODULE, "performance": None}).startswith("The model states no measured sensitivity")


@pytest.mark.parametrize(
    ("detail", "note"),
    [
        ("No nodule model is served: its test AUROC 0.53 is below the 0.65 floor (NODULE_MIN_TEST_AUROC).",
         "No nodule model is served: its test AUROC 0.53 is below the 0.65 floor (NODULE_MIN_TEST_AUROC)."),
        ("None is configured (NODULE_MODEL_PATH).",
         "No nodule model is served: none is configured (NODULE_MODEL_PATH)."),
        (None, "No nodule model is served."),
    ],
)  # fmt: skip
def test_why_no_nodule_model_is_served(detail: str | None, note: str) -> None:
    assert no_model_note(detail) == note


def answering(handler: Any) -> tuple[BackendClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record))
    return BackendClient("http://backend.test", token="tok", http=http), seen


def test_the_reason_comes_from_the_nodule_model_card() -> None:
    refused = "No nodule model is served: its test AUROC 0.53 is below the 0.65 floor (NODULE_MIN_TEST_AUROC)."
    client, seen = answering(lambda request: httpx.Response(503, json={"detail": refused}))
    assert why_no_nodule_finding(client) == refused
    assert seen[0].url.path == "/model/info" and seen[0].url.params["task"] == "nodule"
    served, _ = answering(lambda request: httpx.Response(200, json={"task": "nodule", "version": "nodule-v2"}))
    assert why_no_nodule_finding(served) == (
        "This case has no nodule finding: it was analysed before the nodule model nodule-v2 was served."
    )
    older, _ = answering(lambda request: httpx.Response(200, json={"task": "pneumonia", "version": "v7"}))
    assert why_no_nodule_finding(older) == "No nodule model is served: this backend has no nodule model."


def test_review_sends_every_mark_with_its_verdict_and_the_added_boxes() -> None:
    marks = nodule_marks(NODULE)
    with pytest.raises(ValueError, match="Confirm or reject mark 2 before submitting"):
        review_body_marks(marks, {1: "confirmed", 2: None}, [])
    added = [{"x": 300.0, "y": 310.5, "w": 40.0, "h": 44.0}]
    body = review_body_marks(marks, {1: "confirmed", 2: "rejected"}, added)
    assert body == [
        {"x": 100.0, "y": 80.0, "w": 50.0, "h": 50.0, "verdict": "confirmed"},
        {"x": 600.0, "y": 600.0, "w": 60.0, "h": 40.0, "verdict": "rejected"},
        {"x": 300.0, "y": 310.5, "w": 40.0, "h": 44.0, "verdict": "added"},
    ]
    client, seen = answering(lambda request: httpx.Response(201, json={"id": 1, "marks": body}))
    client.submit_nodule_review("c1", body, "NODULE", "Second mark is a nipple shadow.")
    assert seen[0].method == "POST" and seen[0].url.path == "/v1/cases/c1/nodule-review"
    assert json.loads(seen[0].content) == {"marks": body, "finding": "NODULE",
                                           "comment": "Second mark is a nipple shadow."}  # fmt: skip


@pytest.mark.parametrize("shape", ["list", "reviews", "items"])
def test_past_reviews_are_read_and_summarised(shape: str) -> None:
    review = {"reviewer": "dr-h", "created_at": "2026-12-06T03:01:00Z", "finding": "NO_NODULE", "comment": "Vessel.",
              "marks": [{"verdict": "rejected"}, {"verdict": "rejected"}, {"verdict": "added"}],
              "disagreement": ["finding", "rejected_mark", "added_box"]}  # fmt: skip
    body: Any = [review] if shape == "list" else {shape: [review], "total": 1}
    client, _ = answering(lambda request: httpx.Response(200, json=body))
    (row,) = [review_row(r) for r in client.nodule_reviews("c1")]
    assert row["Reader"] == "dr-h" and row["Finding"] == "No nodule or mass found" and row["Comment"] == "Vessel."
    assert row["Marks"] == "0 confirmed · 2 rejected · 1 added" and row["When"].startswith("2026-12-06")
    assert row["Differs from the AI"] == "finding, rejected mark, added box"
    assert review_row({**review, "disagreement": []})["Differs from the AI"] == "no"


# --- the Analyze page against a backend that serves the fixture nodule model ------------------------------------------

NODULE_THRESHOLD = 0.37  # not 0.5: a label taken from the wrong threshold shows


@pytest.fixture(scope="module")
def nodule_backend(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("ui-nodule-backend")
    make_nodule_checkpoint(workdir / "nodule.pt", threshold=NODULE_THRESHOLD, location_threshold=0.0)
    env = backend_env(workdir / "var", shipped_model) | {"NODULE_MODEL_PATH": str(workdir / "nodule.pt")}
    with running_api(env) as url:
        yield {**env, "url": url, "auth": "1"}


@pytest.fixture(scope="module")
def refused_backend(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path) -> Iterator[dict[str, str]]:
    """A nodule checkpoint at chance level (test AUROC 0.53): the backend must not serve it, and says why."""
    workdir = tmp_path_factory.mktemp("ui-nodule-refused")
    make_nodule_checkpoint(workdir / "nodule.pt", test_auroc=0.53)
    env = backend_env(workdir / "var", shipped_model) | {"NODULE_MODEL_PATH": str(workdir / "nodule.pt")}
    with running_api(env) as url:
        yield {**env, "url": url, "auth": "1"}


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each AppTest reads BACKEND_URL anew; nothing of it stays for other tests."""
    yield
    get_settings.cache_clear()


def pointed_at(backend: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("BACKEND_URL", backend["url"])
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    at.text_input[0].input(UI_ADMIN)
    at.text_input[1].input(backend["ADMIN_PASSWORD"])
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def analysed(at: AppTest, film: Path, patient_id: str) -> str:
    at.file_uploader[0].upload(film.name, film.read_bytes(), "image/jpeg").run()
    at.text_input(key="analyze-patient_id").input(patient_id)
    next(b for b in at.button if b.label == "Run AI analysis").click().run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    return str(at.session_state["analyze-case-id"])


def stored_case(backend: dict[str, str], case_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{backend['url']}/v1/cases/{case_id}", headers=auth_headers(backend), timeout=30)
    answer.raise_for_status()
    return answer.json()


def film_figure(at: AppTest) -> dict[str, Any]:
    """The radiograph's plotly figure (the one with an image trace)."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    (film,) = [spec for spec in specs if spec["data"] and spec["data"][0]["type"] == "image"]
    return film


def test_analyze_draws_the_nodule_marks_the_api_returned(
    nodule_backend: dict[str, str], kermany_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = pointed_at(nodule_backend, monkeypatch)
    case_id = analysed(at, kermany_jpeg(kermany_dir), "UI-NODULE-1")
    case = stored_case(nodule_backend, case_id)
    nodule = case["nodule"]
    assert nodule["locations"], "location_threshold 0: the fixture model marks every film"
    text = page_text(at)
    expected = "Nodule or mass suspected" if nodule["probability"] >= NODULE_THRESHOLD else "No nodule or mass found"
    expected = "No reliable finding" if case["ood"] else expected
    assert f"class='nodule-finding' style='margin:0'>{expected}</h3>" in text
    assert f"Probability {nodule['probability'] * 100:.1f}% (threshold 37%)" in text
    assert "Finds about 6 of 10 nodules or masses, at about 1 false mark per film" in text  # the model card's 0.6, 1.0
    ranked = sorted(nodule["locations"], key=lambda loc: -loc["score"])
    for number, loc in enumerate(ranked, start=1):
        assert f"Mark {number} · score {loc['score'] * 100:.0f}%" in text
    figure = film_figure(at)
    drawn = [v for s in figure["layout"]["shapes"] for v in (s["x0"], s["y0"], s["x1"] - s["x0"], s["y1"] - s["y0"])]
    assert drawn == pytest.approx([v for loc in ranked for v in (loc["x"], loc["y"], loc["w"], loc["h"])])
    hover = [trace["name"] for trace in figure["data"] if trace.get("hoveron") == "fills"]
    assert hover == [f"Mark {n}: score {loc['score'] * 100:.0f}%" for n, loc in enumerate(ranked, start=1)]

    at.toggle(key=f"analyze-nodule-marks-{case_id}").set_value(False).run()
    assert not at.exception, at.exception
    assert not film_figure(at)["layout"].get("shapes")  # the film alone
    assert len(at.get("plotly_chart")) == 3  # gauge, probability bars, the film

    at.switch_page("ui/pages/history.py").run()
    at.text_input[0].input("UI-NODULE-1")
    at.button(key="FormSubmitter:history-search-Search").click().run()
    assert not at.exception, at.exception
    marks = f"{len(ranked)} mark" + ("s" if len(ranked) != 1 else "")
    assert list(at.dataframe[0].value["Nodule or mass"]) == [f"{expected} ({marks})"]


def test_a_refused_nodule_model_is_explained(
    refused_backend: dict[str, str], kermany_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = pointed_at(refused_backend, monkeypatch)
    case_id = analysed(at, kermany_jpeg(kermany_dir), "UI-NODULE-REFUSED")
    assert stored_case(refused_backend, case_id)["nodule"] is None
    notes = [info.value for info in at.info if "nodule" in str(info.value).lower()]
    assert len(notes) == 1 and notes[0].startswith("No nodule model is served"), notes
    assert "0.53" in notes[0] and "0.65" in notes[0]  # the backend's reason: its test AUROC under the floor
    assert len(at.get("plotly_chart")) == 2 and at.image  # the radiograph as before, with no marks toggle
    assert not [t for t in at.toggle if t.label == "Show nodule marks"]


def review_form_key(case_id: str) -> str:
    return f"analyze-nodule-form-{case_id}-0"


def test_the_radiologist_reviews_the_marks(
    nodule_backend: dict[str, str], kermany_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No verdict yet: nothing is sent. A confirmed mark with the finding "no nodule": the backend refuses (422) and
    the page shows its reason. Confirm the first mark, reject the rest, finding NODULE: saved, queued (a rejected
    mark differs from the AI), listed with the earlier reviews."""
    at = pointed_at(nodule_backend, monkeypatch)
    case_id = analysed(at, kermany_jpeg(kermany_dir, "NORMAL"), "UI-NODULE-REVIEW")
    nodule = stored_case(nodule_backend, case_id)["nodule"]
    marks = len(nodule["locations"])
    assert marks >= 2, "the fixture model marks this film more than once: one mark is confirmed, one rejected"
    at.toggle(key=f"analyze-nodule-review-{case_id}-0").set_value(True).run()
    assert not at.exception, at.exception
    form = review_form_key(case_id)
    at.button(key=f"FormSubmitter:{form}-Submit nodule review").click().run()
    assert "Confirm or reject mark" in " ".join(e.value for e in at.error)  # nothing sent without every verdict
    for number in range(1, marks + 1):
        at.radio(key=f"{form}-mark-{number}").set_value("confirmed" if number == 1 else "rejected")
    at.radio(key=f"{form}-finding").set_value("NO_NODULE")
    at.button(key=f"FormSubmitter:{form}-Submit nodule review").click().run()
    refused = " ".join(e.value for e in at.error)
    assert refused.startswith("The review was not saved: A review that finds no nodule cannot confirm"), refused
    at.radio(key=f"{form}-finding").set_value("NODULE")
    at.text_area(key=f"{form}-comment").input("Only the first mark is a nodule.")
    at.button(key=f"FormSubmitter:{form}-Submit nodule review").click().run()
    assert not at.exception, at.exception
    saved = " ".join(s.value for s in at.success)
    assert f"Nodule or mass suspected · 1 confirmed · {marks - 1} rejected · 0 added" in saved
    assert "goes to the experts' annotation queue" in saved
    table = at.table[0].value
    assert list(table["Reader"]) == [UI_ADMIN] and list(table["Comment"]) == ["Only the first mark is a nodule."]
    differs = "rejected mark" if nodule["label"] == "NODULE" else "finding, rejected mark"
    assert list(table["Differs from the AI"]) == [differs]
    assert not at.toggle(key=f"analyze-nodule-review-{case_id}-1").value  # the review closes once saved
    answer = httpx.get(f"{nodule_backend['url']}/v1/cases/{case_id}/nodule-review",
                       headers=auth_headers(nodule_backend), timeout=30).json()  # fmt: skip
    (stored,) = answer["reviews"]
    assert [m["verdict"] for m in stored["marks"]] == ["confirmed"] + ["rejected"] * (marks - 1)
    assert stored["finding"] == "NODULE" and stored["queued"] is True


def test_the_annotator_sees_the_nodule_marks_once_the_read_is_in(
    nodule_backend: dict[str, str], kermany_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A radiologist adds a missed box (the case joins the annotation queue); an annotator reads it blind, and only then
    sees the nodule finding beside the AI's other result and its marks on the film with their own boxes."""
    admin = auth_headers(nodule_backend)
    film = sorted((kermany_dir / "test" / "NORMAL").glob("*.jpg"))[1]
    case = httpx.post(f"{nodule_backend['url']}/v1/studies", headers=admin, timeout=120,
                      files={"file": (film.name, film.read_bytes(), "image/jpeg")},
                      data={"patient": json.dumps({"patient_id": "UI-NODULE-QUEUE"})}).json()  # fmt: skip
    # A box the model missed always differs from the AI, whatever the fixture model called this film.
    marks = [{**loc, "verdict": "rejected"} for loc in case["nodule"]["locations"]]
    marks.append({"x": 10.0, "y": 10.0, "w": 20.0, "h": 20.0, "verdict": "added"})
    reviewed = httpx.post(f"{nodule_backend['url']}/v1/cases/{case['case_id']}/nodule-review", headers=admin,
                          json={"marks": marks, "finding": "NODULE", "comment": None}, timeout=30)  # fmt: skip
    assert reviewed.status_code == 201 and reviewed.json()["queued"], reviewed.text
    password = "annotator-pass-7f3b"
    created = httpx.post(f"{nodule_backend['url']}/v1/users", headers=admin, timeout=30,
                         json={"username": "ui-nodule-reader", "password": password, "role": "annotator"})  # fmt: skip
    assert created.status_code == 201, created.text
    token = httpx.post(f"{nodule_backend['url']}/v1/auth/login", timeout=30,
                       json={"username": "ui-nodule-reader", "password": password}).json()["access_token"]  # fmt: skip
    monkeypatch.setenv("BACKEND_URL", nodule_backend["url"])
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.session_state[IDENTITY_KEY] = Identity(username="ui-nodule-reader", role="annotator", token=token)
    at.session_state["auth_enabled"] = True
    at.run()
    at.switch_page("ui/pages/annotation_queue.py").run()
    at.button(key="queue-claim-next").click().run()
    assert not at.exception, at.exception
    assert "AI finding · nodule or mass" not in page_text(at)  # blind until the read is in
    at.radio(key="queue-label").set_value("NORMAL")
    at.button(key="FormSubmitter:queue-read-form-Submit read").click().run()
    assert not at.exception, at.exception
    text = page_text(at)
    assert "AI finding · nodule or mass" in text and "Finds about 6 of 10 nodules or masses" in text
    captions = [shown.caption for image in at.image for shown in image.proto.imgs]
    read_case = at.session_state["queue-read"]["case_id"]  # the queue may hand out another case this module queued
    marked = len(stored_case(nodule_backend, read_case)["nodule"]["locations"])
    assert f"Your read: NORMAL, 0 boxes in orange · the AI's nodule marks in yellow ({marked})" in captions, captions
