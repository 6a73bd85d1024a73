"""Alert rules, their states in the database, and the scheduler that evaluates them.

Each rule (`RULES`, by name) looks at one `Observations` snapshot and says firing, fine, or "no data" (None: the
state is left as it is). States: firing -> acknowledged (an admin has seen it) -> resolved (the condition cleared).
- Deduplicated: at most one unresolved alert per rule; while it lasts, evaluations only update it.
- Cooldown (ALERT_COOLDOWN_S): a rule that fires again within the cooldown after resolving reopens the same alert
  without a new notification (no flapping storms); a firing alert nobody acknowledged is notified again once per
  cooldown.
Every decision happens in one database transaction under a lock, so several backend processes evaluating at once
create one alert and send one notification; the states survive restarts.

Accuracy on expert feedback reads the final expert labels through `ExpertLabels`, a function the learning-loop
work provides; until it exists (`no_expert_labels`) the rule reports "no data".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from monitoring.alert_channels import AlertChannel, Notification, deliver
from monitoring.health import ComponentCheck
from monitoring.history import Figures
from monitoring.models import Alert, AlertChannelStatus
from monitoring.system import SystemStats
from settings import Settings
from storage import Database

logger = logging.getLogger("cxr.alerts")

FIRING, ACKNOWLEDGED, RESOLVED = "firing", "acknowledged", "resolved"
UNRESOLVED = (FIRING, ACKNOWLEDGED)
_POSTGRES_ALERT_LOCK_ID = 0x6378722D616C7274  # "cxr-alrt"


@dataclass(frozen=True)
class LabelledPrediction:
    predicted: str
    expert: str  # the final expert label


# () -> the final expert labels of recent predictions, or None while no such table exists.
ExpertLabels = Callable[[], Sequence[LabelledPrediction] | None]


def no_expert_labels() -> None:
    """The default until the annotation queue records final expert labels."""
    return None


@dataclass(frozen=True)
class Observations:
    """What the rules look at, gathered once per evaluation."""

    recent: Figures  # the last hour of requests and predictions
    system: SystemStats
    checks: Sequence[ComponentCheck]
    expert_labels: Sequence[LabelledPrediction] | None = None
    drift: bool | None = None  # None: no drift result yet


@dataclass(frozen=True)
class Thresholds:
    min_expert_accuracy: float = 0.8
    min_expert_labels: int = 20
    p95_latency_s: float = 2.0
    error_rate: float = 0.05
    min_requests: int = 20  # fewer requests in the hour: too few to judge latency or error rate
    cpu_percent: float = 95.0
    memory_percent: float = 90.0
    disk_percent: float = 90.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            min_expert_accuracy=settings.alert_min_expert_accuracy,
            min_expert_labels=settings.alert_min_expert_labels,
            p95_latency_s=settings.alert_p95_latency_s,
            error_rate=settings.alert_error_rate,
            min_requests=settings.alert_min_requests,
            cpu_percent=settings.alert_cpu_percent,
            memory_percent=settings.alert_memory_percent,
            disk_percent=settings.alert_disk_percent,
        )


@dataclass(frozen=True)
class Verdict:
    firing: bool | None  # None: no data
    message: str
    value: float | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    check: Callable[[Observations, Thresholds], Verdict]


def _expert_accuracy(obs: Observations, t: Thresholds) -> Verdict:
    labels = obs.expert_labels
    if labels is None or len(labels) < t.min_expert_labels:
        count = 0 if labels is None else len(labels)
        return Verdict(None, f"no data: {count} expert-labelled predictions, {t.min_expert_labels} needed")
    accuracy = sum(item.predicted == item.expert for item in labels) / len(labels)
    limit = t.min_expert_accuracy
    message = f"accuracy on {len(labels)} expert-labelled predictions is {accuracy:.0%} (alert below {limit:.0%})"
    return Verdict(accuracy < limit, message, accuracy)


def _p95_latency(obs: Observations, t: Thresholds) -> Verdict:
    if obs.recent.requests < t.min_requests or obs.recent.p95_ms is None:
        return Verdict(None, f"no data: {obs.recent.requests} requests in the last hour")
    seconds = obs.recent.p95_ms / 1000
    return Verdict(
        seconds > t.p95_latency_s, f"p95 latency {seconds:.2f} s (alert above {t.p95_latency_s:g} s)", seconds
    )


def _error_rate(obs: Observations, t: Thresholds) -> Verdict:
    rate = obs.recent.error_rate
    if obs.recent.requests < t.min_requests or rate is None:
        return Verdict(None, f"no data: {obs.recent.requests} requests in the last hour")
    return Verdict(
        rate > t.error_rate, f"{rate:.1%} of requests failed with 5xx (alert above {t.error_rate:.0%})", rate
    )


def _percent(label: str, value: float, limit: float) -> Verdict:
    return Verdict(value > limit, f"{label} at {value:.0f} % (alert above {limit:g} %)", value)


def _model_not_loaded(obs: Observations, t: Thresholds) -> Verdict:
    models = [c for c in obs.checks if c.name == "model" or c.name.startswith("model:")]
    failed = [f"{c.name}: {c.detail}" for c in models if not c.ok]
    return Verdict(bool(failed), "; ".join(failed) or "every model is loaded", float(len(failed)))


def _not_ready(obs: Observations, t: Thresholds) -> Verdict:
    failed = [f"{c.name}: {c.detail}" for c in obs.checks if c.required and not c.ok and not c.name.startswith("model")]
    return Verdict(bool(failed), "; ".join(failed) or "every required component is ready", float(len(failed)))


def _drift(obs: Observations, t: Thresholds) -> Verdict:
    if obs.drift is None:
        return Verdict(None, "no data: no drift check has run")
    return Verdict(obs.drift, "input drift detected" if obs.drift else "no input drift")


RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule("expert_accuracy_low", "critical", _expert_accuracy),
        Rule("p95_latency_high", "warning", _p95_latency),
        Rule("error_rate_high", "critical", _error_rate),
        Rule("cpu_exhausted", "warning", lambda o, t: _percent("CPU", o.system.cpu_percent, t.cpu_percent)),
        Rule(
            "memory_exhausted", "critical", lambda o, t: _percent("memory", o.system.memory_percent, t.memory_percent)
        ),
        Rule("disk_exhausted", "critical", lambda o, t: _percent("disk", o.system.disk_percent, t.disk_percent)),
        Rule("drift_detected", "warning", _drift),
        Rule("model_not_loaded", "critical", _model_not_loaded),
        Rule("component_not_ready", "critical", _not_ready),
    )
}


# --- states in the database -----------------------------------------------------------------------------------------


class AlertNotFoundError(LookupError):
    """No alert has this id."""


@dataclass
class AlertStore:
    database: Database
    cooldown: timedelta = field(default=timedelta(minutes=15))

    def apply(self, rule: Rule, verdict: Verdict, now: datetime, workstation: str) -> Notification | None:
        """Move the rule's alert to the verdict's state; returns the notification to send, if one is due."""
        if verdict.firing is None:
            return None
        with self.database.transaction() as session:
            _lock(session)
            latest = session.scalars(
                select(Alert).where(Alert.rule == rule.name).order_by(Alert.id.desc()).limit(1)
            ).first()
            alert, notify = _transition(session, latest, rule, verdict, now, self.cooldown)
            if alert is None or not notify:
                return None
            alert.notified_at = now
            session.flush()
            return _notification(alert, workstation)

    def acknowledge(self, alert_id: int, who: str, now: datetime | None = None) -> Alert:
        with self.database.transaction() as session:
            alert = session.get(Alert, alert_id)
            if alert is None:
                raise AlertNotFoundError(f"No alert has id {alert_id}.")
            if alert.state == FIRING:
                alert.state, alert.acknowledged_by, alert.acknowledged_at = ACKNOWLEDGED, who, now or datetime.now(UTC)
            return alert

    def alerts(self, state: str | None = None, limit: int = 200) -> list[Alert]:
        query = select(Alert).order_by(Alert.id.desc()).limit(limit)
        if state:
            query = query.where(Alert.state == state)
        with self.database.session() as session:
            return list(session.scalars(query))

    def record_delivery(self, channel: str, ok: bool, detail: str) -> None:
        with self.database.transaction() as session:
            row = session.get(AlertChannelStatus, channel) or AlertChannelStatus(channel=channel)
            row.ok, row.detail, row.at = ok, detail, datetime.now(UTC)
            session.add(row)

    def channel_statuses(self) -> list[AlertChannelStatus]:
        with self.database.session() as session:
            return list(session.scalars(select(AlertChannelStatus).order_by(AlertChannelStatus.channel)))


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":  # SQLite: the write transaction already holds the lock
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _POSTGRES_ALERT_LOCK_ID})


def _transition(
    session: Session, latest: Alert | None, rule: Rule, verdict: Verdict, now: datetime, cooldown: timedelta
) -> tuple[Alert | None, bool]:
    """(the rule's alert after this verdict, whether to notify)."""
    active = latest if latest is not None and latest.state in UNRESOLVED else None
    if not verdict.firing:
        if active is None:
            return latest, False  # nothing to resolve
        active.state, active.resolved_at, active.message, active.value = RESOLVED, now, verdict.message, verdict.value
        return active, True
    if active is not None:
        active.last_seen_at, active.message, active.value = now, verdict.message, verdict.value
        reminder = active.state == FIRING and (active.notified_at is None or now - active.notified_at >= cooldown)
        return active, reminder
    if latest is not None and latest.resolved_at is not None and now - latest.resolved_at < cooldown:
        latest.state, latest.resolved_at, latest.last_seen_at = FIRING, None, now  # flapping: reopen quietly
        latest.message, latest.value = verdict.message, verdict.value
        return latest, False
    alert = Alert(rule=rule.name, state=FIRING, severity=rule.severity, message=verdict.message, value=verdict.value,
                  fired_at=now, last_seen_at=now)  # fmt: skip
    session.add(alert)
    session.flush()
    return alert, True


def _notification(alert: Alert, workstation: str) -> Notification:
    at = alert.resolved_at if alert.state == RESOLVED and alert.resolved_at else alert.last_seen_at
    return Notification(alert.id, alert.rule, alert.state, alert.severity, alert.message, alert.value, at, workstation)


# --- evaluation -----------------------------------------------------------------------------------------------------


@dataclass
class AlertEngine:
    """Evaluates every rule on one snapshot, moves the states, and sends what is due through every channel."""

    store: AlertStore
    channels: Sequence[AlertChannel]
    observe: Callable[[], Observations]
    thresholds: Thresholds = field(default_factory=Thresholds)
    workstation: str = "CXR Workstation"
    retries: int = 3
    backoff_s: float = 1.0

    def evaluate(self, now: datetime | None = None) -> list[Notification]:
        """One round; returns the notifications it sent (or tried to)."""
        observations, moment = self.observe(), now or datetime.now(UTC)
        due = []
        for rule in RULES.values():
            verdict = rule.check(observations, self.thresholds)
            notification = self.store.apply(rule, verdict, moment, self.workstation)
            if notification is not None:
                due.append(notification)
        for notification in due:
            self.notify(notification)
        return due

    def notify(self, notification: Notification) -> None:
        for channel in self.channels:
            outcome = deliver(channel, notification, self.retries, self.backoff_s)
            self.store.record_delivery(outcome.channel, outcome.ok, outcome.detail)


class AlertScheduler:
    """Runs `engine.evaluate()` every `interval_s` in a daemon thread (each backend process runs one)."""

    def __init__(self, engine: AlertEngine, interval_s: float) -> None:
        self.engine, self.interval_s = engine, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="alerts")

    def start(self) -> AlertScheduler:
        if self.interval_s > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.engine.evaluate()
            except Exception:  # a rule, the database or a channel library can raise anything: try again next round
                logger.exception("alert evaluation failed")


def channel_check(store: AlertStore, channels: Sequence[AlertChannel]) -> ComponentCheck:
    """For /ready (optional: a receiver that is down must not take the workstation out of service)."""
    if not channels:
        return ComponentCheck("alert_channels", True, "no alert channel is configured", required=False)
    statuses = {row.channel: row for row in store.channel_statuses()}
    failing = [
        f"{c.name}: {statuses[c.name].detail}" for c in channels if c.name in statuses and not statuses[c.name].ok
    ]
    if failing:
        return ComponentCheck("alert_channels", False, "; ".join(failing), required=False)
    return ComponentCheck(
        "alert_channels", True, ", ".join(f"{c.name} ({c.target()})" for c in channels), required=False
    )
