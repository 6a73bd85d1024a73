"""The workstation UI: page logic with streamlit's AppTest against the real backend, plus the UI's pure helpers.

The backend runs as a real uvicorn process on the shipped checkpoint (threshold 0.189, tests/ui_backend.py); every
route the pages use must be there (a missing one fails the test). The finding and the probabilities the page shows
are compared with what the API returned for the case.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from settings import get_settings
from tests.factories import DEFAULT_PATIENT_TAGS, dicom_bytes, synthetic_radiograph, to_stored
from tests.live_server import ROOT, free_port, running_api
from tests.test_clinical_path import BETWEEN_THRESHOLD_AND_HALF
from tests.ui_backend import UI_ADMIN, backend_env
from ui.case_data import load_artifacts
from ui.client import BackendClient, BackendError, detail_of
from ui.formatting import (
    dicom_age_years,
    dicom_person_name,
    finding_text,
    patient_from_tags,
    patient_payload,
    result_notices,
    review_notes,
    split_description,
    split_metrics,
)
from ui.imagery import blend_heatmap, decode_heatmap, grayscale_display
from ui.registry import PAGES, PageSpec, pages_for
from ui.session import ADMIN, ANNOTATOR, IDENTITY_KEY, RADIOLOGIST, SIGNED_OUT, Identity

APP = str(ROOT / "app.py")
RUN_TIMEOUT_S = 60  # one AppTest run may include a model forward pass and Grad-CAM on a busy 2-core machine


# --- the backend the pages talk to -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("ui-backend")
    env = backend_env(workdir / "var", shipped_model)
    with running_api(env) as url:
        yield {**env, "url": url, "auth": "1"}


@pytest.fixture
def ui_settings(backend: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Point the UI's settings at the test backend for the in-process AppTest runs."""
    monkeypatch.setenv("BACKEND_URL", backend["url"])
    get_settings.cache_clear()
    yield backend
    get_settings.cache_clear()


def started_app(backend: dict[str, str]) -> AppTest:
    """The app after its first run, logged in when the backend has accounts (as its first admin)."""
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    assert not at.exception, at.exception
    if backend["auth"]:  # the backend always has accounts now; kept for the login page test
        at.text_input[0].input(UI_ADMIN)
        at.text_input[1].input(backend["ADMIN_PASSWORD"])
        at.button[0].click().run()
        assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    parts = [el.value for kind in ("markdown", "caption", "title", "subheader", "error", "warning", "info", "success")
             for el in getattr(at, kind)]  # fmt: skip
    return "\n".join(str(p) for p in parts)


def kermany_jpeg(kermany_dir: Path, label: str = "PNEUMONIA") -> Path:
    return sorted((kermany_dir / "test" / label).glob("*.jpg"))[0]


# --- pure helpers ------------------------------------------------------------------------------------------------


def test_patient_prefill_from_dicom_tags() -> None:
    values = patient_from_tags(DEFAULT_PATIENT_TAGS)
    assert values == {"patient_id": "CXR-TEST-0001", "name": "Doe, Jane", "age": 34, "sex": "F"}
    assert patient_from_tags({"PatientBirthDate": "20000301", "StudyDate": "20240229"})["age"] == 23
    assert patient_from_tags({"PatientSex": "X", "PatientName": ""}) == {}


@pytest.mark.parametrize(
    ("value", "years"), [("045Y", 45), ("006M", 0), ("030M", 2), ("104W", 1), ("400D", 1), (" 7 ", 7), ("abc", None)]
)
def test_dicom_age(value: str, years: int | None) -> None:
    assert dicom_age_years(value) == years


def test_person_name_and_payload() -> None:
    assert dicom_person_name("Müller^Anna^Maria") == "Müller, Anna Maria"
    assert dicom_person_name("Plain Name") == "Plain Name"
    form = {"patient_id": " P1 ", "name": "", "age": 0, "sex": "", "clinical_history": None}
    assert patient_payload(form) == {"patient_id": "P1", "age": 0}  # age 0 is a real age, blanks are dropped


