"""Users and API keys over HTTP on the live server, once with SQLite and once with PostgreSQL (`live_api`).

An API key's expiry is tested by moving its expiry date into the past in the server's own database, the way the
clock would, and asking the server again.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import LiveApi, login


def new_password() -> str:
    return "Acct-" + secrets.token_urlsafe(18)


def me(api: LiveApi, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{api.url}/v1/auth/me", headers=headers, timeout=60)


def test_an_admin_creates_changes_and_deactivates_a_user(live_api: LiveApi, admin_client: httpx.Client) -> None:
    username, password = f"acct-{secrets.token_hex(4)}", new_password()
    created = admin_client.post("/v1/users", json={"username": username, "password": password, "role": "radiologist"})
    assert created.status_code == 201, created.text
    user = created.json()
    assert (user["username"], user["role"], user["active"]) == (username, "radiologist", True)
    assert "password" not in created.text.lower().replace('"password_changed_at"', "")
    token = {"Authorization": f"Bearer {login(live_api.url, username, password)}"}
    assert me(live_api, token).json() == {"id": user["id"], "username": username, "role": "radiologist",
                                          "kind": "user"}  # fmt: skip
    assert username in [u["username"] for u in admin_client.get("/v1/users").json()]

    changed = admin_client.patch(f"/v1/users/{user['id']}", json={"role": "annotator"})
    assert changed.status_code == 200 and changed.json()["role"] == "annotator"
    stale = me(live_api, token)
    assert stale.status_code == 401 and "log in again" in stale.json()["detail"]
    token = {"Authorization": f"Bearer {login(live_api.url, username, password)}"}
    assert me(live_api, token).json()["role"] == "annotator"

    assert admin_client.delete(f"/v1/users/{user['id']}").status_code == 204
    assert admin_client.get(f"/v1/users/{user['id']}").json()["active"] is False
    assert me(live_api, token).status_code == 401
    refused = httpx.post(f"{live_api.url}/v1/auth/login", json={"username": username, "password": password})
    assert refused.status_code == 401


def test_an_api_key_acts_with_its_role_until_revoked(live_api: LiveApi, admin_client: httpx.Client) -> None:
    created = admin_client.post("/v1/api-keys", json={"name": "queue-robot", "role": "annotator"})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["expires_at"] is None and key["revoked_at"] is None and key["key"].startswith(key["prefix"])
    headers = {"X-API-Key": key["key"]}
    assert me(live_api, headers).json() == {"id": key["id"], "username": "queue-robot", "role": "annotator",
                                            "kind": "api_key"}  # fmt: skip
    listed = admin_client.get("/v1/api-keys")
    assert key["id"] in [k["id"] for k in listed.json()] and key["key"] not in listed.text
    denied = httpx.get(f"{live_api.url}/v1/cases", headers=headers)
    assert denied.status_code == 403 and denied.json()["detail"] == "Your role (annotator) may not call GET /v1/cases."
    assert admin_client.delete(f"/v1/api-keys/{key['id']}").status_code == 204
    revoked = me(live_api, headers)
    assert revoked.status_code == 401 and revoked.json()["detail"] == "The API key has been revoked."


def move_expiry_into_the_past(api: LiveApi, key_id: str) -> None:
    """Set the key's stored expiry two days back, keeping the format the database already holds."""
    engine = create_engine(api.database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            stored = connection.execute(text("SELECT expires_at FROM api_keys WHERE id = :id"), {"id": key_id}).scalar()
            assert stored is not None, "the key has no expiry date"
            if isinstance(stored, str):  # SQLite keeps text
                value = datetime.fromisoformat(stored) - timedelta(days=2)
                past: object = value.isoformat(sep=" " if " " in stored else "T")
            else:
                past = stored - timedelta(days=2)
            connection.execute(
                text("UPDATE api_keys SET expires_at = :past WHERE id = :id"), {"past": past, "id": key_id}
            )
    finally:
        engine.dispose()


def test_an_api_key_stops_working_when_it_expires(live_api: LiveApi, admin_client: httpx.Client) -> None:
    created = admin_client.post("/v1/api-keys", json={"name": "one-day", "role": "radiologist", "expires_in_days": 1})
    assert created.status_code == 201, created.text
    key = created.json()
    expires_at = datetime.fromisoformat(key["expires_at"].replace("Z", "+00:00"))
    assert abs(expires_at - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=5)
    headers = {"X-API-Key": key["key"]}
    assert me(live_api, headers).status_code == 200  # still valid today
    move_expiry_into_the_past(live_api, key["id"])
    expired = me(live_api, headers)
    assert expired.status_code == 401 and expired.json()["detail"] == "The API key has expired."
    assert httpx.get(f"{live_api.url}/v1/cases", headers=headers).status_code == 401
    listed = {k["id"]: k for k in admin_client.get("/v1/api-keys").json()}
    assert listed[key["id"]]["revoked_at"] is None  # expired, not revoked


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_an_api_key_lifetime_out_of_range_is_refused(admin_client: httpx.Client, days: int) -> None:
    refused = admin_client.post("/v1/api-keys", json={"name": "bad", "role": "admin", "expires_in_days": days})
    assert refused.status_code == 422 and "expires_in_days" in refused.text
