"""Helpers of the monitoring tests (tests/test_monitoring*.py): an in-process API on its own var dir and SQLite file
with a tiny model, logged-in callers, and a Prometheus text parser that reads one sample."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from settings import Settings
from tests.factories import png_bytes, synthetic_radiograph, to_stored

ADMIN = "mon-admin"
LOOPBACK = ("127.0.0.1", 50000)
OUTSIDE = ("203.0.113.7", 50000)  # TEST-NET-3: an address that is not this machine


@dataclass
class InProcessApi:
    settings: Settings
    password: str

    @contextmanager
    def client(self, address: tuple[str, int] = OUTSIDE, *, login: bool = True) -> Iterator[TestClient]:
        """A TestClient seen by the app as calling from `address`, logged in as the admin unless `login` is False."""
        with TestClient(create_app(self.settings), client=address) as http:
            if login:
                answer = http.post("/v1/auth/login", json={"username": ADMIN, "password": self.password})
                assert answer.status_code == 200, answer.text
                http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
            yield http


def in_process_api(var_dir: Path, model: Path, **overrides: Any) -> InProcessApi:
    password = secrets.token_urlsafe(18)
    settings = Settings(
        var_dir=var_dir,
        model_path=model,
        database_url="",
        admin_username=ADMIN,
        admin_password=password,
        jwt_secret=secrets.token_urlsafe(48),
        torch_threads=1,
        uncertainty_passes=2,
        rate_limit="100000/minute",
        **overrides,
    )
    return InProcessApi(settings, password)


def radiograph_png(seed: int) -> bytes:
    return png_bytes(to_stored(synthetic_radiograph(128, 128, seed=seed)))


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (0.0 when absent, as Prometheus reads it)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0
