"""The long-lived objects one API process holds (loaded once in the lifespan, shared by every request).

Serving models (issue 18). The default task's models sit in named slots: `champion` answers every request, and
`previous` (the champion before it) stays loaded and warm, so a rollback is a pointer change (blue-green); a shadow
challenger would be one more slot. A switch (`switch_to`: an admin's promote or rollback, the retraining runner's
promotion, or the alias watcher) loads and warms the new Predictor first and then replaces the serving one in one
assignment: a request holds the Predictor it took until it has answered, so requests in flight finish on the old
model, and a model dropped from the slots is closed only after REQUEST_TIMEOUT_S. What is served comes from the
registry: MODEL_ALIAS when set, else the local registry's `champion` of cxr-pneumonia when it exists, else
MODEL_PATH; a watcher thread reads that alias every MODEL_ALIAS_POLL_S and switches when it moved, so every backend
process follows a promotion made through any of them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
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
    RetrievalError,
    pixel_reader,
    rebuild_library,
)
from inference import (
    DEFAULT_TASK,
    NODULE_TASK,
    CheckpointError,
    ModelCheckpoint,
    NodulePredictor,
    OODError,
    Predictor,
    ScopeCheck,
    load_checkpoint,
)
from mlops.registry import (
    DEFAULT_ALIAS,
    RegistryError,
    default_model_name,
    get_alias,
    get_version,
    parse_model_uri,
    previous_version,
    resolve_checkpoint,
    resolve_model_reference,
)
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

CHAMPION, PREVIOUS = "champion", "previous"  # slots of the default task's models (a shadow challenger: one more)
KNOWN_TASKS = (DEFAULT_TASK, NODULE_TASK)  # what `?task=` may name


@dataclass(frozen=True)
class ServedModel:
    """One loaded and warmed model: what a request takes and keeps until it has answered."""

    predictor: Predictor
    scope: ScopeCheck
    registry_version: int | None = None  # None: a file outside the registry (MODEL_PATH)

    @property
    def version(self) -> str:
        return self.predictor.version


@dataclass(frozen=True)
class ModelSwitch:
    """A switch of the served model: registry versions before and after, and how long it took to serve."""

    version: int
    previous_version: int | None
    checkpoint_version: str
    seconds: float
    was_warm: bool  # already loaded (the previous champion): no load, no warm-up


@dataclass
class Services:
    settings: Settings
    storage: Storage
    media: CaseMedia
    audit: AuditTrail
    learning: LearningLoop
    retraining_jobs: RetrainingJobs
    predictors: dict[str, Predictor] = field(default_factory=dict)  # task -> the Predictor answering now
    nodule: NodulePredictor | None = None  # the second finding's model, computed beside the default task's
    model_errors: dict[str, str] = field(default_factory=dict)  # task -> why its model is not loaded
    scopes: dict[str, ScopeCheck] = field(default_factory=dict)  # task -> the served model's validated scope
    slots: dict[str, ServedModel] = field(default_factory=dict)  # the default task's loaded models, by slot
    followed: tuple[str, str] | None = None  # (registered model, alias) the default task follows; None: pinned
    libraries: dict[str, CaseLibrary] = field(default_factory=dict)  # model version -> its similar-case library
    library_status: str = "not loaded"  # why similar cases are unavailable, shown to the user
    started_at: float = field(default_factory=time.time)
    sweeper: OrphanSweeper | None = None
    retraining: RetrainingRunner | None = None
    _switch_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop_watching: threading.Event = field(default_factory=threading.Event, repr=False)

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
        threading.Thread(target=services.watch_alias, name="model-alias-watcher", daemon=True).start()
        return services

    def warm_explainer(self) -> None:
        """Build Grad-CAM once in the background, so the first heatmap a radiologist asks for is not the slow one."""
        predictor = self.predictors.get(DEFAULT_TASK)
        if predictor is not None:
            size = predictor.checkpoint.preprocess.input_size
            predictor.heatmap(np.full((size, size), 0.5, dtype=np.float32))

    def close(self) -> None:
        self._stop_watching.set()
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
        """Serve a challenger the retraining runner promoted (it has moved the alias already)."""
        self.switch_to(promotion.registry_version, promotion.checkpoint_path)

    # --- which model serves: the registry's alias, switched in place -------------------------------------------------

    def switch_to(
        self, version: int, checkpoint_path: Path | None = None, move_alias: Callable[[], object] | None = None
    ) -> ModelSwitch:
        """Serve version `version` of the followed registered model (cxr-pneumonia by default): taken from the
        slots when it is still loaded (a rollback to the previous champion), else loaded and warmed first; then
        `move_alias` (an admin's promote or rollback) moves the registry's alias, and the model replaces the serving
        Predictor in one assignment. A model that fails to load changes nothing, the alias included. Switches are
        serialised; requests never wait for them."""
        with self._switch_lock:
            return self._switch(version, checkpoint_path, move_alias)

    def follow_alias(self) -> ModelSwitch | None:
        """Switch when the followed alias points at another version than the one served (the registry is the
        truth, not this process's memory); None when nothing moved."""
        if self.followed is None or not self.registry_available():
            return None
        with self._switch_lock:  # read and act under one lock: a stale read never undoes a newer switch
            try:
                version = get_alias(*self.followed)
            except RegistryError:  # not registered yet: keep serving MODEL_PATH
                return None
            if version is None:
                return None
            return self._switch(version)

    def watch_alias(self) -> None:
        """The watcher thread: `follow_alias` every MODEL_ALIAS_POLL_S until the backend stops."""
        interval = self.settings.model_alias_poll_s
        if self.followed is None or interval <= 0:
            return
        self._guarded(self._warm_previous)
        while not self._stop_watching.wait(interval):
            self._guarded(self.follow_alias)

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # MLflow's store or a checkpoint file can fail in any way: the watcher lives on
            logger.exception("following the model alias %s failed", self.followed)

    def _switch(
        self, version: int, checkpoint_path: Path | None = None, move_alias: Callable[[], object] | None = None
    ) -> ModelSwitch:
        current = self.slots.get(CHAMPION)
        before = current.registry_version if current is not None else None
        if current is not None and before == version:
            if move_alias is not None:
                move_alias()
            return ModelSwitch(version, before, current.version, 0.0, was_warm=True)
        name = self.registry_name()
        expected = get_version(name, version).checkpoint_version
        started = time.perf_counter()  # what serving costs: load and warm-up (none when kept), not the registry
        kept = next((m for m in self.slots.values() if m.version == expected), None)
        if kept is None:
            model = self._load(checkpoint_path or resolve_checkpoint(name, version), version)
        else:
            model = dataclasses.replace(kept, registry_version=version)
        self._library_for(model.predictor)  # same backbone: carried over before the first request needs it
        seconds = time.perf_counter() - started
        if move_alias is not None:
            move_alias()
        started = time.perf_counter()
        self._serve(model)
        seconds += time.perf_counter() - started
        logger.info("serving %s v%d (%s) after %.3f s; was v%s", name, version, model.version, seconds, before)
        return ModelSwitch(version, before, model.version, seconds, was_warm=kept is not None)

    def _load(self, path: Path, registry_version: int | None) -> ServedModel:
        """A Predictor loaded and warmed (one full prediction through batching and the input gate) before any
        request can reach it."""
        checkpoint = load_checkpoint(path)
        predictor = Predictor.from_settings(checkpoint, self.settings)
        size = checkpoint.preprocess.input_size
        predictor.predict(np.full((size, size), 0.5, dtype=np.float32), None)
        return ServedModel(predictor, scope_of(checkpoint), registry_version)

    def _serve(self, model: ServedModel) -> None:
        """Make `model` the champion; the champion before stays warm as `previous`; a model dropped from the slots
        is closed once every request that may still hold it has ended."""
        old = self.slots.get(CHAMPION)
        slots = {CHAMPION: model}
        keep = old if old is not None and old.version != model.version else self.slots.get(PREVIOUS)
        if keep is not None and keep.version != model.version:
            slots[PREVIOUS] = keep
        dropped = [m for m in self.slots.values() if m.predictor not in {s.predictor for s in slots.values()}]
        self.slots = slots
        self.predictors[DEFAULT_TASK], self.scopes[DEFAULT_TASK] = model.predictor, model.scope
        self.libraries = {v: lib for v, lib in self.libraries.items() if v in {m.version for m in slots.values()}}
        grace = max(self.settings.request_timeout_s, 30.0)
        for gone in dropped:
            timer = threading.Timer(grace, gone.predictor.close)
            timer.daemon = True
            timer.start()

    def _warm_previous(self) -> None:
        """Load the previous champion (the alias history's) beside the serving one, so a rollback after a restart
        is instant too."""
        if self.followed is None or not self.registry_available() or PREVIOUS in self.slots:
            return
        try:
            version = previous_version(*self.followed)
            if version is None:
                return
            model = self._load(resolve_checkpoint(self.followed[0], version), version)
        except (RegistryError, CheckpointError) as exc:
            logger.warning("previous champion not kept warm: %s", exc)
            return
        with self._switch_lock:
            champion = self.slots.get(CHAMPION)
            if champion is not None and champion.version != model.version and PREVIOUS not in self.slots:
                self.slots = {**self.slots, PREVIOUS: model}

    def registry_name(self) -> str:
        return self.followed[0] if self.followed is not None else default_model_name(DEFAULT_TASK)

    def registry_available(self) -> bool:
        """A tracking server is configured, or the local MLflow store exists (never created just by starting)."""
        return bool(self.settings.mlflow_tracking_uri) or (self.settings.var_dir / "mlflow.db").is_file()

    def followed_alias(self) -> tuple[str, str] | None:
        """The (registered model, alias) the default task follows: MODEL_ALIAS's, or cxr-pneumonia's champion
        when MODEL_ALIAS is unset; None when MODEL_ALIAS pins a file or a version number."""
        reference = self.settings.model_alias.strip()
        if not reference:
            return default_model_name(DEFAULT_TASK), DEFAULT_ALIAS
        if not reference.startswith("models:/"):
            return None
        name, alias, _ = parse_model_uri(reference)
        return (name, alias) if alias is not None else None

    def serving_reference(self) -> tuple[str, int | None]:
        """What the default task serves at start, and its registry version: MODEL_ALIAS when set (an alias must
        resolve: never a silent fallback), else the local registry's champion when it has one, else MODEL_PATH."""
        reference = self.settings.model_alias.strip()
        if reference.startswith("models:/"):
            name, alias, version = parse_model_uri(reference)
            if alias is not None:
                version = get_alias(name, alias)
                if version is None:
                    raise RegistryError(f"Model {name!r} has no {alias!r} alias (MODEL_ALIAS).")
            return f"models:/{name}/{version}", version
        if reference:
            return reference, None
        if self.followed is not None and self.registry_available():
            try:
                version = get_alias(*self.followed)
            except RegistryError:  # nothing registered yet
                version = None
            if version is not None:
                return f"models:/{self.followed[0]}/{version}", version
        return str(self.settings.model_path), None

    # --- similar-case libraries, one per loaded model version --------------------------------------------------------

    @property
    def similar_library(self) -> CaseLibrary | None:
        """The similar-case library of the model answering now (None while it is absent or being rebuilt)."""
        predictor = self.predictors.get(DEFAULT_TASK)
        return self.libraries.get(predictor.version) if predictor is not None else None

    def load_library(self) -> None:
        """Open the similar-case library of the serving model; rebuild it in the background after a model change."""
        predictor = self.predictors.get(DEFAULT_TASK)
        if predictor is None:
            self.library_status = "no model is loaded"
            return
        self._library_for(predictor)

    def _library_for(self, predictor: Predictor) -> None:
        """The library for `predictor`'s version: kept, on disk, carried over from a model with the same backbone
        (no re-embedding), or rebuilt in the background. Never one made by another model version."""
        if predictor.version in self.libraries:
            self.library_status = "ready"
            return
        directory = self.settings.resolved_retrieval_index_dir
        try:
            library = carry_library_over(directory, predictor.checkpoint, IndexPolicy.from_settings(self.settings))
        except LibraryNotFoundError:
            self.library_status = (
                "no similar-case library has been built yet (run `python -m case_retrieval build --data "
                "DATASETS/kermany-pneumonia --split train`)"
            )
            return
        except RetrievalError as exc:
            self.library_status = str(exc)
            return
        if library is None:
            self.library_status = f"the similar-case library is being rebuilt for model {predictor.version}"
            threading.Thread(target=self._rebuild_library, args=(directory, predictor), daemon=True).start()
            return
        self.libraries = {**self.libraries, library.model_version: library}
        self.library_status = "ready"

    def _rebuild_library(self, directory: Path, predictor: Predictor) -> None:
        try:
            stale = CaseLibrary.load(directory, policy=IndexPolicy.from_settings(self.settings))
            read = pixel_reader(self.settings.cxr_data_dir, self._case_image_of)
            library = rebuild_library(stale, predictor, read)
            library.save()
            self.libraries = {**self.libraries, library.model_version: library}
            self.library_status = "ready"
            logger.info("similar-case library rebuilt for %s (%d entries)", predictor.version, len(library))
        except (RetrievalError, OSError) as exc:
            self.library_status = f"the similar-case library could not be rebuilt: {exc}"
            logger.error("library rebuild failed: %s", exc)

    def _case_image_of(self, entry: LibraryEntry) -> bytes:
        return self.storage.images.get(entry.image_sha256 or "")

    def library(self, model_version: str | None = None) -> CaseLibrary:
        """The similar-case library of `model_version` (default: the model answering now); 503 while absent."""
        library = self.libraries.get(model_version) if model_version else self.similar_library
        if library is None:
            raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, f"Similar cases unavailable: {self.library_status}.")
        return library

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
        served = self.served_models()
        for task in sorted({DEFAULT_TASK, *served, *self.model_errors}):
            model = served.get(task)
            detail = model.version if model else self.model_errors.get(task, "not loaded")
            name = "model" if task == DEFAULT_TASK else f"model:{task}"
            # Only the default task's model gates readiness: a refused nodule model leaves pneumonia serving.
            checks.append(ComponentCheck(name, model is not None, detail, required=task == DEFAULT_TASK))
        library_ready = self.similar_library is not None  # optional: similar cases never block readiness
        checks.append(ComponentCheck("similar_cases", library_ready, self.library_status, required=False))
        return checks

    @property
    def uptime_s(self) -> float:
        return round(time.time() - self.started_at, 1)

    def scope(self, task: str = DEFAULT_TASK, model_version: str | None = None) -> ScopeCheck:
        """The validated scope of the model that made a prediction (`model_version`, while it is loaded), else of
        the task's served model; empty, so every film `unchecked`, when it states none."""
        made_by = next((m for m in self.slots.values() if m.version == model_version), None)
        if made_by is not None and task == DEFAULT_TASK:
            return made_by.scope
        return self.scopes.get(task) or ScopeCheck(())

    def served_models(self) -> dict[str, Predictor | NodulePredictor]:
        """Every task's model answering now (what /ready, /metrics and /v1/models list)."""
        return {**self.predictors, **({NODULE_TASK: self.nodule} if self.nodule is not None else {})}

    def model(self, task: str = DEFAULT_TASK) -> Predictor | NodulePredictor:
        """The task's model; 400 for a task nobody knows, 404 for one with no model configured, 503 (with why) for
        one whose model was refused or failed to load."""
        if task not in KNOWN_TASKS:
            known = ", ".join(sorted(KNOWN_TASKS))
            raise ApiError(status.HTTP_400_BAD_REQUEST, f"Unknown task {task!r}; the known tasks are: {known}.")
        served = self.served_models()
        if task in served:
            return served[task]
        if task == DEFAULT_TASK:
            reason = self.model_errors.get(task)
            if reason is not None:
                raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, f"Model unavailable: {reason}")
            raise ApiError(status.HTTP_404_NOT_FOUND, f"No model is configured for task {task!r}.")
        if task in self.model_errors:
            raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, f"No {task} model is served: {self.model_errors[task]}")
        raise ApiError(status.HTTP_404_NOT_FOUND, f"No {task} model is served: none is configured ({NOT_CONFIGURED}).")

    def predictor(self, task: str = DEFAULT_TASK) -> Predictor:
        """The task's classification Predictor (the default task's); errors as `model`."""
        model = self.model(task)
        if not isinstance(model, Predictor):
            raise ApiError(status.HTTP_400_BAD_REQUEST, f"Task {task!r} is not a classification task.")
        return model

    def predictor_for(self, task: str, model_version: str) -> Predictor:
        """The Predictor of `model_version` while it is loaded (the case's own model: its heatmap and report name
        the model that made the finding), else the task's served one."""
        made_by = next((m for m in self.slots.values() if m.version == model_version), None)
        return made_by.predictor if made_by is not None and task == DEFAULT_TASK else self.predictor(task)

    def serving_paths(self, reference: str | None = None) -> dict[str, Path]:
        """Checkpoint per task at start: the default task's from `serving_reference`, the nodule model's file."""
        paths = {DEFAULT_TASK: resolve_model_reference(reference or self.serving_reference()[0])}
        nodule_path = self.settings.served_nodule_model_path
        if nodule_path is not None:
            paths[NODULE_TASK] = nodule_path
        return paths

    def load_models(self) -> None:
        try:
            self.followed = self.followed_alias()
            reference, registry_version = self.serving_reference()
            paths = self.serving_paths(reference)
        except RegistryError as exc:
            self.model_errors[DEFAULT_TASK] = str(exc)
            logger.error("model alias not resolved: %s", exc)
            return
        for task, path in paths.items():
            try:
                if task == DEFAULT_TASK:
                    self._serve(self._load(path, registry_version))
                else:
                    self.nodule = load_nodule_model(path, self.settings)
                logger.info("loaded %s model %s", task, self.served_models()[task].version)
            except CheckpointError as exc:
                self.model_errors[task] = str(exc)
                logger.error("model for %s not loaded: %s", task, exc)


