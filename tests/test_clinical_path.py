"""The clinical path over HTTP, checked for content: the class the threshold gives, the class a heatmap explains, the
similar cases returned, and the words, numbers, flags and signer in each PDF.

The server is the session's SQLite server (tests/conftest.py): the shipped checkpoint, whose decision threshold is
0.189 rather than 0.5, and a library of twelve named Kermany train films. The films below are real Kermany test films
whose calibrated P(PNEUMONIA) under that checkpoint lies between its threshold and 0.5: the threshold calls them
PNEUMONIA, a rule at 0.5 would call them NORMAL. (If the shipped model is retrained, find new ones with
`Predictor.predict` over `test/*/*.jpg` and keep those with threshold < P(PNEUMONIA) < 0.5.)
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from pypdf import PdfReader

from imaging import decode_image, preprocess
from inference import ModelCheckpoint, load_checkpoint
from tests.conftest import LiveApi, ReferenceLibrary
from tests.factories import png_bytes, to_stored

BETWEEN_THRESHOLD_AND_HALF = (  # test split; P(PNEUMONIA) 0.39, 0.36, 0.32, 0.34, 0.42 under the shipped model
    "NORMAL/IM-0030-0001.jpg",
    "PNEUMONIA/person172_bacteria_828.jpg",
    "NORMAL/NORMAL2-IM-0290-0001.jpg",
    "PNEUMONIA/person21_virus_53.jpg",
    "NORMAL/NORMAL2-IM-0249-0001.jpg",
)
CLEARLY_NORMAL = "NORMAL/IM-0001-0001.jpg"  # P(PNEUMONIA) 0.003
CLASSES = ("NORMAL", "PNEUMONIA")


@pytest.fixture(scope="module")
def checkpoint(shipped_model: Path) -> ModelCheckpoint:
    return load_checkpoint(shipped_model)


@pytest.fixture(scope="module")
def radiologist(sqlite_api: LiveApi) -> Iterator[httpx.Client]:
    with sqlite_api.client("radiologist") as http:
        yield http


def study(http: httpx.Client, name: str, payload: bytes, patient: str = '{"name": "Clinical Path"}') -> dict:
    answer = http.post("/v1/studies", files={"file": (name, payload, "application/octet-stream")},
                       data={"patient": patient})  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.json()


def film(kermany_dir: Path, name: str) -> bytes:
    return (kermany_dir / "test" / name).read_bytes()


@pytest.fixture(scope="module")
def between_case(radiologist: httpx.Client, kermany_dir: Path, checkpoint: ModelCheckpoint) -> dict:
    """The first film of BETWEEN_THRESHOLD_AND_HALF that the server scores between the threshold and 0.5."""
    assert checkpoint.threshold < 0.4, "these tests need a checkpoint whose threshold is well below 0.5"
    scores = {}
    for name in BETWEEN_THRESHOLD_AND_HALF:
        case = study(radiologist, Path(name).name, film(kermany_dir, name))
        scores[name] = case["probabilities"]["PNEUMONIA"]
        if checkpoint.threshold < scores[name] < 0.5:
            return {**case, "film": name}
    raise AssertionError(f"no film scored between {checkpoint.threshold:.3f} and 0.5: {scores}")


# --- the decision --------------------------------------------------------------------------------------------------


def test_a_film_between_the_threshold_and_one_half_is_called_by_the_threshold(
    radiologist: httpx.Client, kermany_dir: Path, checkpoint: ModelCheckpoint
) -> None:
    called = {}
    for name in BETWEEN_THRESHOLD_AND_HALF:
        case = study(radiologist, Path(name).name, film(kermany_dir, name))
        positive = case["probabilities"]["PNEUMONIA"]
        assert case["positive_probability"] == pytest.approx(positive, abs=1e-6)
        assert case["threshold"] == pytest.approx(checkpoint.threshold)
        if checkpoint.threshold < positive < 0.5:
            called[name] = (case["prediction"], round(positive, 3))
            assert case["confidence"] == pytest.approx(positive, abs=1e-6)  # the confidence of the called class
            assert case["uncertain"] is True and case["status"] == "queued_for_review"
    assert called, "none of BETWEEN_THRESHOLD_AND_HALF scored between the threshold and 0.5 (model retrained?)"
    assert {name: label for name, (label, _) in called.items()} == dict.fromkeys(called, "PNEUMONIA"), called
    normal = study(radiologist, "normal.jpg", film(kermany_dir, CLEARLY_NORMAL))
    assert normal["prediction"] == "NORMAL" and normal["probabilities"]["PNEUMONIA"] < checkpoint.threshold


def test_the_stateless_predict_route_decides_by_the_same_threshold(
    radiologist: httpx.Client, kermany_dir: Path, between_case: dict, checkpoint: ModelCheckpoint
) -> None:
    answer = radiologist.post("/predict", files={"file": ("film.jpg", film(kermany_dir, between_case["film"]))})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert checkpoint.threshold < body["probabilities"]["PNEUMONIA"] < 0.5
    assert body["prediction"] == "PNEUMONIA" and body["confidence"] == pytest.approx(body["probabilities"]["PNEUMONIA"])


# --- the heatmap ---------------------------------------------------------------------------------------------------


def class_activation_maps(checkpoint: ModelCheckpoint, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Grad-CAM of a global-average-pooled network with a linear head, worked out by hand: the gradient of class
    c's logit with respect to the last feature map is the head's weight row w_c (over H*W), so the map is
    ReLU(sum_k w_ck A_k). Computed here from the checkpoint's weights, independently of inference.explain."""
    model = checkpoint.build_model().eval()
    batch = torch.from_numpy(preprocess(pixels, checkpoint.preprocess)[None])
    with torch.no_grad():
        features = model.forward_features(batch)[0]
    weights = model.get_classifier().weight.detach()
    return {
        name: torch.relu(torch.einsum("k,khw->hw", weights[index], features)).numpy()
        for index, name in enumerate(checkpoint.class_names)
    }


