"""The annotation queue page with streamlit's AppTest against the real backend (uvicorn, shipped checkpoint), plus
its pure helpers.

Real users (two annotators, a senior, the admin) read a real uncertain Kermany film: the first reads PNEUMONIA,
the second NORMAL, the senior adjudicates NORMAL; each step is checked in what the page shows and in what the
backend stored. Then: the empty queue (204), a claim that ends behind the reader's back, the admin's retraining
jobs.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from settings import get_settings
from tests.live_server import ROOT, running_api
from tests.test_clinical_path import BETWEEN_THRESHOLD_AND_HALF
from tests.ui_backend import UI_ADMIN, backend_env
from ui.formatting import (
    case_state_text,
    claim_expiry_text,
    comparison_rows,
    film_facts,
    flat_metrics,
    image_boxes,
    job_row,
    read_summary,
)
from ui.imagery import draw_boxes
from ui.registry import pages_for
from ui.session import ADMIN, ANNOTATOR, IDENTITY_KEY, SENIOR, Identity

APP = str(ROOT / "app.py")
QUEUE_PAGE = "ui/pages/annotation_queue.py"
RUN_TIMEOUT_S = 90  # a run may fetch a film and a Grad-CAM heatmap on a busy 2-core machine
PATIENT = {"name": "Perpetua Ravenscroft-Lyle", "patient_id": "MRN-UIQ-2202", "age": 4, "sex": "F"}
IDENTITY_WORDS = ("Perpetua", "Ravenscroft", "MRN-UIQ-2202")
RETRAIN_TIMEOUT_S = 420  # about a minute alone; the machine is shared
FINAL_JOB_STATES = frozenset({"promoted", "rejected", "failed"})
READ_OPTIONS = ["NORMAL", "PNEUMONIA", "OTHER (another finding)", "UNGRADABLE (the film cannot be read)"]


# --- pure helpers ------------------------------------------------------------------------------------------------


def test_boxes_drawn_on_the_shown_film_become_stored_pixels() -> None:
    drawn = [
        {"label": "", "left": 10.0, "top": 20.0, "width": 30.0, "height": 40.0},
        {"label": "", "left": -5.0, "top": 700.0, "width": 50.0, "height": 100.0},  # runs off the bottom edge
        {"label": "", "left": 100.0, "top": 100.0, "width": 0.2, "height": 30.0},  # a click, not a box
    ]
    # A 1440 x 1600 film shown at 648 x 720 px: 2.222 stored pixels per shown one.
    boxes = image_boxes(drawn, 1600 / 720, (1440, 1600))
    assert boxes == [
        {"x": 22.2, "y": 44.4, "w": 66.7, "h": 88.9},
        {"x": 0.0, "y": 1555.6, "w": 100.0, "h": 44.4},
    ]


def test_claim_expiry_in_words() -> None:
    now = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
    assert claim_expiry_text("2026-12-05T23:44:30Z", now) == "expires in 14 min 30 s (at 23:44:30 UTC)"
    assert claim_expiry_text("2026-12-05T23:44:30", now) == "expires in 14 min 30 s (at 23:44:30 UTC)"  # naive = UTC
    assert claim_expiry_text((now - timedelta(seconds=5)).isoformat(), now) == "expired at 23:29:55 UTC"


def test_film_facts_name_age_sex_and_view_only() -> None:
    claimed = {"case_id": "c1", "age": 4, "sex": "F", "study": {"ViewPosition": "PA", "width": 1024}}
    assert film_facts(claimed) == "age 4 · female · view PA"
    record = {"patient": {"name": "Jane Doe", "patient_id": "P-1", "age": None, "sex": "M"},
              "study": {"PatientAge": "045Y", "PatientName": "Doe^Jane"}}  # fmt: skip
    assert film_facts(record) == "age 45 · male"
    assert film_facts({"study": {}}) == "no age, sex or view recorded"


def test_reads_states_and_jobs_in_words() -> None:
    read = {"annotator": "ann", "label": "NORMAL", "confidence": 4, "comment": "clear", "seconds": 75.0,
            "boxes": [{"x": 10, "y": 20.4, "w": 30, "h": 40}], "created_at": "2026-12-05T23:40:00Z"}  # fmt: skip
    assert read_summary(read) == {"Reader": "ann", "Label": "NORMAL", "Confidence": "4/5",
                                  "Boxes": "30×40 px at (10, 20)", "Comment": "clear", "Time": "1 min 15 s",
                                  "When": "2026-12-05 23:40"}  # fmt: skip
    assert case_state_text("adjudication", None).startswith("The reads disagree")
    final = {"label": "NORMAL", "source": "adjudication"}
    assert case_state_text("final", final) == "Final label: NORMAL (adjudicated by a senior)."
    metrics = {"test": {"metric": "auroc", "n": 624, "champion": 0.95951, "challenger": 0.96016},
               "holdout": {"n": 0}, "tolerance": 0.005}  # fmt: skip
    job = {"id": "0123456789ab", "state": "rejected", "trigger": "admin", "requested_by": "root",
           "created_at": "2026-12-05T23:00:00Z", "finished_at": None, "reason": "worse on the new labels",
           "metrics": metrics}  # fmt: skip
    row = job_row(job)
    assert (row["Job"], row["Outcome"], row["Finished"]) == ("01234567", "worse on the new labels", "–")
    assert job_row({**job, "state": "failed", "error": "no GPU"})["Outcome"] == "Failed: no GPU"
    # Four places: the promotion tolerance (0.005) would vanish at three.
    assert comparison_rows(metrics) == [{"Evaluated on": "test", "Metric": "auroc", "n": "624", "Champion": "0.9595",
                                         "Challenger": "0.9602"}]  # fmt: skip
    assert flat_metrics({"holdout": {"n": 0}, "tolerance": 0.005}) == {"holdout · n": "0", "tolerance": "0.0050"}


def test_each_reader_boxes_are_outlined_in_their_colour() -> None:
    film = np.full((100, 80), 50, dtype=np.uint8)
    shown = draw_boxes(film, [{"x": 20, "y": 40, "w": 100, "h": 60}], 0.5, (255, 0, 0))  # stored 200 px wide
    assert shown.shape == (100, 80, 3)
    assert tuple(shown[20, 30]) == (255, 0, 0)  # top edge at y = 40 * 0.5
    assert tuple(shown[30, 30]) == (50, 50, 50)  # inside stays the film


def test_expert_readers_find_the_queue_page() -> None:
    assert [page.title for page in pages_for(ANNOTATOR)] == ["Annotation queue", "Health"]
    assert [page.title for page in pages_for(SENIOR)] == ["Annotation queue", "Health"]
    assert "Annotation queue" in [page.title for page in pages_for(ADMIN)]


# --- the backend and its users ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path) -> Iterator[dict[str, str]]:
    env = backend_env(tmp_path_factory.mktemp("ui-queue") / "var", shipped_model)
    env |= {
        "READS_PER_CASE": "2",
        "SHOW_AI_TO_ANNOTATORS": "false",
        "RETRAIN_MIN_NEW_LABELS": "0",
        "RETRAIN_MAX_REFERENCE_IMAGES": "50",
    }  # a retraining that could run would take about a minute on 2 cores
    with running_api(env) as url:
        yield {**env, "url": url}


@pytest.fixture
def ui_settings(backend: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("BACKEND_URL", backend["url"])
    get_settings.cache_clear()
    yield backend
    get_settings.cache_clear()


def login(backend: dict[str, str], username: str, password: str) -> Identity:
    answer = httpx.post(f"{backend['url']}/v1/auth/login", json={"username": username, "password": password},
                        timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return Identity(username=username, role=body["role"], token=body["access_token"])


@pytest.fixture(scope="module")
def people(backend: dict[str, str]) -> dict[str, Identity]:
    """The admin, and annotators and a senior the admin creates through the API."""
    admin = login(backend, UI_ADMIN, backend["ADMIN_PASSWORD"])
    people = {"admin": admin}
    for name, role in (("ann-1", "annotator"), ("ann-2", "annotator"), ("ann-3", "annotator"), ("senior", "senior")):
        password = secrets.token_urlsafe(16)
        created = httpx.post(f"{backend['url']}/v1/users", headers=bearer(admin), timeout=30,
                             json={"username": f"ui-{name}", "password": password, "role": role})  # fmt: skip
        assert created.status_code == 201, created.text
        people[name] = login(backend, f"ui-{name}", password)
    return people


def bearer(identity: Identity) -> dict[str, str]:
    return {"Authorization": f"Bearer {identity.token}"}


def uncertain_case(backend: dict[str, str], admin: Identity, kermany_dir: Path, film: str) -> str:
    """A film the shipped model scores between its threshold and 0.5: uncertain, so it queues itself."""
    image = kermany_dir / "test" / film
    answer = httpx.post(f"{backend['url']}/v1/studies", headers=bearer(admin), timeout=120,
                        files={"file": (image.name, image.read_bytes(), "image/jpeg")},
                        data={"patient": json.dumps(PATIENT)})  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.json()["uncertain"], answer.json()
    return answer.json()["case_id"]


def reads_of(backend: dict[str, str], admin: Identity, case_id: str) -> dict:
    answer = httpx.get(f"{backend['url']}/v1/annotations/{case_id}", headers=bearer(admin), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def queue_page(identity: Identity) -> AppTest:
    """The annotation queue page as `identity` sees it."""
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.session_state[IDENTITY_KEY] = identity
    at.session_state["auth_enabled"] = True
    at.run()
    at.switch_page(QUEUE_PAGE).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Annotation queue"
    return at


def page_text(at: AppTest) -> str:
    kinds = ("markdown", "caption", "title", "subheader", "error", "warning", "info", "success")
    return "\n".join(str(element.value) for kind in kinds for element in getattr(at, kind))


def run_ok(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    return at


def read_case(at: AppTest, label: str, confidence: int, comment: str) -> None:
    at.radio(key="queue-label").set_value(label)
    at.slider(key="queue-confidence").set_value(confidence)
    at.text_area(key="queue-comment").input(comment)
    at.button(key="FormSubmitter:queue-read-form-Submit read").click().run()


# --- the pages against the real backend ------------------------------------------------------------------------------


def test_two_blind_reads_then_the_senior_adjudicates(
    ui_settings: dict[str, str], people: dict[str, Identity], kermany_dir: Path
) -> None:
    admin = people["admin"]
    case_id = uncertain_case(ui_settings, admin, kermany_dir, BETWEEN_THRESHOLD_AND_HALF[0])

    first = queue_page(people["ann-1"])
    assert [option for option in first.radio(key="queue-view").options] == ["Read cases", "My statistics"]
    run_ok(first.button(key="queue-claim-next").click().run())
    text = page_text(first)
    assert f"Case {case_id[:8]}" in text and "**Film:** age 4 · female" in text
    assert "Blind read: the AI result is shown after you submit." in text and "ai-finding" not in text
    assert not any(word in text for word in IDENTITY_WORDS)
    assert "Your claim expires in 1" in text  # CLAIM_TTL_S 900: "expires in 14 min 59 s" or "15 min"
    assert first.radio(key="queue-label").options == READ_OPTIONS
    first.button(key="FormSubmitter:queue-read-form-Submit read").click().run()
    assert [e.value for e in first.error] == ["Choose a label before submitting."]
    read_case(first, "PNEUMONIA", 4, "Patchy right lower zone opacity.")
    run_ok(first)
    text = page_text(first)
    assert f"Your read of case {case_id[:8]} is saved: PNEUMONIA (confidence 4/5, 0 boxes)." in text
    assert "Waiting for the second independent read" in text
    assert "ai-finding" in text  # the AI result is revealed once the read is in
    stored = reads_of(ui_settings, people["ann-1"], case_id)  # the reader's own view: others see no read yet
    assert [(r["annotator"], r["label"], r["confidence"], r["comment"]) for r in stored["annotations"]] == [
        ("ui-ann-1", "PNEUMONIA", 4, "Patchy right lower zone opacity.")
    ]
    assert stored["state"] == "open"

    second = queue_page(people["ann-2"])
    run_ok(second.button(key="queue-claim-next").click().run())
    assert f"Case {case_id[:8]}" in page_text(second)
    assert "PNEUMONIA" not in page_text(second)  # blind to the first read
    read_case(second, "NORMAL", 3, "")
    run_ok(second)
    assert "The reads disagree: the case waits for adjudication by a senior reader." in page_text(second)
    assert reads_of(ui_settings, admin, case_id)["state"] == "adjudication"

    senior = queue_page(people["senior"])
    assert senior.radio(key="queue-view").options == ["Read cases", "Adjudication", "My statistics"]
    run_ok(senior.radio(key="queue-view").set_value("Adjudication").run())
    assert senior.selectbox(key="adjudicate-case").value == case_id
    text = page_text(senior)
    assert "**ui-ann-1**" in text and "**ui-ann-2**" in text and "### PNEUMONIA" in text and "### NORMAL" in text
    assert "> Patchy right lower zone opacity." in text
    assert sorted(senior.radio(key=f"adjudicate-label-{case_id}").options) == sorted(READ_OPTIONS)
    senior.radio(key=f"adjudicate-label-{case_id}").set_value("NORMAL")
    senior.text_area(key=f"adjudicate-comment-{case_id}").input("No consolidation on review.")
    senior.button(key=f"FormSubmitter:adjudicate-form-{case_id}-Record final label").click().run()
    run_ok(senior)
    final = reads_of(ui_settings, admin, case_id)["final"]
    assert (final["label"], final["source"]) == ("NORMAL", "adjudication")
    assert f"Final label of case {case_id[:8]}: NORMAL (held for {final['split']})." in page_text(senior)
    assert "No case waits for adjudication" in page_text(senior)

    # The first reader, who was overruled: the queue has nothing left for them, and their statistics say so.
    run_ok(first.button(key="queue-claim-next").click().run())
    assert "No case is waiting for your read" in page_text(first)
    run_ok(first.radio(key="queue-view").set_value("My statistics").run())
    metrics = {metric.label: metric.value for metric in first.metric}
    # One read, PNEUMONIA against the final NORMAL: observed agreement 0, chance agreement 1·0 + 0·1 = 0, kappa 0.
    assert (metrics["Reads"], metrics["Agreement"], metrics["Kappa vs final"]) == ("1", "0%", "0.00")
    assert (metrics["All reads"], metrics["Final labels"], metrics["Readers agree"]) == ("2", "1", "0%")
    run_ok(senior.radio(key="queue-view").set_value("My statistics").run())
    readers = senior.dataframe[0].value.set_index("Reader")
    assert list(readers["Agrees with the other reader"]) == ["0%", "0%"]  # the two reads differ
    # The second reader matched the final label, but with a single class on both sides kappa is undefined.
    assert readers.loc["ui-ann-1", "Kappa vs final"] == "0.00" and readers.loc["ui-ann-2", "Kappa vs final"] == "n/a"


def test_release_gives_the_case_back_and_a_claim_that_ends_behind_the_reader_is_explained(
    ui_settings: dict[str, str], people: dict[str, Identity], kermany_dir: Path
) -> None:
    case_id = uncertain_case(ui_settings, people["admin"], kermany_dir, BETWEEN_THRESHOLD_AND_HALF[1])
    reader = queue_page(people["ann-3"])
    run_ok(reader.button(key="queue-claim-next").click().run())
    assert reader.session_state["queue-claim"]["case_id"] == case_id
    run_ok(reader.button(key="queue-release").click().run())
    assert f"Case {case_id[:8]} is back in the queue for another reader." in page_text(reader)
    item = httpx.get(f"{ui_settings['url']}/v1/queue", headers=bearer(people["admin"]), timeout=30).json()["items"]
    assert [(i["case_id"], i["claimed_by"]) for i in item if i["case_id"] == case_id] == [(case_id, None)]

    run_ok(reader.button(key="queue-claim-next").click().run())
    claim = reader.session_state["queue-claim"]
    released = httpx.post(f"{ui_settings['url']}/v1/queue/claims/{claim['claim_id']}/release",
                          headers=bearer(people["ann-3"]), timeout=30)  # fmt: skip
    assert released.status_code == 204, released.text
    reader.slider(key="queue-confidence").set_value(5).run()  # any interaction renews the claim: it is gone
    assert not reader.exception, reader.exception
    warnings = " ".join(w.value for w in reader.warning)
    assert warnings.startswith(f"Your claim on case {claim['case_id'][:8]} has ended and nothing was saved for it: ")
    assert "released" in warnings  # the backend's own reason follows
    assert not [button for button in reader.button if button.label == "Submit read"]


def test_admin_starts_a_retraining_and_follows_it_to_its_outcome(
    ui_settings: dict[str, str], people: dict[str, Identity]
) -> None:
    admin = queue_page(people["admin"])
    assert admin.radio(key="queue-view").options == ["Read cases", "Adjudication", "My statistics", "Retraining"]
    run_ok(admin.radio(key="queue-view").set_value("Retraining").run())
    assert "No retraining job yet" in page_text(admin)
    admin.text_input(key="retraining-reason").input("UI test: new adjudicated labels")
    run_ok(admin.button(key="retraining-start").click().run())
    started = finished_job(ui_settings, people["admin"], timeout_s=0)
    assert (started["trigger"], started["requested_by"]) == ("admin", UI_ADMIN)
    assert f"Retraining job {started['id'][:8]} is queued." in page_text(admin)  # the state the start answered
    assert admin.button(key="retraining-start").disabled  # never two jobs at once

    # A few expert labels at most: too few held back to show a challenger is not worse, so the job ends once they
    # are counted, before any training.
    job = finished_job(ui_settings, people["admin"], timeout_s=RETRAIN_TIMEOUT_S)
    assert job["state"] == "rejected" and job["reason"].endswith("(stopped before training)"), job
    run_ok(admin.button(key="retraining-refresh").click().run())
    row = admin.dataframe[0].value.iloc[0]
    assert (row["Job"], row["State"], row["Outcome"]) == (job["id"][:8], "rejected", job["reason"])
    text = page_text(admin)
    assert f"**Job {job['id'][:8]}** · rejected · {job['reason']}" in text
    assert f"Champion `{job['champion_version']}` · challenger `–`" in text
    assert "Steps done: champion → labels" in text
    assert not admin.button(key="retraining-start").disabled


def finished_job(backend: dict[str, str], admin: Identity, timeout_s: float) -> dict:
    """The newest job once it is promoted, rejected or failed (timeout 0: as it is now)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = httpx.get(f"{backend['url']}/v1/retraining", headers=bearer(admin), timeout=30).json()["jobs"][0]
        if job["state"] in FINAL_JOB_STATES or time.monotonic() >= deadline:
            return job
        time.sleep(2)


