"""A small nodule checkpoint for tests: the real NoduleNet (resnet18 backbone, random weights) at 64 px.

Its numbers mean nothing clinically; tests compare what the API answers with what the NodulePredictor computes on
the same pixels, and check the contract (fields, coordinates in the stored image's pixels, the AUROC floor).
"""

from __future__ import annotations

from pathlib import Path

import torch

from imaging import PreprocessSpec
from inference import NODULE_MODEL_KIND as MODEL_KIND
from inference import ModelCheckpoint, NoduleNet, save_checkpoint


def make_nodule_checkpoint(
    path: Path,
    *,
    test_auroc: float = 0.80,
    threshold: float = 0.5,
    location_threshold: float = 0.0,
    version: str = "nodule-fixture-1",
    seed: int = 0,
) -> ModelCheckpoint:
    """Write a nodule checkpoint to `path` and return it. `location_threshold` 0 keeps every heatmap peak (up to
    the predictor's maximum), so a test film always gets marks."""
    torch.manual_seed(seed)
    model = NoduleNet("resnet18", head_width=16).eval()
    checkpoint = ModelCheckpoint(
        architecture="resnet18",
        task="nodule",
        class_names=["NO_NODULE", "NODULE"],
        preprocess=PreprocessSpec(input_size=64, mean=0.5, std=0.25, equalize=True),
        state_dict=model.state_dict(),
        threshold=threshold,
        temperature=1.0,
        version=version,
        metrics={"test": {"auroc": test_auroc, "sensitivity_at_1_fp": 0.6, "false_positives_per_film": 1.0}},
        model_kwargs={"head_width": 16},
        extra={
            "model_kind": MODEL_KIND,
            "location_threshold": location_threshold,
            "operating_point": {"sensitivity": 0.6, "false_positives_per_film": 1.0, "split": "test"},
        },
    )
    save_checkpoint(checkpoint, path)
    return checkpoint
