"""A workstation's MLflow registry prepared before its backend starts: the shipped model as version 1 (the champion)
and a site variant of it as version 2, which differs where a person sees it: its decision threshold is 0.6 instead
of 0.189, so a film the shipped model scores at P(PNEUMONIA) 0.39 is PNEUMONIA under v1 and NORMAL under v2.

v2 keeps v1's backbone (`same_backbone_as`), as a recalibrated version does, so the similar-case library is carried
over to it without re-embedding (and still labelled with v2's version)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow

from inference import load_checkpoint, save_checkpoint
from mlops import registry
from settings import get_settings

MODEL_NAME = "cxr-pneumonia"
SITE_THRESHOLD = 0.6
# P(PNEUMONIA) 0.39 under the shipped model (tests/test_clinical_path.py): PNEUMONIA under v1, NORMAL under v2.
BETWEEN_THRESHOLDS = "NORMAL/IM-0030-0001.jpg"


@dataclass(frozen=True)
class RegisteredPair:
    shipped: str  # checkpoint version of registry v1 (the shipped model)
    site: str  # checkpoint version of registry v2 (threshold 0.6)


@contextmanager
def registry_of(var_dir: Path) -> Iterator[None]:
    """mlops.registry in this process works on `var_dir`'s MLflow store (the one a backend with that VAR_DIR uses)."""
    import os

    saved = {key: os.environ.get(key) for key in ("VAR_DIR", "MLFLOW_TRACKING_URI")}
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    get_settings.cache_clear()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


def site_variant(shipped: Path, out: Path) -> Path:
    checkpoint = load_checkpoint(shipped)
    parent = checkpoint.version
    checkpoint.version = f"{parent}-site"
    checkpoint.threshold = SITE_THRESHOLD
    checkpoint.extra = {**checkpoint.extra, "same_backbone_as": [parent]}
    save_checkpoint(checkpoint, out)
    return out


def register_pair(var_dir: Path, shipped: Path) -> RegisteredPair:
    """v1 = the shipped model, made champion by "test-setup"; v2 = its site variant, registered only."""
    variant = site_variant(shipped, var_dir.parent / f"{var_dir.name}-site.pt")
    with registry_of(var_dir):
        v1 = registry.register_checkpoint_file(shipped, MODEL_NAME)
        v2 = registry.register_checkpoint_file(variant, MODEL_NAME)
        assert (v1, v2) == (1, 2)
        registry.promote(MODEL_NAME, v1, "the shipped model", by="test-setup")
    return RegisteredPair(load_checkpoint(shipped).version, load_checkpoint(variant).version)
