"""GET /v1/monitoring/summary as the admin reads it: percentiles, throughput, error rate and prediction mix from the
rows kept in the database (so a restart keeps them), old rows pruned by MONITORING_RETENTION_DAYS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring import HISTORY, summarize
from monitoring.models import PredictionEvent, RequestEvent
from storage import Database, migrate_database
from tests.conftest import make_tiny_checkpoint
from tests.monitoring_support import in_process_api, radiograph_png

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture()
def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'history.db'}")
    migrate_database(db)
    yield db
    HISTORY.detach()
    db.dispose()


def add_requests(database: Database, at: datetime, durations_ms: list[float], status: int = 200) -> None:
    with database.transaction() as session:
        session.add_all(
            RequestEvent(at=at, method="POST", route="/v1/studies", status=status, duration_ms=d) for d in durations_ms
        )


def test_summary_figures_from_stored_rows(database: Database) -> None:
    recent = NOW - timedelta(minutes=10)
    add_requests(database, recent, [float(ms) for ms in range(1, 96)])  # 1..95 ms
    add_requests(database, recent, [96.0, 97.0, 98.0, 99.0, 100.0], status=503)
    add_requests(database, NOW - timedelta(hours=3), [5000.0] * 20)  # slow, but only in the 24 h window
    with database.transaction() as session:
        for label, confidence, uncertain in (
            ("PNEUMONIA", 0.9, False),
            ("PNEUMONIA", 0.7, True),
            ("NORMAL", 0.8, False),
        ):
            session.add(PredictionEvent(at=recent, task="pneumonia", label=label, confidence=confidence,
                                        uncertain=uncertain, out_of_scope=False, model_version="v1"))  # fmt: skip

    hour = summarize(database, "1h", NOW)
    assert hour.totals.requests == 100 and hour.totals.errors == 5 and hour.totals.error_rate == 0.05
    assert (hour.totals.p50_ms, hour.totals.p95_ms, hour.totals.p99_ms) == (50.0, 95.0, 99.0)
    assert hour.throughput_per_min == pytest.approx(100 / 60)
    assert hour.totals.prediction_mix == {"PNEUMONIA": 2, "NORMAL": 1}
    assert hour.totals.mean_confidence == pytest.approx(0.8) and hour.totals.uncertain_share == pytest.approx(1 / 3)
    assert len(hour.series) == 12  # 5-minute buckets
    assert sum(point.requests for _, point in hour.series) == 100
    day = summarize(database, "24h", NOW)
    assert day.totals.requests == 120 and day.totals.p95_ms == 5000.0 and len(day.series) == 24
    assert summarize(database, "7d", NOW).totals.requests == 120


def test_old_rows_are_pruned_after_the_retention(database: Database) -> None:
    add_requests(database, NOW - timedelta(days=9), [10.0] * 3)
    add_requests(database, NOW - timedelta(days=6), [10.0] * 2)
    HISTORY.attach(database, flush_interval_s=0, retention_days=8)
    assert HISTORY.prune(NOW) == 3
    assert summarize(database, "7d", NOW).totals.requests == 2


def test_the_summary_endpoint_counts_real_requests_and_survives_a_restart(tmp_path: Path) -> None:
    model = make_tiny_checkpoint(tmp_path / "tiny.pt", threshold=0.3)
    api = in_process_api(tmp_path / "var", model, monitoring_flush_interval_s=0)  # written when the summary is read
    with api.client() as http:
        answers = [
            http.post("/predict", files={"file": ("x.png", radiograph_png(seed), "image/png")}).json()
            for seed in (1, 2)
        ]
        assert http.get("/v1/cases/absent").status_code == 404
        http.get("/health"), http.get("/ready"), http.get("/metrics")  # probes and scrapes are not kept
        first = http.get("/v1/monitoring/summary", params={"window": "1h"}).json()
        assert http.get("/v1/monitoring/summary", params={"window": "2h"}).status_code == 422
    with api.client() as http:  # a new process on the same database
        again = http.get("/v1/monitoring/summary", params={"window": "1h"}).json()

    totals = first["totals"]
    # POST /v1/auth/login, 2 x POST /predict, GET /v1/cases/absent (the summary request itself ends after it is read)
    assert totals["requests"] == 4 and totals["errors"] == 0 and totals["error_rate"] == 0
    labels = [answer["prediction"] for answer in answers]
    assert totals["prediction_mix"] == {label: labels.count(label) for label in set(labels)}
    assert totals["mean_confidence"] == pytest.approx(sum(a["confidence"] for a in answers) / 2, abs=1e-5)
    assert totals["p50_ms"] > 0 and totals["p99_ms"] >= totals["p95_ms"] >= totals["p50_ms"]
    assert len(first["series"]) == 12
    # After the restart: the same history plus what came since (first summary, the 422, the second login).
    assert again["totals"]["prediction_mix"] == totals["prediction_mix"]
    assert again["totals"]["requests"] == 4 + 3