def test_flags_are_explained_in_words() -> None:
    ood = {"prediction": "PNEUMONIA", "ood": True, "ood_reason": "inverted polarity", "uncertain": True}
    assert finding_text(ood) == "No reliable finding"
    notices = result_notices(ood)
    assert [n.severity for n in notices] == ["error"]  # OOD outranks and replaces the uncertainty note
    assert "inverted polarity" in notices[0].text
    unsure = {"prediction": "NORMAL", "uncertain": True, "confidence": 0.61,
              "probabilities": {"NORMAL": 0.61, "PNEUMONIA": 0.39},
              "quality_warnings": [{"code": "low_contrast", "message": "Low contrast."}]}  # fmt: skip
    assert finding_text(unsure) == "No pneumonia-like opacity found"  # never "normal" (issue 22)
    assert finding_text({**unsure, "prediction": "PNEUMONIA"}) == "PNEUMONIA"
    assert [n.severity for n in result_notices(unsure)] == ["warning", "info"]
    assert "61%" in result_notices(unsure)[0].text and "spread" not in result_notices(unsure)[0].text
    spread = {**unsure, "uncertainty": {"entropy": 0.9, "std": 0.12, "method": "mc_dropout"}}
    assert "±12%" in result_notices(spread)[0].text


def test_outside_the_validated_populations_is_explained() -> None:
    case = {"prediction": "PNEUMONIA", "probabilities": {"NORMAL": 0.2, "PNEUMONIA": 0.8}, "uncertain": True,
            "scope": "outside_validated", "scope_reason": "age 10 years is outside the validated ages"}  # fmt: skip
    notices = result_notices(case)
    assert notices[0].title == "Outside the validated populations"
    assert notices[0].text.startswith("Age 10 years is outside the validated ages. The model is validated on")
    assert finding_text(case) == "PNEUMONIA"


def test_review_requests_are_not_image_warnings() -> None:
    case = {"prediction": "NORMAL", "quality_warnings": [
        {"code": "review_requested", "message": "Sent for expert review by dr: check the apex"},
        {"code": "low_resolution", "message": "The image is small."}]}  # fmt: skip
    assert [n.text for n in result_notices(case)] == ["The image is small."]
    case["quality_warnings"].append({"code": "low_contrast", "message": "Very low contrast."})
    (notice,) = result_notices(case)  # several image warnings share one box, as a list
    assert notice.text == "\n- The image is small.\n\n- Very low contrast."
    assert review_notes(case) == ["Sent for expert review by dr: check the apex"]


def test_model_card_metrics_flat_and_nested() -> None:
    flat = {"accuracy": 0.97318, "auroc": 0.99816, "threshold": 0.19}
    nested = {
        "metrics": {"accuracy": 0.875, "auroc": 0.9595},
        "intervals": {"auroc": [0.9423, 0.9766]},
        "n_images": 624,
        "dataset": "kermany-pneumonia",
        "threshold": 0.189,
        "evaluated_at": "2026-11-30T00:04:49Z",
    }
    assert split_metrics(flat) == {"auroc": "0.998", "accuracy": "0.973"}  # the threshold is not a metric
    assert split_metrics(nested) == {"auroc": "0.960 (0.942–0.977)", "accuracy": "0.875"}
    assert split_description("test", nested) == (
        "test: kermany-pneumonia, 624 images, at threshold 0.189, evaluated 2026-11-30 00:04"
    )


def test_heatmap_blending_follows_opacity() -> None:
    raw = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(raw).save(buffer, format="PNG")
    heatmap = decode_heatmap(buffer.getvalue())
    assert heatmap.dtype == np.float32 and heatmap.min() == 0.0 and heatmap.max() == 1.0
    gray = np.full((128, 96), 100, dtype=np.uint8)
    assert np.array_equal(blend_heatmap(gray, heatmap, 0.0)[..., 0], gray)
    full = blend_heatmap(gray, heatmap, 1.0)
    assert full.shape == (128, 96, 3)
    assert full[-1, -1, 0] > 100 > full[0, 0, 0]  # jet: hot (red) where the map is high, blue where it is low


