"""The shipped nodule checkpoint (models/nodule.pt): its card's test figures come out of the serving path again, and
a backend with the default settings refuses it with that figure, because it is below the 0.65 AUROC floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference import NodulePredictor, load_checkpoint
from labelled_data import load_boxed_set
from mlops.nodule_metrics import score_films, summarise
from tests.conftest import require_dataset
from tests.in_process import backend_settings, workstation
from tests.live_server import ROOT

SHIPPED = ROOT / "models" / "nodule.pt"


def test_the_cards_test_figures_come_out_of_the_serving_path() -> None:
    boxes_dir = require_dataset("nih-nodule-boxes")
    checkpoint = load_checkpoint(SHIPPED)
    films = score_films(
        NodulePredictor(checkpoint, threads=2), [s for s in load_boxed_set(boxes_dir) if s.split == "test"]
    )
    figures = summarise(films, checkpoint.extra["location_threshold"], rounds=50)
    stored = checkpoint.metrics["test"]
    assert (figures["films"], figures["boxes"]) == (94, 18)
    assert figures["auroc"] == pytest.approx(stored["auroc"], abs=1e-4) == pytest.approx(0.612, abs=1e-3)
    assert figures["sensitivity_at_1_fp"] == pytest.approx(stored["sensitivity_at_1_fp"], abs=1e-6)
    operating = checkpoint.extra["operating_point"]
    assert figures["sensitivity_at_threshold"] == pytest.approx(operating["sensitivity"], abs=1e-6)


def test_the_default_backend_refuses_the_shipped_model_and_says_why(tmp_path: Path, tiny_checkpoint: Path) -> None:
    settings = backend_settings(tmp_path, tiny_checkpoint).model_copy(update={"nodule_model_path": SHIPPED})
    with workstation(settings) as client:
        answer = client.get("/model/info", params={"task": "nodule"})
        ready = client.get("/ready").json()
    assert answer.status_code == 503
    assert "its test AUROC 0.61 is below the 0.65 floor (NODULE_MIN_TEST_AUROC)" in answer.json()["detail"]
    check = ready["checks"]["model:nodule"]
    assert check["ok"] is False and "0.61" in check["detail"]
    assert ready["ready"] is True  # pneumonia keeps serving
