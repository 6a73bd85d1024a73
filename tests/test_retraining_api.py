"""From predictions to a decided challenger through HTTP, with the backend restarted in the middle of the job.

Thirty Kermany test films are analysed and queued (the uncertain ones by themselves, the others sent by hand); two
annotators read every one of them with the WRONG label (agreeing with each other); an admin starts a retraining;
the backend is stopped while the job runs and started again on the same install. The job must be taken over, finish
once, and end rejected: a head fitted on flipped labels is worse on the fixed test split, so the gate keeps the
champion, and says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ReferenceLibrary, create_accounts, login, server_env
from tests.live_server import running_api

FILMS_PER_CLASS = 15
FLIPPED = {"NORMAL": "PNEUMONIA", "PNEUMONIA": "NORMAL"}
FINAL_STATES = {"promoted", "rejected", "failed"}
# A real retraining (features of 170 films, MLflow, two backend starts) takes 2-3 minutes here: run with the slow
# tests (`scripts/test.sh -m slow`); the default suite covers the takeover in process (tests/test_retraining.py).
pytestmark = pytest.mark.slow

RETRAINING_ENV = {
    "READS_PER_CASE": "2",
    "EXPERT_HOLDOUT_FRACTION": "0.6",  # about 18 held-back labels: enough for the gate to judge (10 needed)
    "RETRAIN_MIN_NEW_LABELS": "0",  # only the admin starts the job
    "RETRAIN_MAX_REFERENCE_IMAGES": "50",
    "RETRAIN_MAX_TEST_IMAGES": "120",
    "RETRAIN_HEARTBEAT_S": "1",  # a job whose backend stopped is taken over after 6 s
    "RETRAIN_CHECK_INTERVAL_S": "1",
}


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path, reference_library: ReferenceLibrary) -> dict:
    env = server_env(tmp_path_factory.mktemp("var-retraining"), shipped_model, reference_library)
    return env | RETRAINING_ENV


def films(kermany_dir: Path) -> list[tuple[str, str]]:
    """(path, true label): the first FILMS_PER_CLASS test films of each class, by name."""
    chosen = []
    for label in ("NORMAL", "PNEUMONIA"):
        names = sorted(path.name for path in (kermany_dir / "test" / label).iterdir())[:FILMS_PER_CLASS]
        chosen += [(f"{label}/{name}", label) for name in names]
    return chosen


def analyse_and_queue(radiologist: httpx.Client, kermany_dir: Path) -> dict[str, str]:
    """case id -> the true label of its film; every case ends up in the experts' queue."""
    truth = {}
    for number, (name, label) in enumerate(films(kermany_dir)):
        patient = {"name": f"Retrain Patient {number}", "patient_id": f"RT-{number:03d}", "age": 4}
        payload = (kermany_dir / "test" / name).read_bytes()
        answer = radiologist.post("/v1/studies", files={"file": (Path(name).name, payload)},
                                  data={"patient": json.dumps(patient)})  # fmt: skip
        assert answer.status_code == 201, answer.text
        case = answer.json()
        if not (case["uncertain"] or case["ood"]):
            sent = radiologist.post("/v1/queue", json={"case_id": case["case_id"], "reason": "teaching set"})
            assert sent.status_code == 201, sent.text
        truth[case["case_id"]] = label
    return truth


def read_all_flipped(annotators: list[httpx.Client], truth: dict[str, str]) -> None:
    for annotator in annotators:
        while (claimed := annotator.post("/v1/queue/claim")).status_code == 200:
            case_id = claimed.json()["case_id"]
            body = {"case_id": case_id, "label": FLIPPED[truth[case_id]], "confidence": 4}
            assert annotator.post("/v1/annotations", json=body).status_code == 201
        assert claimed.status_code == 204, claimed.text


def bearer_client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"})


def wait_for(admin: httpx.Client, job_id: str, done: object, timeout_s: float) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = admin.get(f"/v1/retraining/{job_id}").json()
        if done(job):
            return job
        time.sleep(0.5)
    raise AssertionError(f"retraining job {job_id} did not get there in {timeout_s:.0f} s: {job}")


def test_a_retraining_on_wrong_expert_labels_survives_a_restart_and_is_rejected(
    install: dict, kermany_dir: Path
) -> None:
    with running_api(install) as url:
        people = create_accounts(url, install)
        with httpx.Client(base_url=url, timeout=120, headers=people["admin"].headers) as admin:
            second = {"username": "test-annotator-2", "password": "another long password 2", "role": "annotator"}
            assert admin.post("/v1/users", json=second).status_code == 201
            tokens = [people["radiologist"].token, people["annotator"].token,
                      login(url, second["username"], second["password"])]  # fmt: skip
            clients = [bearer_client(url, token) for token in tokens]
            truth = analyse_and_queue(clients[0], kermany_dir)
            read_all_flipped(clients[1:], truth)
            finals = {case: admin.get(f"/v1/annotations/{case}").json()["final"] for case in truth}
            assert all(final and final["label"] == FLIPPED[truth[case]] for case, final in finals.items()), finals
            held_back = sum(final["split"] == "val" for final in finals.values())
            started = admin.post("/v1/retraining", json={"reason": "expert labels in"})
            assert started.status_code == 202 and started.json()["state"] == "queued", started.text
            job_id = started.json()["id"]
            again = admin.post("/v1/retraining", json={})
            assert again.status_code == 409, again.text  # never two jobs at once
            running = wait_for(admin, job_id, lambda job: "labels" in job["progress"].get("steps_done", []), 300)
            assert running["state"] == "running"
            for client in clients:
                client.close()
    # The backend is down with the job half done; the same install starts again.
    admin_name, admin_password = people["admin"].username, people["admin"].password
    with running_api(install) as url, bearer_client(url, login(url, admin_name, admin_password)) as admin:
        job = wait_for(admin, job_id, lambda job: job["state"] in FINAL_STATES, 400)
        assert job["state"] == "rejected", job
        assert "test split" in job["reason"], job["reason"]
        assert job["progress"]["steps_done"] == ["champion", "labels", "features", "challenger", "registered",
                                                 "decided", "handed_over"]  # fmt: skip
        assert job["metrics"], job
        events = admin.get("/v1/audit", params={"action": "retraining", "limit": 200}).json()["items"]
        taken = [event for event in events if event["detail"].get("step") == "taken"]
        assert len({event["detail"]["runner"] for event in taken}) == 2  # two backends worked on it
        assert admin.get("/v1/audit/verify").json()["intact"] is True
        info = admin.get("/model/info").json()
        assert info["version"] == job["champion_version"]  # the champion still serves
    assert held_back >= 10, held_back