def test_display_images_are_bounded() -> None:
    big = Image.fromarray(to_stored(synthetic_radiograph(1500, 1200), bits=16))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    shown = grayscale_display(buffer.getvalue(), max_side=720)
    assert shown.dtype == np.uint8 and max(shown.shape) == 720 and shown.max() > 200


# --- the HTTP client's handling of backend answers --------------------------------------------------------------


def answering(handler: Any) -> BackendClient:
    return BackendClient("http://backend.test", token="tok", http=httpx.Client(transport=httpx.MockTransport(handler)))


def test_client_sends_token_and_maps_errors() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/cases/missing":
            return httpx.Response(404, json={"detail": "Case missing not found."})
        if request.url.path == "/v1/system/stats":
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(422, json={"detail": [{"loc": ["body", "file"], "msg": "Field required"}]})

    client = answering(handler)
    with pytest.raises(BackendError) as missing_case:
        client.get_case("missing")
    assert missing_case.value.message == "Case missing not found." and not missing_case.value.route_missing
    with pytest.raises(BackendError) as missing_route:
        client.system_stats()
    assert missing_route.value.route_missing
    with pytest.raises(BackendError, match="Field required"):
        client.create_study("x.png", b"123", {"patient_id": "P"})
    assert all(r.headers["authorization"] == "Bearer tok" for r in seen)
    assert b'name="patient"' in seen[-1].content and b'{"patient_id": "P"}' in seen[-1].content  # a form field


def test_client_keeps_the_token_on_the_backend_host() -> None:
    client = answering(lambda request: httpx.Response(200, content=b"png"))
    assert client.get_bytes("/v1/reference/7/thumbnail") == b"png"
    assert client.get_bytes("http://backend.test/v1/reference/7/thumbnail") == b"png"
    with pytest.raises(BackendError, match="not on the backend"):
        client.get_bytes("https://elsewhere.example/steal")


def png_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_case_view_data_degrades_per_feature() -> None:
    """An older backend: image yes, heatmap route missing, similar refused; each part says why on its own."""
    picture = png_of(np.full((300, 240), 128, dtype=np.uint8))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/image"):
            return httpx.Response(200, content=picture, headers={"content-type": "image/png"})
        if request.url.path.endswith("/heatmap"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(503, json={"detail": "Similar cases unavailable: no library has been built yet."})

    artifacts = load_artifacts(answering(handler), {"case_id": "c1"})
    assert artifacts.image is not None and artifacts.image.shape == (300, 240)
    assert artifacts.heatmap is None and "not available on this backend yet" in artifacts.notes["heatmap"]
    assert artifacts.neighbours is None
    assert artifacts.notes["similar"] == "Similar cases unavailable: no library has been built yet."


def test_gallery_tiles_keep_their_labels_without_thumbnails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/similar"):
            neighbours = [
                {"similarity": 0.93, "label": "PNEUMONIA", "ref_id": "r1", "dataset": "kermany-pneumonia",
                 "thumbnail_url": "/v1/reference/r1/thumbnail"},
                {"similarity": 0.88, "label": "NORMAL", "ref_id": "r2", "case_id": "abcdef123456",
                 "thumbnail_url": "https://elsewhere.example/r2.png"},
            ]  # fmt: skip
            return httpx.Response(200, json={"case_id": "c1", "model_version": "v", "neighbours": neighbours})
        if request.url.path.endswith("/thumbnail"):
            return httpx.Response(200, content=b"thumb")
        return httpx.Response(404, json={"detail": "Not Found"})

    neighbours = load_artifacts(answering(handler), {"case_id": "c1"}).neighbours
    assert [(n.label, n.origin, n.thumbnail) for n in neighbours] == [
        ("PNEUMONIA", "reference · kermany-pneumonia", b"thumb"),
        ("NORMAL", "confirmed case abcdef12", None),  # a thumbnail on another host is never fetched with the token
    ]


def test_client_reports_unreachable_backend() -> None:
    client = BackendClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendError) as error:
        client.health()
    assert error.value.unreachable and "Cannot reach the backend" in error.value.message


