"""The outsider's server for the attack list: a real uvicorn process on the tiny checkpoint, started as an operator
would (`uvicorn api.main:app`, uvicorn's own proxy-header handling left on), with short login waits so that the
throttle's promises can be checked in seconds. Attacks use HTTP only; the var dir is read only to look for patient
identity in stored files."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.live_server import running_api


@dataclass(frozen=True)
class Target:
    url: str
    var_dir: Path
    admin: dict[str, str]
    radiologist: dict[str, str]
    annotator: dict[str, str]
    passwords: dict[str, str]

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, headers=headers or {})


def _login(url: str, username: str, password: str) -> dict[str, str]:
    answer = httpx.post(f"{url}/v1/auth/login", json={"username": username, "password": password}, timeout=60)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@pytest.fixture(scope="session")
def target(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    var_dir = tmp_path_factory.mktemp("attack-var")
    admin_password = secrets.token_urlsafe(18)
    env = {
        "VAR_DIR": str(var_dir),
        "MODEL_PATH": str(tiny_checkpoint),
        "DATABASE_URL": "",
        "TORCH_THREADS": "1",
        "ADMIN_USERNAME": "attack-admin",
        "ADMIN_PASSWORD": admin_password,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "RATE_LIMIT": "100000/minute",
        "LOGIN_RATE_LIMIT": "5/hour",
        "LOGIN_ACCOUNT_RATE_LIMIT": "10/hour",
        "LOGIN_BACKOFF_MAX_S": "2",
        "MAX_UPLOAD_MB": "2",
        "CORS_ORIGINS": "https://ws.example.org",
    }
    with running_api(env) as url:
        admin = _login(url, "attack-admin", admin_password)
        passwords, headers = {"attack-admin": admin_password}, {}
        for role in ("radiologist", "annotator"):
            username, password = f"attack-{role}", secrets.token_urlsafe(18)
            body = {"username": username, "password": password, "role": role}
            assert httpx.post(f"{url}/v1/users", json=body, headers=admin, timeout=60).status_code == 201
            passwords[username], headers[role] = password, _login(url, username, password)
        yield Target(url, var_dir, admin, headers["radiologist"], headers["annotator"], passwords)
