"""Shared fixtures: dataset location (skip locally, fail under CI when absent), torch thread limits, and the live
API server with one logged-in account per role (`client` is a radiologist; `admin_client`, `annotator_client`,
`anonymous_client`, `api_accounts`)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
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


# Accounts the HTTP tests use: the first admin comes from settings, the others are created through /v1/users.
TEST_ROLES: tuple[str, ...] = ("radiologist", "annotator", "admin")
# Generous per-user budget: the suite sends hundreds of requests per minute as one user (tests/test_security.py
# checks the limiter itself on its own server).
API_TEST_SECURITY = {"RATE_LIMIT": "100000/minute", "LOGIN_RATE_LIMIT": "50/minute", "REQUEST_TIMEOUT_S": "120"}


@pytest.fixture(scope="session")
def api_env(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the API process the HTTP tests talk to: own var dir, SQLite, tiny model, small limits, a
    random first admin and token-signing secret (tests/test_authz_matrix.py mints expired tokens with it)."""
    var_dir = tmp_path_factory.mktemp("var")
    return {
        "MODEL_PATH": str(tiny_checkpoint),
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": "",
        "TORCH_THREADS": "1",
        "ADMIN_USERNAME": "test-admin",
        "ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "JWT_SECRET": secrets.token_urlsafe(48),
        **API_TEST_LIMITS,
        **API_TEST_SECURITY,
    }


@pytest.fixture(scope="session")
def api_url(api_env: dict[str, str]):
    """Base URL of a real uvicorn process serving api.main:app on a free port."""
    from tests.live_server import running_api

    with running_api(api_env) as base_url:
        yield base_url


@dataclass(frozen=True)
class ApiAccount:
    """A logged-in test account of the session's API server."""

    username: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def login(api_url: str, username: str, password: str) -> str:
    """POST /v1/auth/login -> the access token (fails the test on any other answer)."""
    import httpx

    response = httpx.post(f"{api_url}/v1/auth/login", json={"username": username, "password": password}, timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture(scope="session")
def api_accounts(api_url: str, api_env: dict[str, str]) -> dict[str, ApiAccount]:
    """One logged-in account per role: the settings admin, plus a radiologist and an annotator it creates."""
    import httpx

    admin_name, admin_password = api_env["ADMIN_USERNAME"], api_env["ADMIN_PASSWORD"]
    accounts = {"admin": ApiAccount(admin_name, admin_password, "admin", login(api_url, admin_name, admin_password))}
    for role in TEST_ROLES:
        if role == "admin":
            continue
        username, password = f"test-{role}", secrets.token_urlsafe(18)
        created = httpx.post(
            f"{api_url}/v1/users",
            json={"username": username, "password": password, "role": role},
            headers=accounts["admin"].headers,
            timeout=60,
        )
        assert created.status_code == 201, created.text
        accounts[role] = ApiAccount(username, password, role, login(api_url, username, password))
    return accounts


def _http_client(api_url: str, headers: dict[str, str]):
    import httpx

    return httpx.Client(base_url=api_url, timeout=60, headers=headers)


@pytest.fixture()
def client(api_url: str, api_accounts: dict[str, ApiAccount]):
    """HTTP client of the session's API server, logged in as a radiologist (the clinical role)."""
    with _http_client(api_url, api_accounts["radiologist"].headers) as http:
        yield http


@pytest.fixture()
def admin_client(api_url: str, api_accounts: dict[str, ApiAccount]):
    with _http_client(api_url, api_accounts["admin"].headers) as http:
        yield http


@pytest.fixture()
def annotator_client(api_url: str, api_accounts: dict[str, ApiAccount]):
    with _http_client(api_url, api_accounts["annotator"].headers) as http:
        yield http


@pytest.fixture()
def anonymous_client(api_url: str):
    with _http_client(api_url, {}) as http:
        yield http