def correlation(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.corrcoef(first.ravel(), second.ravel())[0, 1])


def test_the_heatmap_explains_the_predicted_class(
    radiologist: httpx.Client, kermany_dir: Path, between_case: dict, checkpoint: ModelCheckpoint
) -> None:
    """The film is called PNEUMONIA by the threshold although NORMAL has the larger probability: the heatmap must be
    PNEUMONIA's (neither the other class's nor the arg-max's)."""
    case_id = between_case["case_id"]
    assert between_case["prediction"] == "PNEUMONIA" and between_case["probabilities"]["NORMAL"] > 0.5
    raw = radiologist.get(f"/v1/cases/{case_id}/heatmap", params={"format": "raw"})
    assert raw.status_code == 200, raw.text
    served = np.asarray(Image.open(io.BytesIO(raw.content)), dtype=np.float32)
    maps = class_activation_maps(checkpoint, decode_image(film(kermany_dir, between_case["film"])).pixels)
    grid = maps["PNEUMONIA"].shape
    shrunk = np.asarray(Image.fromarray(served).resize(grid[::-1], Image.Resampling.BOX))
    agreement = {name: correlation(shrunk, values) for name, values in maps.items()}
    assert agreement["PNEUMONIA"] > 0.5 and agreement["NORMAL"] < 0.0, agreement


# --- similar cases -------------------------------------------------------------------------------------------------


