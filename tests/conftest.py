"""Shared fixtures: what the suite needs from the machine (datasets, the shipped model, PostgreSQL, Redis), torch
thread limits, and the live API servers with one logged-in account per role.

Missing pieces skip a test locally and fail it under CI (CI=true, set by .ci/run): `missing()` says so in words,
and the hooks at the end turn any other skip into a failure under CI, so a green CI run never hides a test that did
not run.

Live servers (real uvicorn processes, tests/live_server.py) serve the shipped checkpoint (models/pneumonia.pt,
threshold 0.189, not 0.5) with a small similar-case library built from named Kermany train films:
- `api_url`, `api_env`, `api_accounts`: the SQLite server of the session (authorisation matrix, schemathesis, ...);
- `live_api`: the same server, and an identical one on PostgreSQL; a test that asks for it (or for `client`,
  `admin_client`, `annotator_client`, `anonymous_client`) runs once per database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psycopg
import pytest
import torch
from sqlalchemy.engine import make_url

from settings import get_settings
from tests.live_server import ROOT, running_api

torch.set_num_threads(1)  # the suite runs beside other work on a 2-core machine
# Servers and settings of the suite serve no nodule model unless a test names one (tests/test_nodule_serving.py):
# a models/nodule.pt in the checkout must not change what every other test sees. Inherited by the live servers.
os.environ["NODULE_MODEL_PATH"] = ""

UNDER_CI = os.environ.get("CI", "").lower() == "true"
SHIPPED_MODEL = ROOT / "models" / "pneumonia.pt"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def missing(what: str) -> NoReturn:
    """Skip the test because `what` is missing here; under CI (CI=true) fail it instead, naming what is missing."""
    if UNDER_CI:
        pytest.fail(f"CI=true and this test needs something the machine lacks: {what}", pytrace=False)
    pytest.skip(what)


# --- what the machine must offer -------------------------------------------------------------------------------------


def require_dataset(name: str) -> Path:
    """Path of ../shared/datasets/<name>; skips when absent, but fails under CI."""
    path = Path(get_settings().cxr_data_dir) / name
    if not path.is_dir():
        missing(f"dataset folder {path} is absent (set CXR_DATA_DIR to the shared datasets)")
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


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """models/pneumonia.pt: resnet18 at 192 px whose decision threshold (0.189) is not 0.5."""
    if not SHIPPED_MODEL.is_file():
        missing(f"the shipped model {SHIPPED_MODEL} is absent (train it with `python -m mlops.train`)")
    return SHIPPED_MODEL


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL URL, after checking the server answers."""
    try:
        with psycopg.connect(libpq_url(POSTGRES_URL), connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        missing(
            f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} is unreachable ({exc}); "
            "scripts/ensure_services.sh starts it"
        )
    return POSTGRES_URL


@contextmanager
def postgres_schema(server_url: str, prefix: str) -> Iterator[str]:
    """A URL to a fresh, empty schema on the server (every connection's search_path), dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(server_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(libpq_url(server_url), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def empty_database(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Iterator[Any]:
    """For a fixture parametrised by DATABASES: an empty `storage.Database` (a SQLite file, or a PostgreSQL schema
    dropped afterwards) under a fresh PHI key."""
    from storage import Database, PhiCipher, configure_phi_cipher, generate_phi_key

    configure_phi_cipher(PhiCipher([generate_phi_key()]))
    try:
        if request.param == "sqlite":
            database = Database(f"sqlite:///{tmp_path / f'{name}.db'}")
            yield database
            database.dispose()
        else:
            with postgres_schema(request.getfixturevalue("postgres_server"), f"test_{name}") as url:
                database = Database(url)
                yield database
                database.dispose()
    finally:
        configure_phi_cipher(None)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL (database 15, emptied first), after checking the server answers PING."""
    parsed = make_url(REDIS_URL.replace("redis://", "redis+x://", 1))  # only to split host and port
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 6379), timeout=3) as sock:
            sock.sendall(b"SELECT 15\r\nFLUSHDB\r\nPING\r\n")
            answer = b""
            while b"PONG" not in answer and len(answer) < 200:
                chunk = sock.recv(100)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        missing(f"Redis at {REDIS_URL} is unreachable ({exc}); scripts/ensure_services.sh starts it")
    if b"PONG" not in answer:
        missing(f"Redis at {REDIS_URL} did not answer PING (got {answer[:80]!r})")
    return REDIS_URL


