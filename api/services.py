"""The long-lived objects one API process holds (loaded once in the lifespan, shared by every request)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, Request, status

from active_learning import LearningLoop, QueuePolicy, RetrainingJobs
from api.case_media import CaseMedia
from api.errors import ApiError
from api.retraining import Promotion, RetrainingRunner, carry_library_over
from case_retrieval import (
    CaseLibrary,
    IndexPolicy,
    LibraryEntry,
    LibraryNotFoundError,
    ModelMismatchError,
    RetrievalError,
    pixel_reader,
    rebuild_library,
)
from inference import (
    DEFAULT_TASK,
    CheckpointError,
    ModelCheckpoint,
    OODError,
    Predictor,
    ScopeCheck,
    load_checkpoint,
)
from mlops.registry import RegistryError, resolve_serving_model
from monitoring import (
    AuditTrail,
    ComponentCheck,
    check_database,
    check_disk,
    check_image_store,
    check_schema,
)
from settings import Settings
from storage import CaseRecord, OrphanSweeper, Storage, init_storage

logger = logging.getLogger("cxr.api")


@dataclass
class Services:
    settings: Settings
    storage: Storage
    media: CaseMedia
    audit: AuditTrail
    learning: LearningLoop
    retraining_jobs: RetrainingJobs
    predictors: dict[str, Predictor] = field(default_factory=dict)
    model_errors: dict[str, str] = field(default_factory=dict)  # task -> why its model is not loaded
    scopes: dict[str, ScopeCheck] = field(default_factory=dict)  # task -> the served model's validated scope
    similar_library: CaseLibrary | None = None
    library_status: str = "not loaded"  # why similar cases are unavailable, shown to the user
    started_at: float = field(default_factory=time.time)
    sweeper: OrphanSweeper | None = None
    retraining: RetrainingRunner | None = None

    @classmethod
    def start(cls, settings: Settings) -> Services:
        storage = init_storage(settings)
        services = cls(
            settings=settings,
            storage=storage,
            media=CaseMedia(storage.images, storage.artifacts),
            audit=AuditTrail.from_settings(settings, storage.database),
            learning=LearningLoop(storage.database, QueuePolicy.from_settings(settings)),
            retraining_jobs=RetrainingJobs(storage.database),
        )
        services.sweeper = OrphanSweeper(storage, settings.orphan_grace_s, settings.orphan_sweep_interval_s).start()
        services.load_models()
        services.load_library()
        services.retraining = services.start_retraining()
        threading.Thread(target=services.warm_explainer, daemon=True).start()
        return services

    def warm_explainer(self) -> None:
        """Build Grad-CAM once in the background, so the first heatmap a radiologist asks for is not the slow one."""
        predictor = self.predictors.get(DEFAULT_TASK)
        if predictor is not None:
            size = predictor.checkpoint.preprocess.input_size
            predictor.heatmap(np.full((size, size), 0.5, dtype=np.float32))

    def close(self) -> None:
        if self.retraining is not None:
            self.retraining.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        self.storage.close()

    # --- the learning loop's retraining (api/retraining.py) --------------------------------------------------------

    def start_retraining(self) -> RetrainingRunner:
        runner = RetrainingRunner(
            self.settings,
            jobs=self.retraining_jobs,
            loop=self.learning,
            storage=self.storage,
            media=self.media,
            audit=self.audit,
            serving_predictor=lambda: self.predictors.get(DEFAULT_TASK),
            on_promotion=self.adopt_champion,
        )
        return runner.start()

    def wake_retraining(self) -> None:
        if self.retraining is not None:
            self.retraining.wake()

    def adopt_champion(self, promotion: Promotion) -> None:
        """Serve a promoted challenger: loaded and warmed before it takes traffic (requests in flight finish on the
        old Predictor they hold); the similar-case library is carried over (same backbone) or rebuilt."""
        checkpoint = load_checkpoint(promotion.checkpoint_path)
        predictor = Predictor.from_settings(checkpoint, self.settings)
        size = checkpoint.preprocess.input_size
        predictor.predict(np.full((size, size), 0.5, dtype=np.float32), None)
        self.predictors[DEFAULT_TASK], self.scopes[DEFAULT_TASK] = predictor, scope_of(checkpoint)
        logger.info("serving promoted model %s (registry version %d)", checkpoint.version, promotion.registry_version)
        try:
            policy = IndexPolicy.from_settings(self.settings)
            carried = carry_library_over(self.settings.resolved_retrieval_index_dir, checkpoint, policy)
        except RetrievalError:
            carried = None  # no library yet, or unreadable: load_library says why
        if carried is None:
            self.load_library()  # another backbone: rebuilt in the background
        else:
            self.similar_library, self.library_status = carried, "ready"

    def load_library(self) -> None:
        """Open the similar-case library of the serving model; rebuild it in the background after a model change."""
        predictor = self.predictors.get(DEFAULT_TASK)
        if predictor is None:
            self.library_status = "no model is loaded"
            return
        directory = self.settings.resolved_retrieval_index_dir
        try:
            policy = IndexPolicy.from_settings(self.settings)
            self.similar_library = CaseLibrary.load(directory, model_version=predictor.version, policy=policy)
            self.library_status = "ready"
        except LibraryNotFoundError:
            self.library_status = (
                "no similar-case library has been built yet (run `python -m case_retrieval build --data "
                "DATASETS/kermany-pneumonia --split train`)"
            )
        except ModelMismatchError as exc:
            self.library_status = f"the similar-case library is being rebuilt for model {predictor.version}"
            logger.warning("%s", exc)
            threading.Thread(target=self._rebuild_library, args=(directory,), daemon=True).start()
        except RetrievalError as exc:
            self.library_status = str(exc)

    def _rebuild_library(self, directory: Path) -> None:
        predictor = self.predictors[DEFAULT_TASK]
        try:
            stale = CaseLibrary.load(directory, policy=IndexPolicy.from_settings(self.settings))
            read = pixel_reader(self.settings.cxr_data_dir, self._case_image_of)
            library = rebuild_library(stale, predictor, read)
            library.save()
            self.similar_library, self.library_status = library, "ready"
            logger.info("similar-case library rebuilt for %s (%d entries)", predictor.version, len(library))
        except (RetrievalError, OSError) as exc:
            self.library_status = f"the similar-case library could not be rebuilt: {exc}"
            logger.error("library rebuild failed: %s", exc)

    def _case_image_of(self, entry: LibraryEntry) -> bytes:
        return self.storage.images.get(entry.image_sha256 or "")

    def library(self) -> CaseLibrary:
        if self.similar_library is None:
            raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, f"Similar cases unavailable: {self.library_status}.")
        return self.similar_library

    def get_case(self, case_id: str) -> CaseRecord:
        return self.storage.cases.get_case(case_id)  # CaseNotFoundError -> 404 by the error handlers

    def readiness_checks(self) -> list[ComponentCheck]:
        """Every component `/ready` reports: storage's (monitoring.health), each task's model, the library."""
        storage, settings = self.storage, self.settings
        checks = [
            check_database(storage.database),
            check_schema(storage.database),
            check_image_store(storage.images),
            check_disk(settings.var_dir, settings.disk_min_free_gb),
        ]
        for task in sorted({DEFAULT_TASK, *self.predictors, *self.model_errors}):
            predictor = self.predictors.get(task)
            detail = predictor.version if predictor else self.model_errors.get(task, "not loaded")
            name = "model" if task == DEFAULT_TASK else f"model:{task}"
            checks.append(ComponentCheck(name, predictor is not None, detail))
        library_ready = self.similar_library is not None  # optional: similar cases never block readiness
        checks.append(ComponentCheck("similar_cases", library_ready, self.library_status, required=False))
        return checks

    @property
    def uptime_s(self) -> float:
        return round(time.time() - self.started_at, 1)

    def scope(self, task: str = DEFAULT_TASK) -> ScopeCheck:
        """The validated scope of the task's served model (empty, so every film `unchecked`, when it states none)."""
        return self.scopes.get(task) or ScopeCheck(())

    def predictor(self, task: str = DEFAULT_TASK) -> Predictor:
        """The task's Predictor; 404 for a task with no model configured, 503 for one whose model failed to load."""
        if task in self.predictors:
            return self.predictors[task]
        if task in self.model_errors:
            raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, f"Model unavailable: {self.model_errors[task]}")
        raise ApiError(status.HTTP_404_NOT_FOUND, f"No model is configured for task {task!r}.")

    def serving_paths(self) -> dict[str, Path]:
        """Checkpoint per task: MODEL_ALIAS (e.g. models:/cxr-pneumonia@champion) wins over MODEL_PATH."""
        default = resolve_serving_model(self.settings) if self.settings.model_alias else self.settings.model_path
        paths = {DEFAULT_TASK: Path(default)}
        if self.settings.nodule_model_path:
            paths["nodule"] = self.settings.nodule_model_path
        return paths

    def load_models(self) -> None:
        try:
            paths = self.serving_paths()
        except RegistryError as exc:
            self.model_errors[DEFAULT_TASK] = str(exc)
            logger.error("model alias not resolved: %s", exc)
            return
        for task, path in paths.items():
            try:
                checkpoint = load_checkpoint(path)
                self.predictors[task] = Predictor.from_settings(checkpoint, self.settings)
                self.scopes[task] = scope_of(checkpoint)
                logger.info("loaded %s model %s", task, self.predictors[task].version)
            except CheckpointError as exc:
                self.model_errors[task] = str(exc)
                logger.error("model for %s not loaded: %s", task, exc)


def scope_of(checkpoint: ModelCheckpoint) -> ScopeCheck:
    """The checkpoint's scope; a stale one must not stop serving: films are then `unchecked` (logged)."""
    try:
        return ScopeCheck.from_checkpoint(checkpoint)
    except OODError as exc:
        logger.error("validated scope not loaded: %s", exc)
        return ScopeCheck(())


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