@pytest.fixture
def open_backend(tmp_path: Path, shipped_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A backend that shows the model's answer to readers before their read (SHOW_AI_TO_ANNOTATORS=true)."""
    env = backend_env(tmp_path / "var", shipped_model) | {"SHOW_AI_TO_ANNOTATORS": "true"}
    with running_api(env) as url:
        monkeypatch.setenv("BACKEND_URL", url)
        get_settings.cache_clear()
        yield {**env, "url": url}
    get_settings.cache_clear()


def test_with_the_ai_shown_the_reader_sees_its_finding_and_heatmap_before_reading(
    open_backend: dict[str, str], kermany_dir: Path
) -> None:
    admin = login(open_backend, UI_ADMIN, open_backend["ADMIN_PASSWORD"])
    password = secrets.token_urlsafe(16)
    created = httpx.post(f"{open_backend['url']}/v1/users", headers=bearer(admin), timeout=30,
                         json={"username": "ui-open-reader", "password": password, "role": "annotator"})  # fmt: skip
    assert created.status_code == 201, created.text
    case_id = uncertain_case(open_backend, admin, kermany_dir, BETWEEN_THRESHOLD_AND_HALF[0])
    case = httpx.get(f"{open_backend['url']}/v1/cases/{case_id}", headers=bearer(admin), timeout=30).json()

    reader = queue_page(login(open_backend, "ui-open-reader", password))
    run_ok(reader.button(key="queue-claim-next").click().run())
    text = page_text(reader)
    assert case["prediction"] == "PNEUMONIA"  # P 0.39, above the threshold 0.189
    assert f"**AI finding:** PNEUMONIA ({round(case['confidence'] * 100)}% calibrated confidence)" in text
    assert "Blind read" not in text and not reader.image
    claim_id = reader.session_state["queue-claim"]["claim_id"]
    run_ok(reader.toggle(key=f"queue-heatmap-{claim_id}").set_value(True).run())
    assert [shown.caption for image in reader.image for shown in image.proto.imgs] == ["Grad-CAM overlay"]