# --- checkpoints ------------------------------------------------------------------------------------------------------


def make_tiny_checkpoint(
    path: Path, input_size: int = 64, version: str = "test-tiny-1", threshold: float = 0.5
) -> Path:
    """A randomly initialised resnet18 checkpoint in the model contract: fast, for tests of plumbing, not findings."""
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
        threshold=threshold,
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


# --- the similar-case library the live servers serve -----------------------------------------------------------------

# Kermany train films, chosen by name: a query with one of them must find that very film first, with its label.
REFERENCE_FILMS: dict[str, tuple[str, ...]] = {
    "NORMAL": ("IM-0115-0001.jpg", "IM-0117-0001.jpg", "IM-0119-0001.jpg", "IM-0122-0001.jpg", "IM-0125-0001.jpg",
               "IM-0127-0001.jpg"),
    "PNEUMONIA": ("person1000_bacteria_2931.jpg", "person1000_virus_1681.jpg", "person1001_bacteria_2932.jpg",
                  "person1002_bacteria_2933.jpg", "person1003_bacteria_2934.jpg", "person1003_virus_1685.jpg"),
}  # fmt: skip


@dataclass(frozen=True)
class ReferenceLibrary:
    folder: Path  # the built library (copied into each server's var dir)
    films: dict[str, str]  # film path -> its label

    def __len__(self) -> int:
        return len(self.films)


def reference_films(kermany_dir: Path) -> dict[Path, str]:
    """REFERENCE_FILMS as paths -> label, failing with the names the dataset lacks."""
    found = {kermany_dir / "train" / label / name: label for label, names in REFERENCE_FILMS.items() for name in names}
    absent = [str(path) for path in found if not path.is_file()]
    assert not absent, f"reference films missing from the dataset: {absent}"
    return found


def build_library(model: Path, data_dir: Path, out: Path) -> None:
    """`python -m case_retrieval build` (the command README and scripts/run.sh give) over `data_dir`'s train split."""
    command = [sys.executable, "-m", "case_retrieval", "build", "--data", str(data_dir), "--split", "train",
               "--checkpoint", str(model), "--out", str(out), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "TORCH_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, f"library build failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def reference_library(
    tmp_path_factory: pytest.TempPathFactory, kermany_dir: Path, shipped_model: Path
) -> ReferenceLibrary:
    root = tmp_path_factory.mktemp("reference")
    films = reference_films(kermany_dir)
    for path, label in films.items():
        target = root / "data" / "train" / label / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    build_library(shipped_model, root / "data", root / "library")
    return ReferenceLibrary(root / "library", {str(path): label for path, label in films.items()})


# --- the live API servers --------------------------------------------------------------------------------------------

API_TEST_LIMITS = {"MAX_UPLOAD_MB": "2", "BATCH_MAX": "4"}
# Accounts the HTTP tests use: the first admin comes from settings, the others are created through /v1/users.
TEST_ROLES: tuple[str, ...] = ("radiologist", "annotator", "senior", "admin")
# Generous per-user budget: the suite sends hundreds of requests per minute as one user (tests/test_security.py
# checks the limiter itself on its own server).
API_TEST_SECURITY = {"RATE_LIMIT": "100000/minute", "LOGIN_RATE_LIMIT": "50/minute", "REQUEST_TIMEOUT_S": "120"}


@dataclass(frozen=True)
class ApiAccount:
    """A logged-in test account of a live API server."""

    username: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class LiveApi:
    """One running API server: its URL, the environment it was started with, its accounts and its database."""

    database: str  # "sqlite" or "postgresql"
    url: str
    env: dict[str, str]
    accounts: dict[str, ApiAccount]

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"] or f"sqlite:///{Path(self.env['VAR_DIR']) / 'cxr.db'}"

    def client(self, role: str | None) -> httpx.Client:
        headers = self.accounts[role].headers if role else {}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)


