"""Where alerts are sent: a generic webhook (JSON), a Slack-compatible webhook, SMTP e-mail.

One interface (`AlertChannel`), three implementations registered by name in `CHANNELS`; a channel is on when its
settings are filled in (`channels_from_settings`). `deliver` retries a failed send with exponential backoff and
records the outcome per channel in the database, where `/ready` and the Alerts page read it.
"""

from __future__ import annotations

import logging
import smtplib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from email.message import EmailMessage

import httpx

from settings import Settings

logger = logging.getLogger("cxr.alerts")

SEND_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Notification:
    """What a channel tells people about one alert."""

    alert_id: int
    rule: str
    state: str  # firing | resolved
    severity: str
    message: str
    value: float | None
    at: datetime
    workstation: str  # INSTITUTION_NAME, so several installations can share one channel

    @property
    def title(self) -> str:
        verb = "RESOLVED" if self.state == "resolved" else "FIRING"
        return f"[{verb}] {self.workstation}: {self.rule} ({self.severity})"

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "at": self.at.isoformat(), "title": self.title}


class DeliveryError(Exception):
    """A channel could not hand the notification over; the message says why."""


class AlertChannel(ABC):
    name: str

    @abstractmethod
    def send(self, notification: Notification) -> None:
        """Hand the notification over, or raise DeliveryError."""

    @abstractmethod
    def target(self) -> str:
        """Where it goes, without secrets (shown on /ready and the Alerts page)."""


def _post_json(url: str, body: dict[str, object]) -> None:
    try:
        response = httpx.post(url, json=body, timeout=SEND_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    if response.status_code >= 300:
        raise DeliveryError(f"the receiver answered HTTP {response.status_code}")


def _host_of(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}{f':{parsed.port}' if parsed.port else ''}"  # no path: it may be a token


class WebhookChannel(AlertChannel):
    """POSTs the notification as JSON (`Notification.to_json`)."""

    name = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, notification: Notification) -> None:
        _post_json(self.url, notification.to_json())

    def target(self) -> str:
        return _host_of(self.url)


class SlackChannel(AlertChannel):
    """Slack's incoming-webhook format (`{"text": ...}`), also understood by Mattermost, Rocket.Chat and Teams'
    Slack-compatible connectors."""

    name = "slack"

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, notification: Notification) -> None:
        _post_json(self.url, {"text": f"*{notification.title}*\n{notification.message}"})

    def target(self) -> str:
        return _host_of(self.url)


class SmtpChannel(AlertChannel):
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        *,
        username: str = "",
        password: str = "",
        starttls: bool = False,
    ) -> None:
        self.host, self.port, self.sender, self.recipients = host, port, sender, recipients
        self.username, self.password, self.starttls = username, password, starttls

    def send(self, notification: Notification) -> None:
        message = EmailMessage()
        message["Subject"], message["From"], message["To"] = notification.title, self.sender, ", ".join(self.recipients)
        message.set_content(f"{notification.message}\n\nAlert {notification.alert_id}, {notification.at.isoformat()}")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=SEND_TIMEOUT_S) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    def target(self) -> str:
        return f"smtp://{self.host}:{self.port} to {len(self.recipients)} recipient(s)"


def _webhook(settings: Settings) -> AlertChannel | None:
    return WebhookChannel(settings.alert_webhook_url) if settings.alert_webhook_url else None


def _slack(settings: Settings) -> AlertChannel | None:
    return SlackChannel(settings.alert_slack_webhook_url) if settings.alert_slack_webhook_url else None


def _smtp(settings: Settings) -> AlertChannel | None:
    recipients = [part.strip() for part in settings.alert_smtp_to.split(",") if part.strip()]
    if not (settings.alert_smtp_host and recipients):
        return None
    return SmtpChannel(
        settings.alert_smtp_host,
        settings.alert_smtp_port,
        settings.alert_smtp_from,
        recipients,
        username=settings.alert_smtp_username,
        password=settings.alert_smtp_password.get_secret_value(),
        starttls=settings.alert_smtp_starttls,
    )


# name -> how to build it from settings (None: not configured)
CHANNELS: dict[str, Callable[[Settings], AlertChannel | None]] = {"webhook": _webhook, "slack": _slack, "smtp": _smtp}


def channels_from_settings(settings: Settings) -> list[AlertChannel]:
    return [channel for build in CHANNELS.values() if (channel := build(settings)) is not None]


@dataclass(frozen=True)
class DeliveryOutcome:
    channel: str
    ok: bool
    detail: str
    attempts: int


def deliver(
    channel: AlertChannel,
    notification: Notification,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryOutcome:
    """Send, retrying `retries` times after backoff_s, 2 * backoff_s, 4 * backoff_s ... seconds."""
    error = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            channel.send(notification)
        except DeliveryError as exc:
            error = str(exc)
            logger.warning(
                "alert %s to %s failed (attempt %d): %s", notification.alert_id, channel.name, attempt + 1, exc
            )
            continue
        return DeliveryOutcome(channel.name, True, f"delivered to {channel.target()}", attempt + 1)
    detail = f"{channel.target()} unreachable after {retries + 1} attempts: {error}"
    return DeliveryOutcome(channel.name, False, detail, retries + 1)
