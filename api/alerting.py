"""The alerting of one API process: the rules' inputs gathered from this process's services, the channels from
settings, and the scheduler (monitoring/alerts.py) started in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request

from api.drift import DriftMonitor
from api.services import Services
from monitoring import (
    HISTORY,
    AlertChannel,
    AlertEngine,
    AlertScheduler,
    AlertStore,
    ComponentCheck,
    ExpertLabels,
    Observations,
    Thresholds,
    channel_check,
    channels_from_settings,
    no_expert_labels,
    summarize,
    system_stats,
)


@dataclass
class Alerting:
    store: AlertStore
    channels: list[AlertChannel]
    engine: AlertEngine
    scheduler: AlertScheduler

    @classmethod
    def start(cls, services: Services, drift: DriftMonitor, expert_labels: ExpertLabels = no_expert_labels) -> Alerting:
        settings = services.settings
        store = AlertStore(services.storage.database, timedelta(seconds=settings.alert_cooldown_s))
        channels = channels_from_settings(settings)

        def observe() -> Observations:
            HISTORY.flush()
            recent = summarize(services.storage.database, "1h").totals
            stats = system_stats(settings.var_dir)
            drifted = recent_drift(drift, settings.drift_window, settings.drift_check_interval_s)
            return Observations(recent, stats, services.readiness_checks(), expert_labels(), drifted)

        engine = AlertEngine(
            store,
            channels,
            observe,
            Thresholds.from_settings(settings),
            workstation=settings.institution_name,
            retries=settings.alert_retries,
            backoff_s=settings.alert_backoff_s,
        )
        return cls(store, channels, engine, AlertScheduler(engine, settings.alert_interval_s).start())

    def channel_check(self) -> ComponentCheck:
        return channel_check(self.store, self.channels)

    def stop(self) -> None:
        self.scheduler.stop()


def recent_drift(drift: DriftMonitor, window: int, max_age_s: float) -> bool | None:
    """The drift verdict for the rule: the last check while it is younger than `max_age_s`, else a new one."""
    latest = drift.latest
    if latest is None or (datetime.now(UTC) - latest.at).total_seconds() > max_age_s:
        latest = drift.check(window)
    return latest.report.detected if latest.report is not None else None


def get_alerting(request: Request) -> Alerting:
    return request.app.state.alerting


AlertingDep = Annotated[Alerting, Depends(get_alerting)]
