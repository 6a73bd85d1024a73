"""One study's work is done once (issue 12): one click decodes the upload once and runs one classification forward
pass; on a fresh process (empty caches) a report or a similar-case request runs no classification forward at all.

The app runs in-process here (FastAPI's TestClient) so the test can count calls into the decoder and the model.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from fastapi.testclient import TestClient

import api.case_media
import api.routers.media
import imaging
from case_retrieval import build_reference_library
from inference import Predictor, load_checkpoint
from settings import Settings
from tests.conftest import make_tiny_checkpoint
from tests.factories import dicom_bytes, png_bytes, synthetic_radiograph, to_stored
from tests.in_process import backend_settings, workstation


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("study-path")
    checkpoint = make_tiny_checkpoint(root / "tiny.pt", version="path-tiny")
    reference = root / "reference"
    for index in range(6):
        label = "NORMAL" if index % 2 else "PNEUMONIA"
        folder = reference / "train" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"ref{index}.png").write_bytes(png_bytes(to_stored(synthetic_radiograph(seed=100 + index))))
    predictor = Predictor(load_checkpoint(checkpoint), threads=1, cache_size=1)
    build_reference_library(reference, "train", predictor, root / "var" / "retrieval", progress=False)
    return backend_settings(root / "var", checkpoint)


class Counts:
    """Calls into the upload decoder and into the classification forward pass while the test runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        decode, forward = imaging.decode_image, Predictor._forward

        def counted_decode(*args, **kwargs):
            self.calls["decode"] += 1
            return decode(*args, **kwargs)

        def counted_forward(predictor, batch):
            self.calls["forward"] += 1
            return forward(predictor, batch)

        monkeypatch.setattr(api.case_media, "decode_image", counted_decode)
        monkeypatch.setattr(Predictor, "_forward", counted_forward)

    def reset(self) -> None:
        self.calls.clear()


def click(client: TestClient, name: str, data: bytes) -> dict:
    """What the UI sends for one study: inspect on upload, then the study by upload_id, then the result views."""
    inspected = client.post("/v1/dicom/inspect", files={"file": (name, data)}).raise_for_status().json()
    patient = json.dumps({"name": "Ada Path", "age": 41})
    study = client.post("/v1/studies", data={"upload_id": inspected["upload_id"], "patient": patient})
    case = study.raise_for_status().json()
    case_id = case["case_id"]
    assert client.get(f"/v1/cases/{case_id}/image").status_code == 200
    assert client.get(f"/v1/cases/{case_id}/heatmap", params={"format": "raw"}).status_code == 200
    similar = client.get(f"/v1/cases/{case_id}/similar", params={"k": 3}).raise_for_status().json()
    assert len(similar["neighbours"]) == 3
    return case


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_one_click_decodes_once_and_runs_one_forward(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    pixels = synthetic_radiograph(seed=7)
    data = png_bytes(to_stored(pixels)) if kind == "png" else dicom_bytes(to_stored(pixels, bits=12), bits_stored=12)
    with workstation(settings) as client:
        counts = Counts(monkeypatch)
        case = click(client, f"film.{kind}", data)
        assert counts.calls == {"decode": 1, "forward": 1}
        assert case["patient"]["name"] == "Ada Path"


def test_report_and_similar_on_a_fresh_process_run_no_forward(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with workstation(settings) as client:
        case = click(client, "film.png", png_bytes(to_stored(synthetic_radiograph(seed=8))))
        first = client.get(f"/v1/cases/{case['case_id']}/similar", params={"k": 4}).json()
    with workstation(settings) as client:  # a second replica, or the same one after a restart
        counts = Counts(monkeypatch)
        again = client.get(f"/v1/cases/{case['case_id']}/similar", params={"k": 4}).raise_for_status().json()
        report = client.get(f"/v1/cases/{case['case_id']}/report", params={"kind": "radiologist"})
        assert report.status_code == 200 and report.content.startswith(b"%PDF")
        assert counts.calls == {}  # no decode of the original, no classification forward
    assert [n["ref_id"] for n in again["neighbours"]] == [n["ref_id"] for n in first["neighbours"]]


def test_study_names_an_upload_it_does_not_hold(settings: Settings) -> None:
    with workstation(settings) as client:
        unknown = client.post("/v1/studies", data={"upload_id": "ab" * 32})
        assert unknown.status_code == 409
        assert "send the file itself" in unknown.json()["detail"]
        neither = client.post("/v1/studies", data={"patient": "{}"})
        assert neither.status_code == 422
        assert neither.json()["detail"] == "Send either the image `file` or the `upload_id` of an inspected one."
        malformed = client.post("/v1/studies", data={"upload_id": "../../etc/passwd"})
        assert malformed.status_code == 422 and "upload_id" in malformed.json()["detail"]


def test_an_expired_upload_falls_back_to_the_file_in_the_ui_client(settings: Settings) -> None:
    from ui.client import BackendClient

    data = png_bytes(to_stored(synthetic_radiograph(seed=9)))
    with workstation(settings) as client:
        backend = BackendClient(str(client.base_url), client.headers["Authorization"].split()[1], http=client)
        case = backend.create_study("film.png", data, {"name": "Late Upload"}, upload_id="cd" * 32)
        assert case["patient"]["name"] == "Late Upload"
