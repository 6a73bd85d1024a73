"""Alerts as the on-call admin meets them: real receivers on loopback (an HTTP server for the webhooks, aiosmtpd for
e-mail) get each alert once, acknowledging and resolving behave, a receiver that is down is retried with backoff
and then shows on /ready and GET /v1/alerts, and several processes together raise one alert."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from monitoring import (
    RULES,
    AlertEngine,
    AlertStore,
    ComponentCheck,
    Figures,
    LabelledPrediction,
    Notification,
    Observations,
    Thresholds,
    WebhookChannel,
    channels_from_settings,
    deliver,
    system_stats,
)
from settings import Settings
from storage import Database, migrate_database
from tests.conftest import DATABASES, make_tiny_checkpoint, postgres_schema
from tests.live_server import free_port
from tests.monitoring_support import in_process_api

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
QUIET = Figures(0, 0, None, None, None, 0, {}, None, None, None)


class HttpReceiver:
    """A webhook receiver on loopback that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailHandler:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"


@pytest.fixture()
def webhook() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture()
def slack() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture()
def mailbox() -> Iterator[tuple[MailHandler, int]]:
    handler, port = MailHandler(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture()
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'alerts.db'}")
    migrate_database(database)
    yield database
    database.dispose()


def observations(disk_percent: float = 50.0, **changes: object) -> Observations:
    stats = replace(system_stats(Path("/")), cpu_percent=10.0, memory_percent=10.0, disk_percent=disk_percent)
    return replace(Observations(QUIET, stats, [ComponentCheck("model", True, "v1")]), **changes)


def test_every_channel_delivers_to_a_real_receiver(
    sqlite_db: Database, webhook: HttpReceiver, slack: HttpReceiver, mailbox: tuple[MailHandler, int]
) -> None:
    mail, port = mailbox
    settings = Settings(alert_webhook_url=webhook.url, alert_slack_webhook_url=slack.url, alert_smtp_host="127.0.0.1",
                        alert_smtp_port=port, alert_smtp_to="oncall@example.org, pacs@example.org")  # fmt: skip
    channels = channels_from_settings(settings)
    assert [channel.name for channel in channels] == ["webhook", "slack", "smtp"]
    engine = AlertEngine(AlertStore(sqlite_db), channels, lambda: observations(disk_percent=97.0),
                         workstation="Ward 3 reading room")  # fmt: skip
    engine.evaluate(T0)
    title = "[FIRING] Ward 3 reading room: disk_exhausted (critical)"
    assert len(webhook.bodies) == 1
    assert webhook.bodies[0]["rule"] == "disk_exhausted" and webhook.bodies[0]["state"] == "firing"
    assert webhook.bodies[0]["message"] == "disk at 97 % (alert above 90 %)" and webhook.bodies[0]["title"] == title
    assert slack.bodies == [{"text": f"*{title}*\ndisk at 97 % (alert above 90 %)"}]
    assert len(mail.messages) == 1 and mail.messages[0]["Subject"] == title
    assert mail.messages[0]["To"] == "oncall@example.org, pacs@example.org"
    statuses = {row.channel: (row.ok, row.detail) for row in engine.store.channel_statuses()}
    assert statuses["smtp"] == (True, f"delivered to smtp://127.0.0.1:{port} to 2 recipient(s)")
    assert statuses["slack"][1] == f"delivered to {slack.url.split('/hooks')[0]}"  # the token in the path stays secret


def test_firing_acknowledged_resolved_with_dedup_and_cooldown(sqlite_db: Database, webhook: HttpReceiver) -> None:
    disk = {"value": 97.0}
    store = AlertStore(sqlite_db, cooldown=timedelta(minutes=15))
    engine = AlertEngine(store, [WebhookChannel(webhook.url)], lambda: observations(disk_percent=disk["value"]))

    def states() -> list[tuple[int, str]]:
        return [(alert.id, alert.state) for alert in reversed(store.alerts())]

    def sent() -> list[str]:
        return [f"{body['alert_id']}:{body['state']}" for body in webhook.bodies]

    engine.evaluate(T0)
    engine.evaluate(T0 + timedelta(minutes=1))  # still full: the same alert, no second message
    assert states() == [(1, "firing")] and sent() == ["1:firing"]
    assert store.acknowledge(1, "dr-admin").state == "acknowledged"
    engine.evaluate(T0 + timedelta(minutes=20))  # acknowledged: no reminder after the cooldown
    assert sent() == ["1:firing"] and store.alerts()[0].acknowledged_by == "dr-admin"
    disk["value"] = 40.0
    engine.evaluate(T0 + timedelta(minutes=21))
    assert states() == [(1, "resolved")] and sent() == ["1:firing", "1:resolved"]
    disk["value"] = 97.0
    engine.evaluate(T0 + timedelta(minutes=25))  # flapping within the cooldown: reopened quietly
    assert states() == [(1, "firing")] and sent() == ["1:firing", "1:resolved"]
    disk["value"] = 40.0
    engine.evaluate(T0 + timedelta(minutes=26))
    disk["value"] = 97.0
    engine.evaluate(T0 + timedelta(minutes=60))  # past the cooldown: a new alert
    engine.evaluate(T0 + timedelta(minutes=70))
    engine.evaluate(T0 + timedelta(minutes=76))  # nobody acknowledged it for 16 minutes: one reminder
    assert states() == [(1, "resolved"), (2, "firing")]
    assert sent() == ["1:firing", "1:resolved", "1:resolved", "2:firing", "2:firing"]


