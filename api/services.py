"""The long-lived objects one API process holds (loaded once in the lifespan, shared by every request)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from fastapi import Request, status

from api.errors import ApiError
from inference import CheckpointError, Predictor
from settings import Settings
from storage import CaseRecord, Storage, init_storage

logger = logging.getLogger("cxr.api")


@dataclass
class Services:
    settings: Settings
    storage: Storage
    predictors: dict[str, Predictor] = field(default_factory=dict)
    model_errors: dict[str, str] = field(default_factory=dict)  # task -> why its model is not loaded
    started_at: float = field(default_factory=time.time)

    @classmethod
    def start(cls, settings: Settings) -> Services:
        services = cls(settings=settings, storage=init_storage(settings))
        services.load_models()
        return services

    def close(self) -> None:
        self.storage.close()

    def get_case(self, case_id: str) -> CaseRecord:
        return self.storage.cases.get_case(case_id)  # CaseNotFoundError -> 404 by the error handlers

    def readiness_checks(self) -> dict[str, dict[str, str | bool]]:
        checks: dict[str, dict[str, str | bool]] = {}
        try:
            self.storage.database.ping()
            checks["database"] = {"ok": True, "detail": self.storage.database.engine.dialect.name}
        except Exception as exc:  # any failure to reach the database means "not ready"
            checks["database"] = {"ok": False, "detail": type(exc).__name__}
        try:
            self.storage.images.check_writable()
            checks["image_store"] = {"ok": True, "detail": "writable"}
        except Exception as exc:  # read-only or missing folder
            checks["image_store"] = {"ok": False, "detail": type(exc).__name__}
        predictor = self.predictors.get("pneumonia")
        checks["model"] = (
            {"ok": True, "detail": predictor.version}
            if predictor
            else {"ok": False, "detail": self.model_errors.get("pneumonia", "not loaded")}
        )
        return checks

    @property
    def uptime_s(self) -> float:
        return round(time.time() - self.started_at, 1)

    def predictor(self, task: str = "pneumonia") -> Predictor:
        if task not in self.predictors:
            reason = self.model_errors.get(task, f"no model is configured for task {task!r}")
            raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, f"Model unavailable: {reason}")
        return self.predictors[task]

    def load_models(self) -> None:
        paths = {"pneumonia": self.settings.model_path}
        if self.settings.nodule_model_path:
            paths["nodule"] = self.settings.nodule_model_path
        for task, path in paths.items():
            try:
                self.predictors[task] = Predictor.from_path(
                    path,
                    threads=self.settings.torch_threads,
                    cache_size=self.settings.cache_size,
                    cache_ttl=self.settings.cache_ttl,
                )
                logger.info("loaded %s model %s", task, self.predictors[task].version)
            except CheckpointError as exc:
                self.model_errors[task] = str(exc)
                logger.error("model for %s not loaded: %s", task, exc)


def get_services(request: Request) -> Services:
    return request.app.state.services
