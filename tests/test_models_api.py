"""Model operations through HTTP on a running uvicorn whose MLflow registry holds the shipped model (v1, champion)
and its site variant (v2, threshold 0.6; tests/model_registry_support.py): the backend serves the registry's
champion rather than MODEL_PATH; an admin lists the versions with their facts, promotes v2 and rolls back with a
reason; the film between the two thresholds changes its finding and version with each switch, never from a cache
of the other version; a case's heatmap keeps naming the model that made it; similar cases come from the serving
version's library; everything is audited; bad requests get clear 4xx answers; the CLI shows the same facts."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from mlops import registry
from tests.conftest import LiveApi, ReferenceLibrary, make_tiny_checkpoint, server_env, started_api
from tests.in_process import backend_settings, workstation
from tests.model_registry_support import BETWEEN_THRESHOLDS, MODEL_NAME, RegisteredPair, register_pair, registry_of

PATIENT = {"name": "Wilhelmina Osterbrook", "patient_id": "MRN-WO-3310", "age": 5, "sex": "F"}


@pytest.fixture(scope="module")
def pair_and_api(
    tmp_path_factory: pytest.TempPathFactory, shipped_model: Path, reference_library: ReferenceLibrary
) -> Iterator[tuple[RegisteredPair, LiveApi]]:
    root = tmp_path_factory.mktemp("models-api")
    var_dir = root / "var"
    var_dir.mkdir()
    pair = register_pair(var_dir, shipped_model)
    # MODEL_PATH names another model: the registry's champion must win over it (no MODEL_ALIAS set).
    env = server_env(var_dir, make_tiny_checkpoint(root / "tiny.pt", version="not-the-champion"), reference_library)
    env |= {"MODEL_ALIAS_POLL_S": "1"}
    with started_api(env, "sqlite") as api:
        yield pair, api


@pytest.fixture(scope="module")
def pair(pair_and_api: tuple[RegisteredPair, LiveApi]) -> RegisteredPair:
    return pair_and_api[0]


@pytest.fixture(scope="module")
def api(pair_and_api: tuple[RegisteredPair, LiveApi]) -> LiveApi:
    return pair_and_api[1]


@pytest.fixture(scope="module")
def admin(api: LiveApi) -> Iterator[httpx.Client]:
    with api.client("admin") as http:
        yield http


@pytest.fixture(scope="module")
def radiologist(api: LiveApi) -> Iterator[httpx.Client]:
    with api.client("radiologist") as http:
        yield http


def predict(http: httpx.Client, kermany_dir: Path) -> dict:
    film = (kermany_dir / "test" / BETWEEN_THRESHOLDS).read_bytes()
    answer = http.post("/predict", files={"file": ("film.jpg", film)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def pdf_words(pdf: bytes) -> str:
    return "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages)


def audited(admin: httpx.Client, action: str, wanted: Callable[[dict], bool]) -> list[dict]:
    """The audit events of `action` that `wanted` picks; the middleware records them just after the answer went
    out, so a moment is allowed for the last one."""
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in admin.get("/v1/audit", params={"action": action}).json()["items"] if wanted(e)]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def versions_by_number(admin: httpx.Client) -> dict[int, dict]:
    listing = admin.get("/v1/models")
    assert listing.status_code == 200, listing.text
    models = {model["name"]: model for model in listing.json()["models"]}
    return {version["version"]: version for version in models[MODEL_NAME]["versions"]}


def test_the_registry_champion_is_served_rather_than_model_path(admin: httpx.Client, pair: RegisteredPair) -> None:
    info = admin.get("/model/info").json()
    assert info["version"] == pair.shipped and info["threshold"] == pytest.approx(0.189, abs=0.001)
    listing = admin.get("/v1/models").json()
    assert listing["serving"] == {"pneumonia": pair.shipped}
    assert [(m["name"], m["champion"]) for m in listing["models"]] == [(MODEL_NAME, 1)]


def test_every_version_comes_with_its_metrics_data_and_who_promoted_it(
    admin: httpx.Client, pair: RegisteredPair
) -> None:
    versions = versions_by_number(admin)
    assert sorted(versions) == [1, 2]
    shipped, site = versions[1], versions[2]
    assert (shipped["checkpoint_version"], site["checkpoint_version"]) == (pair.shipped, pair.site)
    assert shipped["aliases"] == ["champion"] and site["aliases"] == []
    assert shipped["serving"] and shipped["warm"] and not site["serving"] and not site["warm"]
    assert shipped["metrics"]["auroc"] == pytest.approx(0.9595, abs=0.0001)  # the shipped model's test AUROC
    assert shipped["data_fingerprint"].startswith("00d87a7e508b")  # the Kermany train split it learned from
    assert shipped["test_data_fingerprint"]
    assert (shipped["promoted_by"], shipped["promotion_reason"]) == ("test-setup", "the shipped model")
    assert site["promoted_by"] == "" and site["promoted_at"] == ""
    one = admin.get(f"/v1/models/{MODEL_NAME}/versions/2")
    assert one.status_code == 200 and one.json() == site


def test_promote_serves_the_new_version_at_once_and_rollback_brings_the_old_one_back(
    admin: httpx.Client, radiologist: httpx.Client, pair: RegisteredPair, kermany_dir: Path
) -> None:
    before = predict(radiologist, kermany_dir)
    assert (before["model_version"], before["prediction"]) == (pair.shipped, "PNEUMONIA")
    assert predict(radiologist, kermany_dir)["cached"] is True  # v1 remembers this film

    promoted = admin.post(f"/v1/models/{MODEL_NAME}/promote", json={"version": 2, "reason": "Site recalibration."})
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert (body["version"], body["previous_version"], body["serving"]) == (2, 1, pair.site)
    after = predict(radiologist, kermany_dir)
    # v1's cached answer is not served for v2: a fresh pass with v2's threshold calls the film NORMAL.
    assert (after["model_version"], after["prediction"], after["cached"]) == (pair.site, "NORMAL", False)
    assert after["probabilities"] == before["probabilities"]  # same weights, another threshold
    site = versions_by_number(admin)[2]
    assert site["aliases"] == ["champion"] and site["serving"]
    assert (site["promoted_by"], site["promotion_reason"]) == ("test-admin", "Site recalibration.")
    assert versions_by_number(admin)[1]["warm"]  # the previous champion stays loaded

    rolled = admin.post(f"/v1/models/{MODEL_NAME}/rollback", json={"reason": "Sensitivity fell on the ward."})
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["version"], rolled.json()["serving"]) == (1, pair.shipped)
    assert rolled.json()["swap_ms"] < 100  # kept warm: no load, no warm-up
    back = predict(radiologist, kermany_dir)
    assert (back["model_version"], back["prediction"], back["cached"]) == (pair.shipped, "PNEUMONIA", True)
    shipped = versions_by_number(admin)[1]
    assert (shipped["rolled_back_by"], shipped["rollback_reason"]) == ("test-admin", "Sensitivity fell on the ward.")


def test_promotions_and_rollbacks_are_audited_with_the_version_that_serves(
    admin: httpx.Client, pair: RegisteredPair
) -> None:
    events = {}
    for action in ("model.promote", "model.rollback"):
        page = admin.get("/v1/audit", params={"action": action}).json()["items"]
        events[action] = {event["detail"]["reason"]: event for event in page}
    promote = events["model.promote"]["Site recalibration."]
    rollback = events["model.rollback"]["Sensitivity fell on the ward."]
    assert (promote["actor_name"], promote["model_version"]) == ("test-admin", pair.site)
    assert promote["target_id"] == f"{MODEL_NAME}/2" and promote["detail"]["previous_version"] == 1
    assert (rollback["model_version"], rollback["detail"]["version"]) == (pair.shipped, 1)
    predictions = audited(admin, "prediction", lambda event: event["detail"]["what"] == "one image, not stored")
    assert {event["model_version"] for event in predictions} == {pair.shipped, pair.site}
    assert admin.get("/v1/audit/verify").json()["intact"] is True


def test_a_case_keeps_its_model_for_heatmap_and_similar_cases_after_a_switch(
    admin: httpx.Client, radiologist: httpx.Client, pair: RegisteredPair, kermany_dir: Path
) -> None:
    film = (kermany_dir / "test" / BETWEEN_THRESHOLDS).read_bytes()
    made = radiologist.post("/v1/studies", files={"file": ("f.jpg", film)}, data={"patient": json.dumps(PATIENT)})
    assert made.status_code == 201, made.text
    case = made.json()
    assert case["model_version"] == pair.shipped
    promoted = admin.post(f"/v1/models/{MODEL_NAME}/promote", json={"version": 2, "reason": "Second look at v2."})
    assert promoted.status_code == 200, promoted.text
    try:
        heatmap = radiologist.get(f"/v1/cases/{case['case_id']}/heatmap")
        assert heatmap.status_code == 200 and heatmap.headers["X-Model-Version"] == pair.shipped  # the case's model
        report = radiologist.get(f"/v1/cases/{case['case_id']}/report", params={"kind": "clinical"})
        assert report.status_code == 200, report.text
        assert f"AI model version {pair.shipped}." in pdf_words(report.content)
        downloads = audited(admin, "report.download", lambda event: event["target_id"] == case["case_id"])
        assert [event["model_version"] for event in downloads] == [pair.shipped]
        newer = radiologist.post("/v1/studies", files={"file": ("f.jpg", film)}, data={"patient": json.dumps(PATIENT)})
        assert newer.json()["model_version"] == pair.site and newer.json()["prediction"] == "NORMAL"
        similar = radiologist.get(f"/v1/cases/{newer.json()['case_id']}/similar", params={"k": 3})
        assert similar.status_code == 200, similar.text
        assert similar.json()["model_version"] == pair.site and len(similar.json()["neighbours"]) == 3
    finally:
        admin.post(f"/v1/models/{MODEL_NAME}/rollback", json={"reason": "Back to the shipped model."})


def test_bad_requests_get_clear_answers(admin: httpx.Client) -> None:
    unknown = admin.get("/v1/models/no-such-model/versions/1")
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "No registered model named 'no-such-model'.")
    missing = admin.post(f"/v1/models/{MODEL_NAME}/promote", json={"version": 9, "reason": "Try it."})
    assert (missing.status_code, missing.json()["detail"]) == (404, f"Model '{MODEL_NAME}' has no version 9.")
    assert admin.get(f"/v1/models/{MODEL_NAME}/versions/9").status_code == 404
    no_reason = admin.post(f"/v1/models/{MODEL_NAME}/promote", json={"version": 2, "reason": "  "})
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    assert admin.post(f"/v1/models/{MODEL_NAME}/rollback", json={}).status_code == 422
    assert admin.get("/model/info").json()["version"] != "not-the-champion"  # nothing above changed the model


def test_the_command_line_shows_what_the_api_did(api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    with registry_of(Path(api.env["VAR_DIR"])):
        assert registry.main(["show", MODEL_NAME, "1"]) == 0
        shown = capsys.readouterr().out
        assert registry.main(["list", MODEL_NAME]) == 0
        listed = capsys.readouterr().out
        assert registry.main(["rollback", MODEL_NAME]) == 2  # no reason given: refused
        refused = capsys.readouterr().err
        last_move = registry.alias_history(MODEL_NAME)[-1]
    assert (last_move.version, last_move.action, last_move.by) == (1, "rollback", "test-admin")
    assert last_move.reason == "Back to the shipped model."
    assert "v1 [champion]" in listed and "auroc 0.9595" in listed and "v2 " in listed
    assert "aliases: champion" in shown and "trained on data: 00d87a7e508b" in shown
    assert "rolled back to: by test-admin" in shown and "Back to the shipped model." in shown
    assert "Give a reason" in refused


def test_alias_moved_elsewhere_is_followed_within_seconds(
    api: LiveApi, admin: httpx.Client, pair: RegisteredPair
) -> None:
    """The registry is the truth: an alias moved by the command line (not through this backend) is served soon."""
    with registry_of(Path(api.env["VAR_DIR"])):
        assert registry.main(["promote", MODEL_NAME, "2", "--reason", "Moved from the CLI.", "--by", "ops"]) == 0
    try:
        deadline = time.monotonic() + 15
        while admin.get("/model/info").json()["version"] != pair.site:
            assert time.monotonic() < deadline, "the backend did not follow the alias"
            time.sleep(0.5)
    finally:
        with registry_of(Path(api.env["VAR_DIR"])):
            registry.main(["rollback", MODEL_NAME, "--reason", "Tidy up."])


def test_a_model_alias_that_names_nothing_is_reported_not_fatal(tmp_path: Path, shipped_model: Path) -> None:
    settings = backend_settings(tmp_path, shipped_model).model_copy(update={"model_alias": "models:/only-a-name"})
    with workstation(settings) as backend:
        ready = backend.get("/ready")
        assert ready.status_code == 503 and "Not a model reference: 'models:/only-a-name'" in ready.text
        assert backend.get("/v1/models").json() == {"models": [], "serving": {}}
