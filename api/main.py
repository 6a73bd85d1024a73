"""ASGI entry point: `uvicorn api.main:app`. `create_app()` builds a configured app (tests build their own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from api.alerting import Alerting
from api.auth import AuthService, check_security_settings
from api.drift import DriftMonitor
from api.errors import install_error_handlers
from api.learning import expert_feedback
from api.observability import ObservabilityMiddleware
from api.routers import (
    alerts,
    annotations,
    auth,
    explain,
    exports,
    health,
    media,
    models,
    monitoring,
    nodule_reviews,
    predict,
    queue,
    reports,
    retraining,
    similar,
    studies,
    users,
)
from api.security import AUTHORIZE, install_client_address, install_security
from api.services import Services
from inference import DEFAULT_TASK
from monitoring import HISTORY, configure_logging, mark_process_dead
from settings import Settings, get_settings

DESCRIPTION = """
Chest X-ray decision support: upload a radiograph (PNG, JPEG, TIFF or DICOM) and get the model's finding with
a calibrated probability. Every answer is AI decision support for a clinician, not a diagnosis.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_security_settings(settings)  # production without JWT_SECRET, a weak ADMIN_PASSWORD: refuse to start
    log_bytes = int(settings.log_file_max_mb * 1024 * 1024)
    configure_logging(settings.log_level, settings.resolved_log_dir, log_bytes, settings.log_file_backups)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.start(settings)
        app.state.services = services
        app.state.auth = AuthService.start(settings, services.storage.database)
        interval, retention = settings.monitoring_flush_interval_s, settings.monitoring_retention_days
        HISTORY.attach(services.storage.database, interval, retention)
        serving = partial(services.predictors.get, DEFAULT_TASK)  # the dict a swap updates: always the model serving
        app.state.drift = DriftMonitor.from_settings(settings, services.storage, serving)
        app.state.alerting = Alerting.start(services, app.state.drift, partial(expert_feedback, services))
        yield
        app.state.alerting.stop()
        HISTORY.detach()
        services.close()
        mark_process_dead()

    app = FastAPI(
        title="CXR Workstation API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[AUTHORIZE],  # every route: its line in api/permissions.py against the caller's role
    )
    install_error_handlers(app)
    routers = (health, monitoring, alerts, predict, studies, media, explain, similar, reports, auth, users)
    routers += (queue, annotations, nodule_reviews, retraining, models, exports)
    for module in routers:
        app.include_router(module.router)
    install_security(app, settings)  # last: authorisation from api/permissions.py covers every route above
    app.add_middleware(ObservabilityMiddleware)  # outermost: counts the security layers' answers too
    install_client_address(app, settings)  # outside even that: the audit trail records the real client address
    return app


app = create_app()
