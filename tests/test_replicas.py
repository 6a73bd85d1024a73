"""Two API replicas behind one workstation: one SQLite database and one Redis (RATE_LIMIT_STORAGE_URI), so a user's
rate limit is one budget however the requests are spread over the replicas."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.conftest import login, make_tiny_checkpoint, server_env
from tests.live_server import running_api


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    root = tmp_path_factory.mktemp("replicas")
    env = server_env(root / "var", make_tiny_checkpoint(root / "tiny.pt"), library=None)
    env |= {"RATE_LIMIT": "6/hour", "RATE_LIMIT_STORAGE_URI": redis_url}
    with ExitStack() as stack:
        urls = [stack.enter_context(running_api(env)) for _ in range(2)]  # the same var dir, database and Redis
        yield urls, env


def test_a_users_rate_limit_is_shared_by_the_replicas(replicas: tuple[list[str], dict[str, str]]) -> None:
    urls, env = replicas
    headers = {"Authorization": f"Bearer {login(urls[0], env['ADMIN_USERNAME'], env['ADMIN_PASSWORD'])}"}
    statuses = [httpx.get(f"{urls[i % 2]}/v1/auth/me", headers=headers, timeout=60).status_code for i in range(8)]
    assert statuses == [200] * 6 + [429] * 2  # 6 per hour in all, although each replica saw only 4