@pytest.mark.parametrize(("status", "detail", "enabled"), [(405, "Method Not Allowed", True), (404, "Not Found", False),
                                                            (401, "Not authenticated", True)])  # fmt: skip
def test_login_probe_tells_a_missing_route_from_a_post_only_one(status: int, detail: str, enabled: bool) -> None:
    client = answering(lambda request: httpx.Response(status, json={"detail": detail}))
    assert client.auth_enabled() is enabled


def test_non_json_error_bodies_become_sentences() -> None:
    response = httpx.Response(502, text="<html>bad gateway</html>", request=httpx.Request("GET", "http://x/"))
    assert detail_of(response) == "The backend answered 502 Bad Gateway."


# --- the page registry ------------------------------------------------------------------------------------------


def test_registry_pages_by_role() -> None:
    titles = {role: [p.title for p in pages_for(role)] for role in (SIGNED_OUT, RADIOLOGIST, ANNOTATOR, ADMIN)}
    assert titles[SIGNED_OUT] == ["Log in"]
    assert titles[RADIOLOGIST] == ["Analyze", "Case history", "Health"]
    assert titles[ANNOTATOR] == ["Annotation queue", "Health"]
    assert titles[ADMIN] == ["Analyze", "Case history", "Annotation queue", "Health", "Metrics & alerts", "Audit"]
    assert [p.title for p in pages_for("auditor")] == ["Health"]  # a future role still gets the shared pages


@pytest.mark.parametrize("spec", PAGES, ids=lambda spec: spec.title)
def test_every_registered_page_is_a_script_with_render(spec: PageSpec) -> None:
    path = ROOT / spec.script
    source = path.read_text()
    assert path.is_file() and "def render() -> None:" in source
    assert source.rstrip().endswith('if __name__ == "__main__":\n    render()')
    module = spec.script.removesuffix(".py").replace("/", ".")
    assert callable(__import__(module, fromlist=["render"]).render)  # importing draws nothing


def test_ui_never_imports_the_backend() -> None:
    backend_packages = ("api", "imaging", "inference", "storage", "case_retrieval", "reports", "monitoring",
                        "mlops", "active_learning")  # fmt: skip
    for path in [ROOT / "app.py", *sorted((ROOT / "ui").rglob("*.py"))]:
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in backend_packages, f"{path.name}: {line.strip()}"


# --- pages against the real backend ------------------------------------------------------------------------------


def test_start_page_follows_auth(ui_settings: dict[str, str]) -> None:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    assert not at.exception
    if ui_settings["auth"]:
        assert [b.label for b in at.button] == ["Log in"]
        at.text_input[0].input(UI_ADMIN)
        at.text_input[1].input("wrong password").run()
        at.button[0].click().run()
        assert at.error and IDENTITY_KEY not in at.session_state  # the backend's message, still signed out
        at = started_app(ui_settings)
    identity = at.session_state[IDENTITY_KEY]
    assert identity.role in (RADIOLOGIST, ADMIN)
    assert at.title[0].value == "Analyze a chest radiograph"


