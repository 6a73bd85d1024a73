"""Shared fixtures: dataset location (skip locally, fail under CI when absent) and torch thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from settings import get_settings

torch.set_num_threads(1)  # the suite runs beside other work on a 2-core machine


def require_dataset(name: str) -> Path:
    """Path of ../shared/datasets/<name>; skips when absent, but fails under CI (CI=true)."""
    path = Path(get_settings().cxr_data_dir) / name
    if not path.is_dir():
        message = f"dataset folder {path} is absent (set CXR_DATA_DIR to the shared datasets)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def kermany_dir() -> Path:
    return require_dataset("kermany-pneumonia")


@pytest.fixture(scope="session")
def dicom_samples_dir() -> Path:
    return require_dataset("dicom-samples")


@pytest.fixture(scope="session")
def nodule_dir() -> Path:
    return require_dataset("nih-nodule")


def make_tiny_checkpoint(path: Path, input_size: int = 64, version: str = "test-tiny-1") -> Path:
    """A randomly initialised resnet18 checkpoint in the model contract: fast enough for HTTP tests."""
    from imaging import PreprocessSpec
    from inference import ModelCheckpoint, create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("resnet18", 2, drop_rate=0.2)
    checkpoint = ModelCheckpoint(
        architecture="resnet18",
        task="pneumonia",
        class_names=["NORMAL", "PNEUMONIA"],
        preprocess=PreprocessSpec(input_size=input_size),
        state_dict=model.state_dict(),
        threshold=0.5,
        temperature=1.0,
        version=version,
        metrics={"test": {"auroc": 0.5}},
        data_fingerprint="synthetic",
        model_kwargs={"drop_rate": 0.2},
    )
    save_checkpoint(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


API_TEST_LIMITS = {"MAX_UPLOAD_MB": "2", "BATCH_MAX": "4"}


@pytest.fixture(scope="session")
def api_env(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the API process the HTTP tests talk to: own var dir, SQLite, tiny model, small limits."""
    var_dir = tmp_path_factory.mktemp("var")
    return {"MODEL_PATH": str(tiny_checkpoint), "VAR_DIR": str(var_dir), "DATABASE_URL": "", "TORCH_THREADS": "1",
            **API_TEST_LIMITS}


@pytest.fixture(scope="session")
def api_url(api_env: dict[str, str]):
    """Base URL of a real uvicorn process serving api.main:app on a free port."""
    from tests.live_server import running_api

    with running_api(api_env) as base_url:
        yield base_url


@pytest.fixture()
def client(api_url: str):
    import httpx

    with httpx.Client(base_url=api_url, timeout=60) as http:
        yield http
