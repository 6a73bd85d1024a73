"""The learning loop through HTTP with real users on a running uvicorn (its own server and queue): uncertain films,
cases sent by hand and sign-off disagreements enter the queue; two annotators claim different cases and read blind;
agreeing reads make the final label, disagreeing ones go to a senior; claims lapse; the export is the training
manifest; statistics count what happened.

The films are named Kermany test films the shipped model scores between its threshold (0.189) and 0.5: it calls
them PNEUMONIA and flags them uncertain (tests/test_clinical_path.py).
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ApiAccount, LiveApi, ReferenceLibrary, login, server_env, started_api
from tests.monitoring_support import sample

BETWEEN_THRESHOLD_AND_HALF = (
    "NORMAL/IM-0030-0001.jpg",
    "PNEUMONIA/person172_bacteria_828.jpg",
    "NORMAL/NORMAL2-IM-0290-0001.jpg",
    "PNEUMONIA/person21_virus_53.jpg",
    "NORMAL/NORMAL2-IM-0249-0001.jpg",
)
CLEARLY_NORMAL = "NORMAL/IM-0001-0001.jpg"  # P(PNEUMONIA) 0.003: not uncertain
PATIENT = {"name": "Perpetua Ravenscroft-Lyle", "patient_id": "MRN-PRL-2202", "age": 4, "sex": "F"}
IDENTITY = ("Perpetua", "Ravenscroft", "MRN-PRL-2202")
READ_LABELS = ["NORMAL", "PNEUMONIA", "OTHER", "UNGRADABLE"]
CLAIM_TTL_S = 10


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, shipped_model: Path, reference_library: ReferenceLibrary
) -> Iterator[LiveApi]:
    env = server_env(tmp_path_factory.mktemp("var-learning"), shipped_model, reference_library)
    env |= {"CLAIM_TTL_S": str(CLAIM_TTL_S), "READS_PER_CASE": "2", "RETRAIN_MIN_NEW_LABELS": "0"}
    with started_api(env, "sqlite") as live:
        yield live


@pytest.fixture(scope="module")
def second_annotator(api: LiveApi) -> ApiAccount:
    password = secrets.token_urlsafe(18)
    with api.client("admin") as admin:
        created = admin.post(
            "/v1/users", json={"username": "test-annotator-2", "password": password, "role": "annotator"}
        )
        assert created.status_code == 201, created.text
    return ApiAccount("test-annotator-2", password, "annotator", login(api.url, "test-annotator-2", password))


@pytest.fixture(scope="module")
def people(api: LiveApi, second_annotator: ApiAccount) -> Iterator[dict[str, httpx.Client]]:
    clients = {role: api.client(role) for role in ("radiologist", "annotator", "senior", "admin")}
    clients["annotator2"] = httpx.Client(base_url=api.url, timeout=120, headers=second_annotator.headers)
    yield clients
    for client in clients.values():
        client.close()


def study(radiologist: httpx.Client, kermany_dir: Path, name: str) -> dict:
    payload = (kermany_dir / "test" / name).read_bytes()
    answer = radiologist.post(
        "/v1/studies", files={"file": (Path(name).name, payload)}, data={"patient": json.dumps(PATIENT)}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def uncertain_cases(people: dict[str, httpx.Client], kermany_dir: Path) -> list[dict]:
    cases = [study(people["radiologist"], kermany_dir, name) for name in BETWEEN_THRESHOLD_AND_HALF]
    uncertain = [case for case in cases if case["uncertain"]]
    assert len(uncertain) >= 4, [(case["probabilities"], case["uncertain"]) for case in cases]
    return uncertain


def queue(http: httpx.Client, **params: str) -> dict[str, dict]:
    answer = http.get("/v1/queue", params={"limit": 500, **params})
    assert answer.status_code == 200, answer.text
    return {item["case_id"]: item for item in answer.json()["items"]}


def claim(http: httpx.Client) -> dict:
    answer = http.post("/v1/queue/claim")
    assert answer.status_code == 200, answer.text
    return answer.json()


def read(http: httpx.Client, case_id: str, label: str, confidence: int = 4, **extra: object) -> httpx.Response:
    return http.post("/v1/annotations", json={"case_id": case_id, "label": label, "confidence": confidence, **extra})


def release_all(http: httpx.Client, claims: list[dict]) -> None:
    for held in claims:
        http.post(f"/v1/queue/claims/{held['claim_id']}/release")


# --- entering the queue ---------------------------------------------------------------------------------------------


def test_uncertain_films_enter_the_queue_by_themselves_and_a_clear_one_does_not(
    people: dict[str, httpx.Client], uncertain_cases: list[dict], kermany_dir: Path
) -> None:
    normal = study(people["radiologist"], kermany_dir, CLEARLY_NORMAL)
    waiting = queue(people["annotator"])
    for case in uncertain_cases:
        assert [reason["code"] for reason in waiting[case["case_id"]]["reasons"]] == ["uncertain"]
        assert waiting[case["case_id"]]["state"] == "open" and waiting[case["case_id"]]["reads_needed"] == 2
    assert normal["uncertain"] is False and normal["case_id"] not in waiting
    metrics = people["admin"].get("/metrics").text
    assert sample(metrics, "cxr_review_queue_length", state="open") == len(waiting) == len(uncertain_cases)


def test_a_radiologist_sends_a_case_with_a_reason_that_readers_never_see(
    people: dict[str, httpx.Client], kermany_dir: Path
) -> None:
    normal = study(people["radiologist"], kermany_dir, CLEARLY_NORMAL)
    reason = "Perpetua's mother reports fever; please double-read the left base."
    sent = people["radiologist"].post("/v1/queue", json={"case_id": normal["case_id"], "reason": reason})
    assert sent.status_code == 201, sent.text
    assert [(r["code"], r["requested_by"]) for r in sent.json()["reasons"]] == [("manual", "test-radiologist")]
    listing = people["annotator"].get("/v1/queue", params={"limit": 500})
    assert normal["case_id"] in listing.text and "Perpetua" not in listing.text and "fever" not in listing.text
    unknown = people["radiologist"].post("/v1/queue", json={"case_id": "no-such-case", "reason": "please read"})
    assert unknown.status_code == 404, unknown.text


def test_signing_with_another_finding_than_the_model_queues_the_case(
    people: dict[str, httpx.Client], kermany_dir: Path
) -> None:
    radiologist = people["radiologist"]
    disputed, agreed = (study(radiologist, kermany_dir, CLEARLY_NORMAL) for _ in range(2))
    assert radiologist.post(f"/v1/cases/{disputed['case_id']}/sign", json={"finding": "PNEUMONIA"}).status_code == 200
    assert radiologist.post(f"/v1/cases/{agreed['case_id']}/sign", json={"finding": "NORMAL"}).status_code == 200
    waiting = queue(people["senior"])
    assert [r["code"] for r in waiting[disputed["case_id"]]["reasons"]] == ["disagreement"]
    assert agreed["case_id"] not in waiting
    other = study(radiologist, kermany_dir, CLEARLY_NORMAL)
    wrong = radiologist.post(f"/v1/cases/{other['case_id']}/sign", json={"finding": "FRACTURE"})
    assert wrong.status_code == 422 and "NORMAL, PNEUMONIA" in wrong.json()["detail"]


# --- claiming and blind reading -------------------------------------------------------------------------------------


def test_two_annotators_get_different_cases_and_read_blind(
    people: dict[str, httpx.Client], uncertain_cases: list[dict]
) -> None:
    first, second = claim(people["annotator"]), claim(people["annotator2"])
    try:
        assert first["case_id"] != second["case_id"]
        assert first["labels"] == READ_LABELS and first["show_ai"] is False and first["case"]["ai"] is None
        assert first["case"]["age"] == 4 and first["case"]["sex"] == "F"  # what a reader may know of the patient
        assert not any(secret in json.dumps(first) for secret in IDENTITY)
        case_id = first["case_id"]
        for path in (f"/v1/cases/{case_id}", f"/v1/cases/{case_id}/heatmap"):
            hidden = people["annotator"].get(path)
            assert hidden.status_code == 403 and "Blind double reading" in hidden.json()["detail"]
        assert people["annotator"].get(f"/v1/cases/{case_id}/image").status_code == 200  # the film itself, always
        box = {"x": 40, "y": 60, "w": 120, "h": 90}
        submitted = read(people["annotator"], case_id, "PNEUMONIA", 4, comment="right lower zone", boxes=[box])
        assert submitted.status_code == 201, submitted.text
        assert submitted.json()["annotator"] == "test-annotator" and submitted.json()["boxes"] == [box]
        shown = people["annotator"].get(f"/v1/cases/{case_id}")
        assert shown.status_code == 200 and shown.json()["prediction"] == "PNEUMONIA"  # revealed after the read
        assert people["annotator"].get(f"/v1/cases/{case_id}/heatmap").status_code == 200
        again = read(people["annotator"], case_id, "NORMAL", 3)
        assert again.status_code in (404, 409), again.text  # the claim was used: no second read without a claim
    finally:
        release_all(people["annotator2"], [second])


def test_a_claim_lapses_and_the_case_is_free_again(
    people: dict[str, httpx.Client], uncertain_cases: list[dict]
) -> None:
    held = claim(people["senior"])
    renewed = people["senior"].post(f"/v1/queue/claims/{held['claim_id']}/renew")
    assert renewed.status_code == 200 and renewed.json()["expires_at"] >= held["expires_at"]
    time.sleep(CLAIM_TTL_S + 1.5)
    late = read(people["senior"], held["case_id"], "NORMAL", 2)
    assert late.status_code == 409 and "claim" in late.json()["detail"].lower(), late.text
    assert people["senior"].post(f"/v1/queue/claims/{held['claim_id']}/renew").status_code == 409
    someone_else = people["annotator2"].post(f"/v1/queue/claims/{held['claim_id']}/release")
    assert someone_else.status_code in (403, 404, 409)


# --- double reading, adjudication, export, statistics ------------------------------------------------------------


def reads_of(http: httpx.Client, case_id: str) -> list[dict]:
    answer = http.get(f"/v1/annotations/{case_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["annotations"]


def read_everything(people: dict[str, httpx.Client]) -> dict[str, dict[str, str]]:
    """Both annotators take turns claiming the next case and reading it until the queue has nothing left for either:
    the first always says PNEUMONIA, the second PNEUMONIA on their first case and NORMAL after. Checks on the way
    that nobody is ever handed a case they have read. Returns case -> annotator -> label."""
    who_is = {"test-annotator": "annotator", "test-annotator-2": "annotator2"}
    labels: dict[str, dict[str, str]] = {}
    for case_id in queue(people["admin"]):  # reads made before (a radiologist sees every read)
        for earlier in reads_of(people["radiologist"], case_id):
            labels.setdefault(case_id, {})[who_is[earlier["annotator"]]] = earlier["label"]
    done = {"annotator": False, "annotator2": False}
    while not all(done.values()):
        for who in ("annotator", "annotator2"):
            answer = people[who].post("/v1/queue/claim")
            if answer.status_code == 204:
                done[who] = True
                continue
            assert answer.status_code == 200, answer.text
            case_id = answer.json()["case_id"]
            assert who not in labels.get(case_id, {}), f"{who} was handed {case_id} again"
            first_of_second = who == "annotator2" and not any("annotator2" in v for v in labels.values())
            label = "PNEUMONIA" if who == "annotator" or first_of_second else "NORMAL"
            assert read(people[who], case_id, label, 5).status_code == 201
            labels.setdefault(case_id, {})[who] = label
    return labels


def test_agreeing_reads_make_the_final_label_and_disagreeing_ones_go_to_a_senior(
    people: dict[str, httpx.Client], uncertain_cases: list[dict]
) -> None:
    labels = read_everything(people)
    assert all(len(by) == 2 for by in labels.values()), labels  # every queued case read twice, by different people
    agreed = [case for case, by in labels.items() if len(set(by.values())) == 1]
    disputed = [case for case, by in labels.items() if len(set(by.values())) == 2]
    assert agreed and disputed, labels
    after = people["annotator"].get(f"/v1/annotations/{agreed[0]}").json()
    assert after["state"] == "final" and len(after["annotations"]) == 2
    assert (after["final"]["label"], after["final"]["source"]) == ("PNEUMONIA", "agreement")
    assert sorted(after["final"]["annotators"]) == ["test-annotator", "test-annotator-2"]
    blind = people["annotator"].get(f"/v1/annotations/{disputed[0]}").json()
    assert blind["state"] == "adjudication" and [a["annotator"] for a in blind["annotations"]] == ["test-annotator"]
    assert blind["labels"] == READ_LABELS  # what the adjudicator may choose from
    assert set(queue(people["senior"], state="adjudication")) == set(disputed)

    refused = people["annotator"].post(f"/v1/annotations/{disputed[0]}/adjudicate", json={"label": "NORMAL"})
    assert refused.status_code == 403
    for case_id in disputed:
        final = people["senior"].post(f"/v1/annotations/{case_id}/adjudicate", json={"label": "NORMAL"})
        assert final.status_code == 200, final.text
        assert (final.json()["label"], final.json()["source"]) == ("NORMAL", "adjudication")
    twice = people["admin"].post(f"/v1/annotations/{disputed[0]}/adjudicate", json={"label": "PNEUMONIA"})
    assert twice.status_code == 409, twice.text

    exported = people["senior"].get("/v1/annotations/export")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = {row["file"]: row for row in csv.DictReader(io.StringIO(exported.text))}
    assert list(next(iter(rows.values())))[:6] == ["file", "label", "split", "patient_id", "source", "annotators"]
    assert {file: row["label"] for file, row in rows.items()} == {
        **{f"images/{case}.png": "PNEUMONIA" for case in agreed},
        **{f"images/{case}.png": "NORMAL" for case in disputed},
    }
    assert {row["split"] for row in rows.values()} <= {"train", "val"}
    assert not any(secret in exported.text for secret in IDENTITY)

    mine = people["annotator2"].get("/v1/annotations/stats").json()
    assert [row["annotator"] for row in mine["annotators"]] == ["test-annotator-2"]  # my statistics only
    everyone = {row["annotator"]: row for row in people["senior"].get("/v1/annotations/stats").json()["annotators"]}
    assert everyone["test-annotator-2"]["reads"] == len(labels) and everyone["test-annotator"]["reads"] == len(labels)
    assert everyone["test-annotator-2"]["agreement_rate"] == pytest.approx(len(agreed) / len(labels))