def test_analyze_a_real_radiograph(ui_settings: dict[str, str], kermany_dir: Path) -> None:
    at = started_app(ui_settings)
    image = kermany_jpeg(kermany_dir)
    run_button = next(b for b in at.button if b.label == "Run AI analysis")
    assert run_button.disabled  # nothing to analyse yet
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg").run()
    assert not at.exception, at.exception
    at.number_input(key="analyze-age").set_value(71)
    at.text_input(key="analyze-patient_id").input("UI-APPTEST-1")
    next(b for b in at.button if b.label == "Run AI analysis").click().run()
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    text = page_text(at)
    findings = ("No pneumonia-like opacity found", "PNEUMONIA", "No reliable finding")
    assert "ai-finding" in text and any(finding in text for finding in findings)
    case_id = at.session_state["analyze-case-id"]
    stored = httpx.get(f"{ui_settings['url']}/v1/cases/{case_id}", headers=auth_headers(ui_settings), timeout=10)
    assert stored.status_code == 200 and stored.json()["patient"]["age"] == 71  # the form reached the case record
    assert "Result ready" in text
    # confidence gauge and per-class probabilities, and the film with its marks when a nodule model is served
    assert len(at.get("plotly_chart")) == 2 + (stored.json()["nodule"] is not None)
    assert at.image, "the radiograph (and its overlay when the backend has heatmaps) is shown"
    assert len(at.get("download_button")) == 7  # three PDFs, three DICOM objects (SR, PDF, heatmap) and FHIR
    finding = next(radio for radio in at.radio if radio.label == "Your finding")
    assert finding.value == stored.json()["prediction"]  # the AI's finding until the radiologist says otherwise
    other = next(name for name in finding.options if not name.endswith("(as the AI)"))
    finding.set_value(other).run()
    next(b for b in at.button if b.label == "Sign case").click().run()
    assert not at.exception, at.exception
    assert "Case signed; it goes to the experts' queue." in [s.value for s in at.success]
    stored = httpx.get(f"{ui_settings['url']}/v1/cases/{case_id}", headers=auth_headers(ui_settings), timeout=10)
    assert stored.json()["signed_by"] == UI_ADMIN
    queued = httpx.get(f"{ui_settings['url']}/v1/queue", params={"limit": 500}, headers=auth_headers(ui_settings))
    item = next(item for item in queued.json()["items"] if item["case_id"] == case_id)
    assert "disagreement" in [reason["code"] for reason in item["reasons"]]


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_the_page_shows_the_class_and_probability_the_api_returned(
    ui_settings: dict[str, str], kermany_dir: Path
) -> None:
    """A film the threshold (0.189) calls PNEUMONIA although NORMAL has the larger probability: the headline, the
    gauge and the bars must show what the API stored for the case, not the arg-max."""
    at = started_app(ui_settings)
    image = kermany_dir / "test" / BETWEEN_THRESHOLD_AND_HALF[0]
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg").run()
    next(b for b in at.button if b.label == "Run AI analysis").click().run()
    assert not at.exception, at.exception
    case_id = at.session_state["analyze-case-id"]
    case = httpx.get(f"{ui_settings['url']}/v1/cases/{case_id}", headers=auth_headers(ui_settings), timeout=10).json()
    assert case["prediction"] == "PNEUMONIA" and case["probabilities"]["NORMAL"] > 0.5  # the film is what we think
    headline = [m.value for m in at.markdown if "ai-finding" in str(m.value)]
    assert len(headline) == 1 and re.search(r">([^<]*)</h2>", headline[0])[1] == "PNEUMONIA", headline
    gauge, bars = chart_specs(at)[:2]  # then the film, when a nodule model is served
    assert gauge["data"][0]["value"] == pytest.approx(case["confidence"] * 100, abs=0.051)
    shown = dict(zip(bars["data"][0]["y"], bars["data"][0]["x"], strict=True))
    # the negative class is named for what the model did not find (issue 22), never "normal"
    expected = {
        "PNEUMONIA": case["probabilities"]["PNEUMONIA"],
        "No pneumonia-like opacity found": case["probabilities"]["NORMAL"],
    }
    assert shown == pytest.approx({name: p * 100 for name, p in expected.items()}, abs=1e-6)
    assert bars["data"][0]["text"] == [f"{expected[n] * 100:.1f}%" for n in bars["data"][0]["y"]]


