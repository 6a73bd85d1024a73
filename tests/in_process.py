"""A backend in this process (FastAPI's TestClient): for tests that count calls into the code or build their own
checkpoint, where the live uvicorn of tests/live_server.py cannot be reached."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from settings import Settings

ADMIN = ("in-process-admin", "In-Process-" + secrets.token_urlsafe(12))


def backend_settings(var_dir: Path, model_path: Path) -> Settings:
    """Embedded defaults under `var_dir`, serving `model_path`, with the admin account of ADMIN."""
    return Settings(
        var_dir=var_dir,
        model_path=model_path,
        database_url="",
        torch_threads=1,
        admin_username=ADMIN[0],
        admin_password=ADMIN[1],
        jwt_secret=secrets.token_urlsafe(48),
        rate_limit="100000/minute",
    )


@contextmanager
def workstation(settings: Settings) -> Iterator[TestClient]:
    """A freshly started backend (new Services: every in-process cache empty), logged in as the admin."""
    with TestClient(create_app(settings)) as client:
        login = {"username": ADMIN[0], "password": ADMIN[1]}
        token = client.post("/v1/auth/login", json=login).raise_for_status().json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client