def test_similar_cases_come_back_exactly_k_ordered_with_labels(
    radiologist: httpx.Client, reference_library: ReferenceLibrary
) -> None:
    path, label = next(iter(reference_library.films.items()))  # a film the library holds
    case_id = study(radiologist, Path(path).name, Path(path).read_bytes())["case_id"]
    for k in (1, 3, 7, len(reference_library)):
        answer = radiologist.get(f"/v1/cases/{case_id}/similar", params={"k": k})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        neighbours = body["neighbours"]
        assert body["k"] == k and len(neighbours) == k
        assert [n["rank"] for n in neighbours] == list(range(1, k + 1))
        similarities = [n["similarity"] for n in neighbours]
        assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1.0001 for s in similarities)
        assert neighbours[0]["similarity"] > 0.999 and neighbours[0]["label"] == label  # the film finds itself
        assert all(n["label"] in CLASSES for n in neighbours)
    labels = Counter(n["label"] for n in neighbours)  # the whole library: six films of each class
    assert labels == Counter(reference_library.films.values()) == {"NORMAL": 6, "PNEUMONIA": 6}
    more = radiologist.get(f"/v1/cases/{case_id}/similar", params={"k": len(reference_library) + 5}).json()
    assert len(more["neighbours"]) == len(reference_library)  # never more than the library holds
    thumbnail = radiologist.get(neighbours[0]["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\x89PNG")
    assert radiologist.get(f"/v1/cases/{case_id}/similar", params={"k": 0}).status_code == 422


# --- the PDFs ------------------------------------------------------------------------------------------------------


def pdf_text(http: httpx.Client, case_id: str, kind: str) -> str:
    """The report's text as pypdf reads it, with all whitespace removed (extraction breaks lines anywhere)."""
    answer = http.get(f"/v1/cases/{case_id}/report", params={"kind": kind})
    assert answer.status_code == 200 and answer.content.startswith(b"%PDF"), answer.text[:200]
    text = "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(answer.content)).pages)
    return re.sub(r"\s+", "", text)


def words(text: str) -> str:
    return re.sub(r"\s+", "", text)


def percent(probability: float) -> str:
    return f"{probability * 100:.0f}%"


def stamp(iso: str) -> str:
    """The sign-off time as the reports print it: minutes, in UTC."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")


def inverted_film(kermany_dir: Path) -> bytes:
    """A real film with its grey scale turned over: the input gate must call it out of distribution."""
    pixels = decode_image(film(kermany_dir, CLEARLY_NORMAL)).pixels
    return png_bytes(to_stored(1.0 - pixels))


def test_reports_carry_finding_probability_and_the_uncertain_flag(
    radiologist: httpx.Client, between_case: dict
) -> None:
    case_id, positive = between_case["case_id"], between_case["probabilities"]["PNEUMONIA"]
    radiologist_pdf = pdf_text(radiologist, case_id, "radiologist")
    assert words("AI finding: Pneumonia") in radiologist_pdf
    assert words(f"Calibrated confidence {percent(positive)}") in radiologist_pdf
    assert percent(between_case["probabilities"]["NORMAL"]) in radiologist_pdf  # the per-class table
    assert "UNCERTAIN" in radiologist_pdf and "OUTOFDISTRIBUTION" not in radiologist_pdf
    assert words("Not signed") in radiologist_pdf
    clinical = pdf_text(radiologist, case_id, "clinical")
    assert words("Findings suggestive of pneumonia.") in clinical
    assert words(f"Confidence: Uncertain. The AI flagged this result as uncertain (estimated probability "
                 f"{percent(positive)})") in clinical  # fmt: skip
    patient = pdf_text(radiologist, case_id, "patient")
    assert words("The computer program found signs on your X-ray that can be seen with pneumonia") in patient
    assert words("The computer program was not sure about your X-ray.") in patient


def test_reports_carry_the_out_of_distribution_flag(radiologist: httpx.Client, kermany_dir: Path) -> None:
    case = study(radiologist, "inverted.png", inverted_film(kermany_dir))
    assert case["ood"] is True and "inverted" in case["ood_reason"], case
    radiologist_pdf = pdf_text(radiologist, case["case_id"], "radiologist")
    assert words("OUT OF DISTRIBUTION: polarity looks inverted") in radiologist_pdf
    assert words(f"AI finding: {case['prediction'].capitalize()}") in radiologist_pdf
    assert words(f"Calibrated confidence {percent(case['confidence'])}") in radiologist_pdf
    clinical = pdf_text(radiologist, case["case_id"], "clinical")
    assert words("Unusual image: it differs from the images the AI was trained on: polarity looks inverted") in clinical
    assert words("the image is unlike the AI's training images") in clinical
    assert words("The computer program was not sure about your X-ray.") in pdf_text(
        radiologist, case["case_id"], "patient"
    )


def test_reports_after_sign_off_carry_the_signer_and_the_time(
    radiologist: httpx.Client, sqlite_api: LiveApi, kermany_dir: Path
) -> None:
    case_id = study(radiologist, "normal.jpg", film(kermany_dir, CLEARLY_NORMAL))["case_id"]
    assert words("Not signed") in pdf_text(radiologist, case_id, "radiologist")
    signed = radiologist.post(f"/v1/cases/{case_id}/sign")
    assert signed.status_code == 200, signed.text
    signer, when = sqlite_api.accounts["radiologist"].username, stamp(signed.json()["signed_at"])
    assert signed.json()["signed_by"] == signer
    assert words(f"Electronically signed by {signer} on {when}.") in pdf_text(radiologist, case_id, "radiologist")
    assert words(f"Reviewed and signed by {signer} on {when}.") in pdf_text(radiologist, case_id, "clinical")
    patient = pdf_text(radiologist, case_id, "patient")
    assert words(f"Checked by {signer} on {when}.") in patient
    assert (
        words(
            "The computer program did not find the kind of shadow on your X-ray that pneumonia (an infection of the "
            "lungs) can cause. It does not look for other illnesses."
        )
        in patient
    )