def test_unusable_file_shows_the_backend_message(ui_settings: dict[str, str]) -> None:
    at = started_app(ui_settings)
    at.file_uploader[0].upload("not-an-image.png", b"this is plain text, not a PNG", "image/png").run()
    assert not at.exception, at.exception
    if not at.error:  # no inspect endpoint: the refusal comes from POST /v1/studies
        next(b for b in at.button if b.label == "Run AI analysis").click().run()
    assert not at.exception, at.exception
    messages = " ".join(e.value for e in at.error)
    assert "Traceback" not in messages and ("format" in messages.lower() or "image" in messages.lower())
    assert "analyze-case-id" not in at.session_state


def test_dicom_upload_prefills_the_patient_form(ui_settings: dict[str, str]) -> None:
    at = started_app(ui_settings)
    data = dicom_bytes(to_stored(synthetic_radiograph(256, 256), bits=12), bits_stored=12, window=(2048, 4096))
    at.file_uploader[0].upload("study.dcm", data, "application/dicom").run()
    assert not at.exception, at.exception
    assert at.text_input(key="analyze-patient_id").value == "CXR-TEST-0001"
    assert at.text_input(key="analyze-name").value == "Doe, Jane"
    assert at.number_input(key="analyze-age").value == 34
    assert at.selectbox(key="analyze-sex").value == "F"
    assert at.image, "the backend's windowed preview is shown"


def test_history_finds_and_reopens_cases(ui_settings: dict[str, str], kermany_dir: Path) -> None:
    headers = auth_headers(ui_settings)
    image = kermany_jpeg(kermany_dir, "NORMAL")
    created = httpx.post(
        f"{ui_settings['url']}/v1/studies",
        files={"file": (image.name, image.read_bytes(), "image/jpeg")},
        data={"patient": json.dumps({"patient_id": "UI-HIST-7", "name": "History Patient"})},
        headers=headers,
        timeout=60,
    )
    assert created.status_code in (200, 201), created.text
    at = started_app(ui_settings)
    at.switch_page("ui/pages/history.py").run()
    assert not at.exception, at.exception
    at.text_input[0].input("UI-HIST-7")
    at.button(key="FormSubmitter:history-search-Search").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["Patient ID"]) == ["UI-HIST-7"] and list(table["Name"]) == ["History Patient"]
    at.query_params["case"] = created.json()["case_id"]
    at.run()
    assert not at.exception, at.exception
    assert "UI-HIST-7" in page_text(at) and "ai-finding" in page_text(at)


def test_health_page(ui_settings: dict[str, str]) -> None:
    at = started_app(ui_settings)
    at.switch_page("ui/pages/health.py").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Backend"] == "ok" and metrics["Model loaded"] == "yes"
    tables = [str(table.value.to_dict()) for table in at.table]
    served = httpx.get(f"{ui_settings['url']}/health", timeout=10).json()["model_version"]
    assert any(served in text for text in tables)  # the model card summary
    assert any("database" in text and "OK" in text for text in tables)  # the readiness checks
    assert any(label.endswith(" use") for label in metrics)


def test_unreachable_backend_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_URL", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    try:
        at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    finally:
        get_settings.cache_clear()
    assert not at.exception
    assert "does not answer" in " ".join(w.value for w in at.warning)


def test_rejected_token_returns_to_login(ui_settings: dict[str, str]) -> None:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.session_state[IDENTITY_KEY] = Identity(username="ghost", role=RADIOLOGIST, token="forged-token")
    at.session_state["auth_enabled"] = True
    at.run()  # the Analyze page calls nothing before an upload; the case list does
    at.switch_page("ui/pages/history.py").run()
    assert not at.exception, at.exception
    assert IDENTITY_KEY not in at.session_state
    assert [b.label for b in at.button] == ["Log in"]


# --- helpers that read the live backend ----------------------------------------------------------------------------


def auth_headers(backend: dict[str, str]) -> dict[str, str]:
    if not backend["auth"]:
        return {}
    answer = httpx.post(
        f"{backend['url']}/v1/auth/login",
        json={"username": UI_ADMIN, "password": backend["ADMIN_PASSWORD"]},
        timeout=10,
    )
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}
