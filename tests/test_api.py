"""HTTP tests of the backbone API against a real uvicorn process (tests/live_server.py) serving the shipped model,
each run twice: with SQLite on disk and with PostgreSQL (`client` and friends, tests/conftest.py)."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, RLELossless

from inference import ModelCheckpoint, load_checkpoint
from tests.conftest import LiveApi, make_tiny_checkpoint, server_env, started_api
from tests.factories import dicom_bytes, jpeg_bytes, png_bytes, synthetic_radiograph, tiff_bytes, to_stored

PREDICTION_FIELDS = {"prediction", "confidence", "probabilities", "processing_time_ms", "model_version", "timestamp"}


def radiograph(seed: int = 0, size: int = 256) -> np.ndarray:
    return synthetic_radiograph(size, size, seed=seed)


def post_file(client: httpx.Client, path: str, name: str, payload: bytes, **kwargs: object) -> httpx.Response:
    return client.post(path, files={"file": (name, payload, "application/octet-stream")}, **kwargs)


def assert_prediction(body: dict) -> None:
    assert set(body) >= PREDICTION_FIELDS
    assert set(body["probabilities"]) == {"NORMAL", "PNEUMONIA"}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["prediction"] in body["probabilities"]
    assert body["confidence"] == pytest.approx(body["probabilities"][body["prediction"]], abs=1e-6)


@pytest.fixture(scope="module")
def checkpoint(shipped_model) -> ModelCheckpoint:
    return load_checkpoint(shipped_model)


def test_health_ready_and_model_info(client: httpx.Client, live_api: LiveApi, checkpoint: ModelCheckpoint) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert health["model_version"] == checkpoint.version and health["uptime_s"] >= 0
    ready = client.get("/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert {"database", "model", "image_store"} <= set(checks)
    assert checks["database"]["ok"] is True and checks["database"]["detail"] == live_api.database
    info = client.get("/model/info").json()
    assert info["architecture"] == "resnet18" and info["classes"] == ["NORMAL", "PNEUMONIA"]
    assert info["input_size"] == 192 and info["threshold"] == pytest.approx(checkpoint.threshold)
    assert info["threshold"] < 0.3  # the shipped operating point, not 0.5


def test_openapi_documents_every_endpoint(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/health",
        "/ready",
        "/model/info",
        "/predict",
        "/predict/batch",
        "/v1/studies",
        "/v1/cases",
        "/v1/cases/{case_id}",
    ):
        assert path in paths, path
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "name, payload",
    [
        ("x.png", png_bytes(to_stored(radiograph(1)))),
        ("x.jpg", jpeg_bytes(to_stored(radiograph(2)))),
        ("x.tif", tiff_bytes(to_stored(radiograph(3)))),
        ("x16.tif", tiff_bytes(to_stored(radiograph(4), bits=16))),
        ("x16.png", png_bytes(to_stored(radiograph(5), bits=16))),
        ("x.dcm", dicom_bytes(to_stored(radiograph(6), bits=16), bits_stored=12)),
        ("m1.dcm", dicom_bytes(to_stored(radiograph(7)), photometric="MONOCHROME1")),
        ("jpeg.dcm", dicom_bytes(to_stored(radiograph(8)), transfer_syntax=JPEGBaseline8Bit)),
        ("jpegls.dcm", dicom_bytes(to_stored(radiograph(9), bits=16), transfer_syntax=JPEGLosslessSV1)),
        ("j2k.dcm", dicom_bytes(to_stored(radiograph(10), bits=16), transfer_syntax=JPEG2000Lossless)),
        ("rle.dcm", dicom_bytes(to_stored(radiograph(11), bits=16), transfer_syntax=RLELossless)),
    ],
)
def test_predict_every_supported_format(client: httpx.Client, name: str, payload: bytes) -> None:
    response = post_file(client, "/predict", name, payload)
    assert response.status_code == 200, response.text
    assert_prediction(response.json())


def test_same_image_is_answered_from_cache(client: httpx.Client) -> None:
    payload = png_bytes(to_stored(radiograph(42)))
    first = post_file(client, "/predict", "a.png", payload).json()
    second = post_file(client, "/predict", "b.png", payload).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["probabilities"] == first["probabilities"]


@pytest.mark.parametrize(
    "payload, status, phrase",
    [
        (b"", 400, "empty"),
        (b"just some text, not an image" * 10, 415, "Supported formats"),
        (png_bytes(to_stored(radiograph(12)))[:400], 422, ""),
        (jpeg_bytes(to_stored(radiograph(13)))[:300], 422, ""),
        (png_bytes(to_stored(radiograph(14, size=32))), 422, "px"),
        (dicom_bytes(to_stored(radiograph(15)), modality="CT"), 422, "CT"),
        (dicom_bytes(np.stack([to_stored(radiograph(16))] * 3)), 422, "frames"),
        (dicom_bytes(None), 422, "pixel data"),
    ],
    ids=["empty", "not-image", "truncated-png", "truncated-jpeg", "too-small", "ct", "multi-frame", "no-pixels"],
)
def test_bad_input_answers_clear_4xx(client: httpx.Client, payload: bytes, status: int, phrase: str) -> None:
    for path in ("/predict", "/v1/studies"):
        response = post_file(client, path, "bad.bin", payload)
        assert response.status_code == status, (path, response.text)
        assert phrase.lower() in response.json()["detail"].lower()


def test_upload_over_limit_is_413(client: httpx.Client) -> None:
    payload = b"\x89PNG\r\n\x1a\n" + bytes(3 * 1024 * 1024)  # MAX_UPLOAD_MB=2 in the test server
    response = post_file(client, "/predict", "big.png", payload)
    assert response.status_code == 413 and "MAX_UPLOAD_MB" in response.json()["detail"]


def test_missing_file_field_is_422(client: httpx.Client) -> None:
    response = client.post("/predict", data={"nothing": "here"})
    assert response.status_code == 422 and "file" in response.json()["detail"]


def test_batch_mixes_predictions_and_per_item_errors(client: httpx.Client) -> None:
    good = base64.b64encode(png_bytes(to_stored(radiograph(20)))).decode()
    images = [good, "%%% not base64 %%%", base64.b64encode(b"hello").decode(), good]
    body = client.post("/predict/batch", json={"images": images}).json()
    assert body["batch_size"] == 4
    first, invalid, unsupported, last = body["predictions"]
    assert_prediction(first)
    assert_prediction(last)
    assert invalid["status_code"] == 400 and invalid["index"] == 1
    assert unsupported["status_code"] == 415 and unsupported["index"] == 2


def test_batch_limits(client: httpx.Client) -> None:
    good = base64.b64encode(png_bytes(to_stored(radiograph(21)))).decode()
    too_many = client.post("/predict/batch", json={"images": [good] * 5})  # BATCH_MAX=4
    assert too_many.status_code == 413 and "BATCH_MAX" in too_many.json()["detail"]
    assert client.post("/predict/batch", json={"images": []}).status_code == 422
    assert (
        client.post("/predict/batch", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 422
    )


def create_study(client: httpx.Client, payload: bytes, patient: dict | None = None, name: str = "x.png") -> dict:
    data = {"patient": json.dumps(patient)} if patient is not None else {}
    response = client.post("/v1/studies", files={"file": (name, payload, "application/octet-stream")}, data=data)
    assert response.status_code == 201, response.text
    return response.json()


def test_study_creates_a_case_that_can_be_read_back(client: httpx.Client) -> None:
    patient = {
        "patient_id": "MRN-API-1",
        "name": "Zoë Ångström",
        "age": 5,
        "sex": "F",
        "clinical_history": "Cough and fever for three days.",
    }
    created = create_study(client, png_bytes(to_stored(radiograph(30))), patient)
    assert_prediction({**created, "timestamp": created["created_at"]})
    assert created["patient"]["name"] == "Zoë Ångström"
    needs_review = created["uncertain"] or created["ood"]
    assert created["status"] == ("queued_for_review" if needs_review else "analyzed")
    fetched = client.get(f"/v1/cases/{created['case_id']}").json()
    assert fetched["case_id"] == created["case_id"] and fetched["probabilities"] == created["probabilities"]
    assert fetched["patient"] == created["patient"] and fetched["study"]["format"] == "PNG"


def test_dicom_tags_fill_patient_fields_the_form_left_empty(client: httpx.Client) -> None:
    payload = dicom_bytes(to_stored(radiograph(31)))
    created = create_study(client, payload, {"clinical_history": "Follow-up."}, name="study.dcm")
    assert created["patient"]["patient_id"] == "CXR-TEST-0001"
    assert created["patient"]["name"] == "Doe Jane" and created["patient"]["age"] == 34
    assert created["study"]["Modality"] == "DX" and created["study"]["ViewPosition"] == "PA"
    form_wins = create_study(client, payload, {"patient_id": "FORM-ID"}, name="study.dcm")
    assert form_wins["patient"]["patient_id"] == "FORM-ID"


@pytest.mark.parametrize(
    "patient, phrase",
    [
        ("{broken", "not valid JSON"),
        (json.dumps({"age": -3}), "age"),
        (json.dumps({"sex": "X"}), "sex"),
        (json.dumps({"unknown": 1}), "unknown"),
    ],
)
def test_invalid_patient_is_422(client: httpx.Client, patient: str, phrase: str) -> None:
    response = client.post(
        "/v1/studies", files={"file": ("x.png", png_bytes(to_stored(radiograph(32))))}, data={"patient": patient}
    )
    assert response.status_code == 422 and phrase in response.json()["detail"]


def test_case_listing_filters_and_paginates(client: httpx.Client) -> None:
    ids = [
        create_study(client, png_bytes(to_stored(radiograph(40 + i))), {"patient_id": "MRN-LIST"})["case_id"]
        for i in range(3)
    ]
    page = client.get("/v1/cases", params={"patient_id": "MRN-LIST", "limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["items"][0]["case_id"] == ids[-1]
    rest = client.get("/v1/cases", params={"patient_id": "MRN-LIST", "limit": 2, "offset": 2}).json()
    assert [item["case_id"] for item in rest["items"]] == [ids[0]]
    label = page["items"][0]["prediction"]
    by_label = client.get("/v1/cases", params={"patient_id": "MRN-LIST", "prediction": label}).json()
    assert all(item["prediction"] == label for item in by_label["items"]) and by_label["total"] >= 1
    today = page["items"][0]["created_at"][:10]
    dated = client.get("/v1/cases", params={"patient_id": "MRN-LIST", "date_from": today, "date_to": today}).json()
    assert dated["total"] == 3
    assert client.get("/v1/cases", params={"date_from": "2030-01-02", "date_to": "2030-01-01"}).status_code == 422
    assert client.get("/v1/cases", params={"limit": 0}).status_code == 422


def test_unknown_case_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/cases/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404 and "no case" in response.json()["detail"].lower()


def test_case_image_heatmap_and_inspect(client: httpx.Client) -> None:
    case_id = create_study(client, png_bytes(to_stored(radiograph(50))))["case_id"]
    image = client.get(f"/v1/cases/{case_id}/image")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    overlay = client.get(f"/v1/cases/{case_id}/heatmap", params={"alpha": 0.6, "colormap": "inferno"})
    assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG")
    assert overlay.headers["x-model-version"] == client.get("/health").json()["model_version"]
    raw = client.get(f"/v1/cases/{case_id}/heatmap", params={"format": "raw"})
    decoded = Image.open(io.BytesIO(raw.content))
    assert decoded.mode.startswith("I") and decoded.size == (256, 256)  # 16-bit, the original image's size
    assert client.get(f"/v1/cases/{case_id}/heatmap", params={"alpha": 2}).status_code == 422
    bad_colormap = client.get(f"/v1/cases/{case_id}/heatmap", params={"colormap": "rainbow-unicorn"})
    assert bad_colormap.status_code == 422 and "colormap" in bad_colormap.json()["detail"].lower()
    tags = post_file(client, "/v1/dicom/inspect", "s.dcm", dicom_bytes(to_stored(radiograph(51)))).json()
    assert tags["format"] == "DICOM" and tags["metadata"]["PatientID"] == "CXR-TEST-0001"
    assert base64.b64decode(tags["preview_png_base64"]).startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def library_less_api(tmp_path_factory: pytest.TempPathFactory):
    """A server that has no similar-case library (a tiny model, so it starts in seconds)."""
    root = tmp_path_factory.mktemp("no-library")
    env = server_env(root / "var", make_tiny_checkpoint(root / "tiny.pt"), library=None)
    with started_api(env, "sqlite") as api:
        yield api


def test_similar_cases_without_a_library_says_how_to_build_it(library_less_api: LiveApi) -> None:
    with library_less_api.client("radiologist") as http:
        case_id = create_study(http, png_bytes(to_stored(radiograph(52))))["case_id"]
        response = http.get(f"/v1/cases/{case_id}/similar", params={"k": 3})
    assert response.status_code == 503 and "case_retrieval build" in response.json()["detail"]


@pytest.mark.parametrize("kind", ["radiologist", "clinical", "patient"])
def test_reports_are_pdfs_named_for_download(client: httpx.Client, kind: str) -> None:
    case_id = create_study(client, png_bytes(to_stored(radiograph(53))), {"name": "Ada Report"})["case_id"]
    response = client.get(f"/v1/cases/{case_id}/report", params={"kind": kind})
    assert response.status_code == 200 and response.content.startswith(b"%PDF")
    disposition = response.headers["content-disposition"]
    assert f"cxr-{kind}-report_{case_id}" in disposition and "Ada" not in disposition


def test_unknown_report_kind_is_422(client: httpx.Client) -> None:
    case_id = create_study(client, png_bytes(to_stored(radiograph(54))))["case_id"]
    assert client.get(f"/v1/cases/{case_id}/report", params={"kind": "poem"}).status_code == 422


def test_review_then_sign_and_signed_case_is_final(client: httpx.Client) -> None:
    case_id = create_study(client, png_bytes(to_stored(radiograph(55))))["case_id"]
    reviewed = client.post(f"/v1/cases/{case_id}/review", json={"reason": "Subtle opacity, please double-read."})
    assert reviewed.status_code == 200 and reviewed.json()["status"] == "queued_for_review"
    assert client.post(f"/v1/cases/{case_id}/review", json={"reason": ""}).status_code == 422
    signed = client.post(f"/v1/cases/{case_id}/sign").json()
    assert signed["status"] == "signed" and signed["signed_by"] and signed["signed_at"]
    again = client.post(f"/v1/cases/{case_id}/sign")
    assert again.status_code == 409
    report = client.get(f"/v1/cases/{case_id}/report", params={"kind": "clinical"})
    assert report.status_code == 200


def test_system_stats_reports_machine_and_process(client: httpx.Client) -> None:
    stats = client.get("/v1/system/stats").json()
    assert 0 <= stats["cpu_percent"] <= 100 and 0 < stats["memory_percent"] < 100 and 0 < stats["disk_percent"] < 100
    assert stats["cpu_count"] >= 1 and stats["process_rss_mb"] > 10 and stats["process_uptime_s"] >= 0