@pytest.mark.parametrize("db", DATABASES)
def test_several_processes_raise_one_alert(db: str, request: pytest.FixtureRequest, tmp_path: Path,
                                           webhook: HttpReceiver) -> None:  # fmt: skip
    def run(url: str) -> None:
        databases = [Database(url) for _ in range(3)]  # three processes' engines, each with its own connections
        engines = [
            AlertEngine(AlertStore(d), [WebhookChannel(webhook.url)], lambda: observations(97.0)) for d in databases
        ]
        threads = [threading.Thread(target=e.evaluate, args=(T0,)) for e in engines for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [(a.rule, a.state) for a in engines[0].store.alerts()] == [("disk_exhausted", "firing")]
        for database in databases:
            database.dispose()

    if db == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        migrate_database(Database(url))
        run(url)
    else:
        with postgres_schema(request.getfixturevalue("postgres_server"), "test_alerts") as url:
            migrate_database(Database(url))
            run(url)
    assert len(webhook.bodies) == 1


def test_expert_accuracy_reports_no_data_until_labels_exist() -> None:
    rule, thresholds = RULES["expert_accuracy_low"], Thresholds(min_expert_labels=20)
    none_yet = rule.check(observations(expert_labels=None), thresholds)
    assert (none_yet.firing, none_yet.message) == (None, "no data: 0 expert-labelled predictions, 20 needed")
    labels = [LabelledPrediction("PNEUMONIA", "PNEUMONIA")] * 18 + [LabelledPrediction("PNEUMONIA", "NORMAL")] * 7
    low = rule.check(observations(expert_labels=labels), thresholds)
    assert low.firing is True and low.message == "accuracy on 25 expert-labelled predictions is 72% (alert below 80%)"
    good = labels[:18] + labels[18:20]
    assert rule.check(observations(expert_labels=good), thresholds).firing is False  # 18 / 20 = 90 %


def test_a_down_receiver_is_retried_with_backoff(webhook: HttpReceiver) -> None:
    down = WebhookChannel(f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there
    waits: list[float] = []
    sample = Notification(7, "disk_exhausted", "firing", "critical", "disk at 97 %", 97.0, T0, "Test")
    outcome = deliver(down, sample, retries=3, backoff_s=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0] and outcome.attempts == 4 and outcome.ok is False
    assert (
        outcome.detail.startswith("http://127.0.0.1:")
        and "unreachable after 4 attempts: ConnectError" in outcome.detail
    )
    assert deliver(WebhookChannel(webhook.url), sample, retries=3, backoff_s=0.5, sleep=waits.append).attempts == 1


def test_alerts_over_http_and_a_down_channel_on_ready(tmp_path: Path, slack: HttpReceiver) -> None:
    model = make_tiny_checkpoint(tmp_path / "tiny.pt", threshold=0.3)
    dead = f"http://127.0.0.1:{free_port()}/hook"
    api = in_process_api(tmp_path / "var", model, alert_interval_s=0.3, alert_disk_percent=0.0, alert_retries=2,
                         alert_backoff_s=0.05, alert_webhook_url=dead, alert_slack_webhook_url=slack.url)  # fmt: skip
    with api.client() as http:
        deadline = time.time() + 60
        while time.time() < deadline:
            listing = http.get("/v1/alerts").json()
            if len(listing["channels"]) == 2:
                break
            time.sleep(0.2)
        disk = next(alert for alert in listing["alerts"] if alert["rule"] == "disk_exhausted")
        assert disk["state"] == "firing" and disk["message"].endswith("(alert above 0 %)")
        channels = {row["channel"]: row for row in listing["channels"]}
        assert channels["slack"]["ok"] is True
        assert channels["webhook"]["ok"] is False
        assert "unreachable after 3 attempts: ConnectError" in channels["webhook"]["detail"]
        ready = http.get("/ready")
        assert ready.status_code == 200  # a receiver that is down does not take the workstation out of service
        check = ready.json()["checks"]["alert_channels"]
        assert check["ok"] is False and check["required"] is False and "webhook: " in check["detail"]
        acknowledged = http.post(f"/v1/alerts/{disk['id']}/acknowledge").json()
        assert acknowledged["state"] == "acknowledged" and acknowledged["acknowledged_by"] == "mon-admin"
        assert http.get("/v1/alerts", params={"state": "acknowledged"}).json()["alerts"][0]["id"] == disk["id"]
        missing = http.post("/v1/alerts/999999/acknowledge")
        assert missing.status_code == 404 and missing.json()["detail"] == "No alert has id 999999."
    assert any(body["text"].startswith("*[FIRING] CXR Workstation: disk_exhausted") for body in slack.bodies)
