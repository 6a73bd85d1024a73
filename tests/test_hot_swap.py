"""Hot swap and blue-green on real backends: two uvicorn processes on one database and one MLflow registry
(tests/model_registry_support.py: v1 the shipped model, champion; v2 its site variant).

- 16 clients post /predict to the first backend without pause while an admin promotes v2 and rolls back, twice:
  not one request fails, every answer names v1 or v2, and every request sent after a switch answered (and ended
  before the next one began) carries the version switched to. The films are all different, so every answer is a
  real model pass, never a cached one.
- The second backend was told nothing: it follows each alias move within MODEL_ALIAS_POLL_S (the registry is the
  truth), and a rollback made through it reaches the first one the same way.
- A backend started after a promotion serves the promoted version, loads the champion before it beside it
  (blue-green), and rolls back to it without a load.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveApi, server_env, started_api
from tests.factories import png_bytes, synthetic_radiograph, to_stored
from tests.live_server import running_api
from tests.model_registry_support import MODEL_NAME, RegisteredPair, register_pair

CLIENTS = 16
POLL_S = 2
FOLLOW_WITHIN_S = 3 * POLL_S + 4  # a poll interval, the load and warm-up of a model on a busy 2-core machine


@dataclass(frozen=True)
class Answer:
    sent: float
    done: float
    status: int
    version: str
    text: str


@dataclass(frozen=True)
class Switch:
    sent: float
    done: float
    version: str  # the checkpoint version served after it
    swap_ms: float


@dataclass(frozen=True)
class Backends:
    pair: RegisteredPair
    first: LiveApi
    second_url: str


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory, shipped_model: Path) -> Iterator[Backends]:
    root = tmp_path_factory.mktemp("hot-swap")
    var_dir = root / "var"
    var_dir.mkdir()
    pair = register_pair(var_dir, shipped_model)
    env = server_env(var_dir, shipped_model, library=None) | {"MODEL_ALIAS_POLL_S": str(POLL_S)}
    with ExitStack() as stack:
        first = stack.enter_context(started_api(env, "sqlite"))
        second = stack.enter_context(running_api(env))  # the same var dir: database, images and MLflow store
        yield Backends(pair, first, second)


def films(count: int) -> list[bytes]:
    return [png_bytes(to_stored(synthetic_radiograph(160, 160, seed=seed))) for seed in range(count)]


def post_until(url: str, token: str, next_film: Callable[[], bytes], stop: threading.Event, out: list[Answer]) -> None:
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as http:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                answer = http.post("/predict", files={"file": ("film.png", next_film())})
                version = answer.json().get("model_version", "") if answer.status_code == 200 else ""
                out.append(Answer(sent, time.monotonic(), answer.status_code, version, answer.text[:200]))
            except httpx.HTTPError as exc:  # a dropped connection is a failed request too
                out.append(Answer(sent, time.monotonic(), 0, "", repr(exc)))


def switch(admin: httpx.Client, action: str, body: dict) -> Switch:
    sent = time.monotonic()
    answer = admin.post(f"/v1/models/{MODEL_NAME}/{action}", json=body)
    assert answer.status_code == 200, answer.text
    return Switch(sent, time.monotonic(), answer.json()["serving"], answer.json()["swap_ms"])


def model_version(url: str, token: str) -> str:
    answer = httpx.get(f"{url}/model/info", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["version"])


def seconds_until_serving(url: str, token: str, version: str) -> float:
    started = time.monotonic()
    while model_version(url, token) != version:
        assert time.monotonic() - started < FOLLOW_WITHIN_S, f"{url} still serves another version than {version}"
        time.sleep(0.25)
    return time.monotonic() - started


def test_sixteen_clients_see_no_failure_while_the_champion_switches(backends: Backends) -> None:
    pair, api = backends.pair, backends.first
    token = api.accounts["radiologist"].token
    payloads = itertools.cycle(films(400))  # distinct films: each answer is a model pass, not the cache
    lock = threading.Lock()

    def next_film() -> bytes:
        with lock:
            return next(payloads)

    answers: list[Answer] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=post_until, args=(api.url, token, next_film, stop, answers), daemon=True)
        for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    switches: list[Switch] = []
    with api.client("admin") as admin:
        time.sleep(3)
        for round_ in range(2):
            switches.append(switch(admin, "promote", {"version": 2, "reason": f"Site variant, round {round_ + 1}."}))
            time.sleep(3)
            switches.append(switch(admin, "rollback", {"reason": f"Back to the shipped model, round {round_ + 1}."}))
            time.sleep(3)
    stop.set()
    for client in clients:
        client.join(timeout=180)

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    assert {a.version for a in answers} == {pair.shipped, pair.site}
    assert [s.version for s in switches] == [pair.site, pair.shipped] * 2
    assert switches[2].swap_ms < 100 and switches[1].swap_ms < 100  # both versions warm: no load
    for current, following in itertools.pairwise([*switches, Switch(float("inf"), 0, "", 0)]):
        after = [a for a in answers if a.sent > current.done and a.done < following.sent]
        assert after and {a.version for a in after} == {current.version}, (current, len(after))
    print(
        f"\n{len(answers)} requests by {CLIENTS} clients, 0 failed; swap ms "
        f"{[s.swap_ms for s in switches]}; p95 latency "
        f"{sorted(a.done - a.sent for a in answers)[int(0.95 * len(answers))] * 1000:.0f} ms"
    )


def test_the_other_backend_follows_the_registry_within_seconds(backends: Backends) -> None:
    pair, api, second = backends.pair, backends.first, backends.second_url
    token = api.accounts["admin"].token  # the replicas share the database: one login serves both
    assert model_version(second, token) == model_version(api.url, token) == pair.shipped
    with api.client("admin") as admin:
        switch(admin, "promote", {"version": 2, "reason": "Promoted through the first backend."})
    followed = seconds_until_serving(second, token, pair.site)
    with httpx.Client(base_url=second, headers={"Authorization": f"Bearer {token}"}, timeout=120) as other:
        rolled = other.post(f"/v1/models/{MODEL_NAME}/rollback", json={"reason": "Rolled back through the second."})
        assert rolled.status_code == 200 and rolled.json()["serving"] == pair.shipped, rolled.text
    followed_back = seconds_until_serving(api.url, token, pair.shipped)
    print(f"\nthe second backend followed in {followed:.1f} s, the first in {followed_back:.1f} s")


def test_a_restarted_backend_keeps_the_previous_champion_warm_for_an_instant_rollback(backends: Backends) -> None:
    pair, api = backends.pair, backends.first
    token = api.accounts["admin"].token
    with api.client("admin") as admin:
        switch(admin, "promote", {"version": 2, "reason": "Before the restart."})
    with (
        running_api(api.env) as restarted,
        httpx.Client(base_url=restarted, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http,
    ):
        assert model_version(restarted, token) == pair.site  # the promoted model, not MODEL_PATH's
        deadline = time.monotonic() + 60
        while not versions_warm(http)[1]:
            assert time.monotonic() < deadline, "the previous champion was not loaded beside the champion"
            time.sleep(0.5)
        rolled = http.post(f"/v1/models/{MODEL_NAME}/rollback", json={"reason": "Instant after a restart."})
        assert rolled.status_code == 200 and rolled.json()["serving"] == pair.shipped, rolled.text
        assert rolled.json()["swap_ms"] < 100


def versions_warm(http: httpx.Client) -> dict[int, bool]:
    listing = http.get("/v1/models")
    assert listing.status_code == 200, listing.text
    (model,) = listing.json()["models"]
    return {version["version"]: version["warm"] for version in model["versions"]}