NOT_CONFIGURED = "NODULE_MODEL_PATH is empty, or the default models/nodule.pt does not exist"


def load_nodule_model(path: Path, settings: Settings) -> NodulePredictor:
    """The nodule checkpoint at `path`, loaded and warm; `CheckpointError` (its text is the reason shown on /ready
    and /model/info?task=nodule) for a file that is no nodule model or whose measured test AUROC misses the floor."""
    checkpoint = load_checkpoint(path)
    refusal = nodule_refusal(checkpoint, settings.nodule_min_test_auroc)
    if refusal is not None:
        raise CheckpointError(refusal)
    return NodulePredictor.from_settings(checkpoint, settings)


def nodule_refusal(checkpoint: ModelCheckpoint, floor: float) -> str | None:
    """Why a nodule checkpoint must not be served (issue 23: never below the test-AUROC floor), or None."""
    auroc = (checkpoint.metrics.get("test") or {}).get("auroc")
    where = f"(NODULE_MIN_TEST_AUROC) for model {checkpoint.version}"
    if isinstance(auroc, bool) or not isinstance(auroc, int | float) or not math.isfinite(auroc):
        return f"its test AUROC (metrics.test.auroc) is missing, so it cannot meet the {floor:.2f} floor {where}."
    if auroc < floor:
        return f"its test AUROC {auroc:.2f} is below the {floor:.2f} floor {where}."
    return None


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
