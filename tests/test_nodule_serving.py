"""The nodule/mass finding served beside pneumonia (issue 23): stored with each case, answered over HTTP.

Storage: the case row keeps the finding as one JSON document (`nodule`, revision 0009); cases stored before the
upgrade keep everything and read `nodule: null`. SQLite and PostgreSQL.

HTTP: real backends (uvicorn) serving the tiny pneumonia checkpoint and the fixture nodule checkpoint
(tests/nodule_fixtures.py: random weights, so the test compares the API's answer with `NodulePredictor.predict` on the
same decoded pixels rather than with clinical truth); one backend's nodule checkpoint states test AUROC 0.8, the
other's 0.6, below the 0.65 floor.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

import api.case_media
from api.services import nodule_refusal
from imaging import DecodedImage, decode_image
from inference import NodulePredictor, load_checkpoint
from storage import (
    CaseRepository,
    Database,
    NewCase,
    PatientInfo,
    migrate_database,
)
from tests.conftest import DATABASES, LiveApi, empty_database, server_env, started_api
from tests.factories import png_bytes, synthetic_radiograph, to_stored
from tests.in_process import backend_settings, workstation
from tests.nodule_fixtures import make_nodule_checkpoint
from tests.old_schema import store_old_case

BEFORE_NODULE = "0008_retraining_jobs"
FINDING = {
    "label": "NODULE",
    "probability": 0.71,
    "threshold": 0.42,
    "locations": [{"x": 101.5, "y": 40.0, "w": 32.0, "h": 28.0, "score": 0.83}],
    "model_version": "nodule-fixture-1",
    "performance": {
        "sensitivity": 0.61,
        "false_positives_per_film": 1.0,
        "summary": "Finds about 6 of 10 nodules or masses, at about 1 false mark per film (measured on test films).",
    },
}


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from empty_database(request, tmp_path, "nodule")


def pneumonia_case(**fields: object) -> NewCase:
    return NewCase(
        image_sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        image_format="PNG",
        task="pneumonia",
        prediction="PNEUMONIA",
        confidence=0.8,
        probabilities={"NORMAL": 0.2, "PNEUMONIA": 0.8},
        model_version="pneumonia-v1",
        patient=PatientInfo(patient_id="MRN-7", name="Ada Example"),
        **fields,  # type: ignore[arg-type]
    )


def test_a_case_keeps_its_nodule_finding(database: Database) -> None:
    migrate_database(database)
    repo = CaseRepository(database)
    stored = repo.create_case(pneumonia_case(nodule=FINDING))
    assert repo.get_case(stored.id).nodule == FINDING
    assert repo.create_case(pneumonia_case()).nodule is None  # no nodule model served: null, not an empty finding


def test_upgrade_keeps_old_cases_with_no_nodule_finding(database: Database) -> None:
    migrate_database(database, BEFORE_NODULE)
    old = store_old_case(database, pneumonia_case(quality_warnings=["low contrast"]))
    migrate_database(database)
    case = CaseRepository(database).get_case(old)
    assert case.nodule is None
    assert (case.prediction, case.probabilities, case.model_version) == (
        "PNEUMONIA",
        {"NORMAL": 0.2, "PNEUMONIA": 0.8},
        "pneumonia-v1",
    )
    assert (case.patient.name, case.quality_warnings) == ("Ada Example", ["low contrast"])


# --- served over HTTP: one real backend with a nodule model, one whose nodule model misses the AUROC floor ----------

PERFORMANCE_SENTENCE = "Finds about 6 of 10 nodules or masses, at about 1 false mark per film (measured on test films)."
NODULE_THRESHOLD = 0.37  # not 0.5: a threshold bug would show
FILM_H, FILM_W = 180, 300  # non-square: x and y (width and height) cannot be swapped unnoticed
PNEUMONIA_FIELDS = ("prediction", "confidence", "probabilities", "positive_probability", "threshold", "model_version")


@dataclass(frozen=True)
class Backend:
    api: LiveApi
    nodule_checkpoint: Path

    def client(self, role: str = "radiologist") -> httpx.Client:
        return self.api.client(role)


def start_backend(root: Path, tiny: Path, test_auroc: float) -> Iterator[Backend]:
    root.mkdir(parents=True, exist_ok=True)
    nodule = root / "nodule.pt"
    make_nodule_checkpoint(nodule, test_auroc=test_auroc, threshold=NODULE_THRESHOLD, version=f"nodule-{test_auroc}")
    env = {**server_env(root / "var", tiny, None), "NODULE_MODEL_PATH": str(nodule)}
    with started_api(env, "sqlite") as api:
        yield Backend(api, nodule)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[Backend]:
    yield from start_backend(tmp_path_factory.mktemp("nodule-served"), tiny_checkpoint, test_auroc=0.8)


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[Backend]:
    yield from start_backend(tmp_path_factory.mktemp("nodule-refused"), tiny_checkpoint, test_auroc=0.6)


def film(seed: int = 3) -> bytes:
    return png_bytes(to_stored(synthetic_radiograph(FILM_H, FILM_W, seed=seed)))


def expected_finding(backend: Backend, data: bytes) -> dict:
    """What the nodule model itself says about the film, decoded the one way the workstation decodes uploads."""
    model = NodulePredictor(load_checkpoint(backend.nodule_checkpoint), threads=1, cache_size=1)
    return model.predict(decode_image(data).pixels).to_dict()


def study(backend: Backend, data: bytes) -> dict:
    with backend.client() as client:
        answer = client.post("/v1/studies", files={"file": ("film.png", data)}, data={"patient": '{"age": 50}'})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_study_answers_the_nodule_finding_of_the_same_film(served: Backend) -> None:
    data = film()
    case = study(served, data)
    nodule = case["nodule"]
    assert (case["study"]["width"], case["study"]["height"]) == (FILM_W, FILM_H)
    assert nodule["performance"] == {
        "sensitivity": 0.6,
        "false_positives_per_film": 1.0,
        "summary": PERFORMANCE_SENTENCE,
    }
    assert {k: v for k, v in nodule.items() if k != "performance"} == expected_finding(served, data)
    assert nodule["model_version"] == "nodule-0.8" and case["model_version"] == "test-tiny-1"  # each its own model
    assert nodule["threshold"] == NODULE_THRESHOLD
    assert nodule["label"] == ("NODULE" if nodule["probability"] >= NODULE_THRESHOLD else "NO_NODULE")
    assert nodule["locations"]  # location_threshold 0: every heatmap peak is a mark (a 4 x 4 grid at 64 px)
    for mark in nodule["locations"]:
        assert mark["x"] >= 0 and mark["x"] + mark["w"] <= FILM_W and mark["w"] > 0
        assert mark["y"] >= 0 and mark["y"] + mark["h"] <= FILM_H and mark["h"] > 0
    assert max(mark["x"] + mark["w"] for mark in nodule["locations"]) > FILM_H  # x spans the width, not the height
    with served.client() as client:
        stored = client.get(f"/v1/cases/{case['case_id']}").raise_for_status().json()
        audit = client.get("/v1/audit", params={"action": "prediction"}, headers=served.client("admin").headers)
    assert stored["nodule"] == nodule
    entry = next(e for e in audit.raise_for_status().json()["items"] if e["target_id"] == case["case_id"])
    assert entry["model_version"] == "test-tiny-1"
    assert (entry["detail"]["nodule_model_version"], entry["detail"]["nodule_label"]) == ("nodule-0.8", nodule["label"])


def test_the_pneumonia_finding_is_the_same_with_or_without_a_nodule_model(served: Backend, refused: Backend) -> None:
    data = film(seed=4)
    with_nodule, without = study(served, data), study(refused, data)
    assert without["nodule"] is None
    assert {k: with_nodule[k] for k in PNEUMONIA_FIELDS} == {k: without[k] for k in PNEUMONIA_FIELDS}
    assert set(with_nodule) == set(without)


def test_a_nodule_model_below_the_auroc_floor_is_refused_and_says_why(refused: Backend) -> None:
    why = (
        "No nodule model is served: its test AUROC 0.60 is below the 0.65 floor (NODULE_MIN_TEST_AUROC) "
        "for model nodule-0.6."
    )
    with refused.client() as client:
        info = client.get("/model/info", params={"task": "nodule"})
        predicted = client.post("/predict", params={"task": "nodule"}, files={"file": ("f.png", film())})
        ready = client.get("/ready")
    assert (info.status_code, info.json()["detail"]) == (503, why)
    assert (predicted.status_code, predicted.json()["detail"]) == (503, why)
    assert ready.status_code == 200  # pneumonia still serves: a refused nodule model does not make the backend unready
    check = ready.json()["checks"]["model:nodule"]
    assert check["ok"] is False and check["detail"] == why.removeprefix("No nodule model is served: ")
    assert study(refused, film(seed=5))["nodule"] is None


def test_model_info_describes_the_nodule_model_and_keeps_the_pneumonia_answer(served: Backend) -> None:
    with served.client() as client:
        nodule = client.get("/model/info", params={"task": "nodule"}).raise_for_status().json()
        pneumonia = client.get("/model/info").raise_for_status().json()
    with served.client("admin") as admin:
        serving = admin.get("/v1/models").raise_for_status().json()["serving"]
        metrics = admin.get("/metrics").raise_for_status().text
        ready = admin.get("/ready").json()["checks"]["model:nodule"]
    assert serving == {"pneumonia": "test-tiny-1", "nodule": "nodule-0.8"}
    assert 'cxr_model_info{architecture="resnet18",task="nodule",version="nodule-0.8"} 1.0' in metrics
    assert ready == {"ok": True, "detail": "nodule-0.8", "required": False}
    assert (nodule["task"], nodule["classes"], nodule["input_size"]) == ("nodule", ["NO_NODULE", "NODULE"], 64)
    assert (nodule["version"], nodule["threshold"], nodule["metrics"]["test"]["auroc"]) == ("nodule-0.8", 0.37, 0.8)
    assert nodule["extra"]["operating_point"] == {"sensitivity": 0.6, "false_positives_per_film": 1.0, "split": "test"}
    assert nodule["extra"]["location_threshold"] == 0.0
    assert (pneumonia["task"], pneumonia["version"]) == ("pneumonia", "test-tiny-1")
    assert set(pneumonia) == {
        "task", "architecture", "classes", "input_size", "version", "threshold", "temperature", "metrics",
        "data_fingerprint", "preprocess",
    }  # fmt: skip


def test_predict_with_task_nodule_answers_the_nodule_model(served: Backend) -> None:
    data = film(seed=6)
    expected = expected_finding(served, data)
    with served.client() as client:
        nodule = client.post("/predict", params={"task": "nodule"}, files={"file": ("f.png", data)})
        pneumonia = client.post("/predict", files={"file": ("f.png", data)}).raise_for_status().json()
    answer = nodule.raise_for_status().json()
    assert nodule.headers["X-Model-Version"] == "nodule-0.8"
    p = round(expected["probability"], 6)
    assert (answer["prediction"], answer["probabilities"]) == (
        expected["label"],
        {"NO_NODULE": round(1 - p, 6), "NODULE": p},
    )
    assert answer["confidence"] == answer["probabilities"][expected["label"]]
    assert (answer["model_version"], answer["threshold"], answer["locations"]) == (
        "nodule-0.8",
        NODULE_THRESHOLD,
        expected["locations"],
    )
    assert {"processing_time_ms", "timestamp"} <= set(answer)
    assert "locations" not in pneumonia and pneumonia["model_version"] == "test-tiny-1"
    assert set(pneumonia["probabilities"]) == {"NORMAL", "PNEUMONIA"}


def test_predict_batch_with_task_nodule_answers_each_film(served: Backend) -> None:
    films = [film(seed=7), film(seed=8)]
    images = [base64.b64encode(data).decode() for data in films] + ["not base64!"]
    with served.client() as client:
        batch = client.post("/predict/batch", params={"task": "nodule"}, json={"images": images})
        plain = client.post("/predict/batch", json={"images": images[:1]}).raise_for_status().json()
    answers = batch.raise_for_status().json()["predictions"]
    assert [a["locations"] for a in answers[:2]] == [expected_finding(served, data)["locations"] for data in films]
    assert [a["model_version"] for a in answers[:2]] == ["nodule-0.8", "nodule-0.8"]
    assert answers[2]["index"] == 2 and answers[2]["status_code"] == 400
    assert "locations" not in plain["predictions"][0] and plain["predictions"][0]["model_version"] == "test-tiny-1"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/model/info", {}), ("POST", "/predict", {"files": {"file": ("f.png", b"x")}}),
     ("POST", "/predict/batch", {"json": {"images": ["eA=="]}})],
)  # fmt: skip
def test_an_unknown_task_is_refused_with_the_known_tasks(served: Backend, method: str, path: str, body: dict) -> None:
    with served.client() as client:
        answer = client.request(method, path, params={"task": "liver"}, **body)
    assert answer.status_code == 400
    assert answer.json()["detail"] == "Unknown task 'liver'; the known tasks are: nodule, pneumonia."


def test_no_nodule_model_configured_answers_404_and_null_findings(tmp_path: Path, tiny_checkpoint: Path) -> None:
    settings = backend_settings(tmp_path / "var", tiny_checkpoint).model_copy(update={"nodule_model_path": None})
    with workstation(settings) as client:
        info = client.get("/model/info", params={"task": "nodule"})
        case = client.post("/v1/studies", files={"file": ("f.png", film())}).raise_for_status().json()
        ready = client.get("/ready").json()
    assert info.status_code == 404
    assert info.json()["detail"] == (
        "No nodule model is served: none is configured (NODULE_MODEL_PATH is empty, or the default models/nodule.pt "
        "does not exist)."
    )
    assert case["nodule"] is None and "model:nodule" not in ready["checks"]


def test_a_checkpoint_without_a_test_auroc_is_not_served(tmp_path: Path) -> None:
    checkpoint = make_nodule_checkpoint(tmp_path / "n.pt", version="nodule-unmeasured")
    unmeasured = dataclasses.replace(checkpoint, metrics={"val": {"auroc": 0.9}})
    assert nodule_refusal(unmeasured, 0.65) == (
        "its test AUROC (metrics.test.auroc) is missing, so it cannot meet the 0.65 floor (NODULE_MIN_TEST_AUROC) "
        "for model nodule-unmeasured."
    )
    assert nodule_refusal(checkpoint, 0.65) is None and nodule_refusal(checkpoint, 0.85) is not None


def test_one_upload_is_decoded_once_for_both_findings(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodule = make_nodule_checkpoint(tmp_path / "nodule.pt", threshold=NODULE_THRESHOLD)
    settings = backend_settings(tmp_path / "var", tiny_checkpoint).model_copy(
        update={"nodule_model_path": tmp_path / "nodule.pt"}
    )
    calls: Counter[str] = Counter()
    decode, nodule_forward = api.case_media.decode_image, NodulePredictor.forward

    def counted_decode(data: bytes) -> DecodedImage:
        calls["decode"] += 1
        return decode(data)

    def counted_nodule_forward(model: NodulePredictor, pixels: np.ndarray) -> tuple[float, np.ndarray]:
        calls[f"nodule forward {pixels.shape[1]} x {pixels.shape[0]}"] += 1
        return nodule_forward(model, pixels)

    with workstation(settings) as client:  # started (and warmed) before the counting begins
        monkeypatch.setattr(api.case_media, "decode_image", counted_decode)
        monkeypatch.setattr(NodulePredictor, "forward", counted_nodule_forward)
        case = client.post("/v1/studies", files={"file": ("f.png", film(seed=9))}).raise_for_status().json()
    assert calls == {"decode": 1, f"nodule forward {FILM_W} x {FILM_H}": 1}
    assert case["nodule"]["model_version"] == nodule.version
