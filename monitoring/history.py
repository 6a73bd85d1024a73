"""Request and prediction history in the database, and the summary an admin reads over 1 h, 24 h or 7 d.

Each process buffers its events in memory (`HISTORY`, fed by `record_request` / `record_predictions` in
monitoring/metrics.py, so no call site has to know) and a background thread writes them every
MONITORING_FLUSH_INTERVAL_S; a crash loses at most that much history, never an answer. Rows older than
MONITORING_RETENTION_DAYS are deleted by the same thread. Probes and scrapes (/health, /ready, /metrics) are not
kept: they would swamp the figures the summary is for.

The summary reads every row of the window (7 days on a busy workstation is some 10^5-10^6 small rows): exact
percentiles, no pre-aggregation to go stale or disagree between processes.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Select, delete, select

from monitoring.models import PredictionEvent, RequestEvent
from storage import Database

logger = logging.getLogger("cxr.monitoring")

NOT_KEPT_ROUTES = frozenset({"/health", "/ready", "/metrics"})
WINDOWS: dict[str, tuple[timedelta, timedelta]] = {  # window -> (length, bucket of the time series)
    "1h": (timedelta(hours=1), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
}
MAX_BUFFER = 100_000  # events held while the database is unreachable; beyond, the oldest are dropped


@dataclass(frozen=True)
class PredictionFacts:
    task: str
    label: str
    confidence: float
    uncertain: bool
    out_of_scope: bool
    model_version: str


class EventHistory:
    """The process's buffer of request and prediction events, written to the attached database in the background."""

    def __init__(self) -> None:
        self._requests: deque[RequestEvent] = deque(maxlen=MAX_BUFFER)
        self._predictions: deque[PredictionEvent] = deque(maxlen=MAX_BUFFER)
        self._lock = threading.Lock()
        self._database: Database | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retention = timedelta(days=8)

    def attach(self, database: Database, flush_interval_s: float, retention_days: float) -> None:
        """Start writing to `database` (every `flush_interval_s`; 0: only on `flush()`), pruning old rows."""
        self.detach()
        self._database, self._retention = database, timedelta(days=retention_days)
        self._stop = threading.Event()
        if flush_interval_s > 0:
            self._thread = threading.Thread(target=self._run, args=(flush_interval_s,), daemon=True, name="history")
            self._thread.start()

    def detach(self) -> None:
        """Write what is buffered and stop (at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._database is not None:
            self.flush()
        self._database = None

    def add_request(self, method: str, route: str, status: int, seconds: float) -> None:
        if route in NOT_KEPT_ROUTES:
            return
        event = RequestEvent(
            at=datetime.now(UTC), method=method, route=route, status=status, duration_ms=seconds * 1000
        )
        with self._lock:
            self._requests.append(event)

    def add_predictions(self, facts: Iterable[PredictionFacts]) -> None:
        now = datetime.now(UTC)
        events = [PredictionEvent(at=now, **vars(fact)) for fact in facts]
        with self._lock:
            self._predictions.extend(events)

    def flush(self) -> int:
        """Write the buffered events now; returns how many (0 when no database is attached or it fails)."""
        database = self._database
        if database is None:
            return 0
        with self._lock:
            events = [*self._requests, *self._predictions]
            self._requests.clear()
            self._predictions.clear()
        if not events:
            return 0
        try:
            with database.transaction() as session:
                session.add_all(events)
        except Exception:  # the driver can raise anything; keep the events for the next try
            logger.exception("monitoring history not written; %d events kept for the next try", len(events))
            self._requeue(events)
            return 0
        return len(events)

    def _requeue(self, events: Sequence[RequestEvent | PredictionEvent]) -> None:
        with self._lock:
            for event in events:
                (self._requests if isinstance(event, RequestEvent) else self._predictions).appendleft(event)

    def prune(self, now: datetime | None = None) -> int:
        """Delete rows older than the retention; returns how many."""
        if self._database is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - self._retention
        deleted = 0
        with self._database.transaction() as session:
            for table in (RequestEvent, PredictionEvent):
                deleted += session.execute(delete(table).where(table.at < cutoff)).rowcount or 0
        return deleted

    def _run(self, interval_s: float) -> None:
        last_prune = datetime.min.replace(tzinfo=UTC)
        while not self._stop.wait(interval_s):
            self.flush()
            if datetime.now(UTC) - last_prune > timedelta(hours=1):
                try:
                    self.prune()
                except Exception:  # as in flush: try again next hour
                    logger.exception("monitoring history not pruned")
                last_prune = datetime.now(UTC)


HISTORY = EventHistory()


# --- the summary ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Requests and predictions of one stretch of time."""

    requests: int
    errors: int  # 5xx answers: the workstation failed (4xx are the caller's mistakes)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    predictions: int
    prediction_mix: dict[str, int]
    mean_confidence: float | None
    uncertain_share: float | None
    out_of_scope_share: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Summary:
    window: str
    start: datetime
    end: datetime
    totals: Figures
    series: list[tuple[datetime, Figures]] = field(default_factory=list)

    @property
    def throughput_per_min(self) -> float:
        return self.totals.requests / ((self.end - self.start).total_seconds() / 60)


def figures(requests: Sequence[RequestEvent], predictions: Sequence[PredictionEvent]) -> Figures:
    durations = np.array([r.duration_ms for r in requests], dtype=float)
    p50, p95, p99 = (
        (float(v) for v in np.percentile(durations, [50, 95, 99], method="inverted_cdf"))
        if len(durations)
        else (None, None, None)
    )
    count = len(predictions)
    return Figures(
        requests=len(requests),
        errors=sum(1 for r in requests if r.status >= 500),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        predictions=count,
        prediction_mix=dict(Counter(p.label for p in predictions)),
        mean_confidence=float(np.mean([p.confidence for p in predictions])) if count else None,
        uncertain_share=sum(p.uncertain for p in predictions) / count if count else None,
        out_of_scope_share=sum(p.out_of_scope for p in predictions) / count if count else None,
    )


def summarize(database: Database, window: str, now: datetime | None = None) -> Summary:
    """Figures of the last `window` ("1h", "24h" or "7d") from the stored rows, in total and per time bucket."""
    length, bucket = WINDOWS[window]
    end = now or datetime.now(UTC)
    start = end - length
    with database.session() as session:
        requests = list(session.scalars(_in_window(RequestEvent, start, end)))
        predictions = list(session.scalars(_in_window(PredictionEvent, start, end)))
    request_times, prediction_times = [r.at for r in requests], [p.at for p in predictions]
    series = []
    edge = start
    while edge < end:
        upper = edge + bucket
        in_requests = requests[bisect_right(request_times, edge) : bisect_right(request_times, upper)]
        in_predictions = predictions[bisect_right(prediction_times, edge) : bisect_right(prediction_times, upper)]
        series.append((edge, figures(in_requests, in_predictions)))
        edge = upper
    return Summary(window, start, end, figures(requests, predictions), series)


def _in_window(table: type[RequestEvent] | type[PredictionEvent], start: datetime, end: datetime) -> Select:
    return select(table).where(table.at > start, table.at <= end).order_by(table.at)
