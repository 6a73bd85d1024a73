"""Alerts: `GET /v1/alerts` (with each channel's last delivery), `POST /v1/alerts/{alert_id}/acknowledge`."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, status

from api.alerting import AlertingDep
from api.auth import CurrentUser
from api.errors import ApiError
from api.schemas import AlertChannelOut, AlertOut, AlertsOut
from monitoring import AlertNotFoundError

router = APIRouter(prefix="/v1/alerts", tags=["monitoring"])
MAX_ALERT_ID = 2**63 - 1  # a larger id overflowed the database integer (500); now it is a 422


@router.get("", response_model=AlertsOut, summary="Alerts, newest first, and each alert channel's last delivery")
def list_alerts(alerting: AlertingDep, state: Literal["firing", "acknowledged", "resolved"] | None = None) -> AlertsOut:
    return AlertsOut(
        alerts=[AlertOut.model_validate(alert) for alert in alerting.store.alerts(state)],
        channels=[AlertChannelOut.model_validate(row) for row in alerting.store.channel_statuses()],
    )


@router.post(
    "/{alert_id}/acknowledge",
    response_model=AlertOut,
    summary="Acknowledge a firing alert (it stays until its condition clears, without reminders)",
    responses={404: {"description": "No such alert"}},
)
def acknowledge_alert(
    alerting: AlertingDep, user: CurrentUser, alert_id: int = Path(ge=1, le=MAX_ALERT_ID)
) -> AlertOut:
    try:
        return AlertOut.model_validate(alerting.store.acknowledge(alert_id, user.username))
    except AlertNotFoundError as exc:
        raise ApiError(status.HTTP_404_NOT_FOUND, str(exc)) from None