def server_env(var_dir: Path, model: Path, library: ReferenceLibrary | None, database_url: str = "") -> dict[str, str]:
    """Environment of an API process: own var dir, the given model and library, small limits, a random first admin
    and token-signing secret (tests/test_authz_matrix.py mints expired tokens with it)."""
    if library is not None:
        shutil.copytree(library.folder, var_dir / "retrieval")
    return {
        "MODEL_PATH": str(model),
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url,
        "TORCH_THREADS": "1",
        "ADMIN_USERNAME": "test-admin",
        "ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "JWT_SECRET": secrets.token_urlsafe(48),
        **API_TEST_LIMITS,
        **API_TEST_SECURITY,
    }


def login(api_url: str, username: str, password: str) -> str:
    """POST /v1/auth/login -> the access token (fails the test on any other answer)."""
    response = httpx.post(f"{api_url}/v1/auth/login", json={"username": username, "password": password}, timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def create_accounts(api_url: str, env: dict[str, str]) -> dict[str, ApiAccount]:
    """One logged-in account per role: the settings admin, plus a radiologist and an annotator it creates."""
    admin_name, admin_password = env["ADMIN_USERNAME"], env["ADMIN_PASSWORD"]
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


@contextmanager
def started_api(env: dict[str, str], database: str) -> Iterator[LiveApi]:
    with running_api(env) as url:
        yield LiveApi(database, url, env, create_accounts(url, env))


@pytest.fixture(scope="session")
def sqlite_api(
    tmp_path_factory: pytest.TempPathFactory, shipped_model: Path, reference_library: ReferenceLibrary
) -> Iterator[LiveApi]:
    env = server_env(tmp_path_factory.mktemp("var-sqlite"), shipped_model, reference_library)
    with started_api(env, "sqlite") as api:
        yield api


@pytest.fixture(scope="session")
def postgresql_api(
    tmp_path_factory: pytest.TempPathFactory,
    shipped_model: Path,
    reference_library: ReferenceLibrary,
    postgres_server: str,
) -> Iterator[LiveApi]:
    with postgres_schema(postgres_server, "test_api") as database_url:
        env = server_env(tmp_path_factory.mktemp("var-postgresql"), shipped_model, reference_library, database_url)
        with started_api(env, "postgresql") as api:
            yield api


@pytest.fixture(params=DATABASES)
def live_api(request: pytest.FixtureRequest) -> LiveApi:
    """The session's API server on SQLite, then its twin on PostgreSQL: the test runs once on each."""
    return request.getfixturevalue(f"{request.param}_api")


@pytest.fixture(scope="session")
def api_env(sqlite_api: LiveApi) -> dict[str, str]:
    return sqlite_api.env


@pytest.fixture(scope="session")
def api_url(sqlite_api: LiveApi) -> str:
    """Base URL of the session's SQLite server (a real uvicorn process serving api.main:app on a free port)."""
    return sqlite_api.url


@pytest.fixture(scope="session")
def api_accounts(sqlite_api: LiveApi) -> dict[str, ApiAccount]:
    return sqlite_api.accounts


@pytest.fixture()
def client(live_api: LiveApi) -> Iterator[httpx.Client]:
    """HTTP client logged in as a radiologist (the clinical role), on each database in turn."""
    with live_api.client("radiologist") as http:
        yield http


@pytest.fixture()
def admin_client(live_api: LiveApi) -> Iterator[httpx.Client]:
    with live_api.client("admin") as http:
        yield http


@pytest.fixture()
def annotator_client(live_api: LiveApi) -> Iterator[httpx.Client]:
    with live_api.client("annotator") as http:
        yield http


@pytest.fixture()
def anonymous_client(live_api: LiveApi) -> Iterator[httpx.Client]:
    with live_api.client(None) as http:
        yield http


# --- CI: nothing is skipped ------------------------------------------------------------------------------------------


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Under CI a skipped test fails, saying what it would have skipped for (expected failures stay as they are)."""
    report: pytest.TestReport = yield
    if UNDER_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"CI=true does not allow skipping: {_skip_reason(report)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    """Under CI a module that skips itself at import (e.g. a missing browser) fails the run instead."""
    report: pytest.CollectReport = yield
    if UNDER_CI and report.outcome == "skipped":
        report.outcome = "failed"
        report.longrepr = f"CI=true does not allow skipping {collector.nodeid}: {_skip_reason(report)}"
    return report
