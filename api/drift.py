"""Drift of the films this workstation analyses: the most recent cases against a baseline folder of the films the
served model was trained on (DRIFT_BASELINE_DIR), with monitoring.drift's tests, as one Bonferroni family.

- Image statistics: the cases' stored originals against a fixed sample of the baseline films (read once).
- Embeddings: the recent cases analysed by the serving model version (`cases.embedding`; other versions' embeddings
  live in another space) against the same baseline films run once through that model. The reference is computed in
  a background thread the first time a check has enough cases for it (start-up never waits; until it is ready the
  check runs the image tests alone and says so), then kept under VAR_DIR/drift/ by model version and baseline
  sample: a restart reads it back, a new model version computes its own.

The last result is kept for the alert rule `drift_detected` (forgotten when a reference becomes ready, so the rule's
next look runs a check that includes the embeddings)."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from imaging import ImagingError, decode_image
from inference import Predictor
from monitoring import DriftReport, ImageStats, compare_images, read_folder, sample_paths, stats_from_bytes
from settings import Settings
from storage import MAX_PAGE_SIZE, CaseRecord, Storage, write_durably

logger = logging.getLogger("cxr.drift")
EMBED_BATCH = 16


@dataclass(frozen=True)
class EmbeddingStatus:
    state: str  # tested | computing | too_few_cases | no_model
    detail: str
    model_version: str | None = None
    reference_size: int = 0
    new_size: int = 0


@dataclass(frozen=True)
class DriftResult:
    report: DriftReport | None  # None: no data (the reason says why)
    reason: str
    at: datetime
    embedding: EmbeddingStatus | None = None  # None with no report


def embed_films(predictor: Predictor, paths: Sequence[Path]) -> np.ndarray:
    """(N, D) float32 embeddings of image files, read as an upload is (decode_image) and run through `predictor`
    in model batches; files that do not decode are left out (logged)."""
    rows: list[np.ndarray] = []
    for start in range(0, len(paths), EMBED_BATCH):
        pixels = []
        for path in paths[start : start + EMBED_BATCH]:
            try:
                pixels.append(decode_image(path.read_bytes()).pixels)
            except ImagingError as error:
                logger.warning("drift baseline film %s left out: %s", path.name, error)
        if pixels:
            rows += [p.embedding for p in predictor.predict_batch(pixels, [None] * len(pixels))]  # no cache entries
    return np.stack(rows).astype(np.float32)


def reference_file(cache_dir: Path, version: str, paths: Sequence[Path]) -> Path:
    """Where one model version's embeddings of one baseline sample are kept (a new sample or folder: a new file)."""
    key = hashlib.sha256("\n".join([version, *map(str, paths)]).encode()).hexdigest()[:16]
    return cache_dir / f"reference-{re.sub(r'[^A-Za-z0-9._-]', '_', version)[:64]}-{key}.npy"


class ReferenceEmbeddings:
    """The baseline films' embeddings under the serving model: from memory, from VAR_DIR/drift/, or computed once
    in a background thread (see the module docstring)."""

    def __init__(self, cache_dir: Path, on_ready: Callable[[], None]) -> None:
        self.cache_dir, self.on_ready = cache_dir, on_ready
        self._arrays: dict[Path, np.ndarray] = {}  # the latest version's only
        self._running: set[Path] = set()
        self.failures: dict[Path, str] = {}
        self._lock = threading.Lock()

    def get(self, predictor: Predictor, paths: Sequence[Path]) -> np.ndarray | None:
        """The reference when it is ready; otherwise None, and it is being computed."""
        target = reference_file(self.cache_dir, predictor.version, paths)
        with self._lock:
            if target not in self._arrays and target.exists():
                self._arrays = {target: np.load(target)}
            if target in self._arrays:
                return self._arrays[target]
            if target not in self._running:
                self._running.add(target)
                args = (target, predictor, list(paths))
                threading.Thread(target=self._compute, args=args, name="drift-reference", daemon=True).start()
        return None

    def _compute(self, target: Path, predictor: Predictor, paths: list[Path]) -> None:
        started = datetime.now(UTC)
        try:
            array = embed_films(predictor, paths)
            buffer = io.BytesIO()
            np.save(buffer, array)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_durably(target, buffer.getvalue())
        except Exception as error:  # the model's runtime can raise anything; the check reports it and retries
            logger.exception("embedding the drift baseline under model %s failed", predictor.version)
            with self._lock:
                self.failures[target] = str(error) or type(error).__name__
                self._running.discard(target)
            return
        with self._lock:
            self._arrays = {target: array}
            self.failures.pop(target, None)
            self._running.discard(target)
        seconds = (datetime.now(UTC) - started).total_seconds()
        logger.info("drift reference: %d films under model %s in %.1f s", len(array), predictor.version, seconds)
        self.on_ready()


class DriftMonitor:
    def __init__(
        self,
        storage: Storage,
        baseline_dir: Path,
        baseline_size: int,
        min_cases: int,
        alpha: float,
        serving: Callable[[], Predictor | None],
        cache_dir: Path,
    ) -> None:
        self.storage, self.baseline_dir, self.baseline_size = storage, baseline_dir, baseline_size
        self.min_cases, self.alpha, self.serving = min_cases, alpha, serving
        self.reference = ReferenceEmbeddings(cache_dir, on_ready=self._forget_latest)
        self._baseline: list[ImageStats] | None = None
        self._lock = threading.Lock()
        self.latest: DriftResult | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, storage: Storage, serving: Callable[[], Predictor | None]
    ) -> DriftMonitor:
        baseline = settings.drift_baseline_dir or settings.cxr_data_dir / "kermany-pneumonia" / "train"
        return cls(storage, baseline, settings.drift_baseline_size, settings.drift_min_cases, settings.drift_alpha,
                   serving, settings.var_dir / "drift")  # fmt: skip

    def baseline(self) -> list[ImageStats]:
        """A fixed random sample of the baseline folder (the same one every time), read once."""
        with self._lock:
            if self._baseline is None:
                self._baseline = read_folder(self.baseline_dir, self.baseline_size)
            return self._baseline

    def baseline_paths(self) -> list[Path]:
        """The films of that sample (the same seed), whose embeddings are the reference."""
        return sample_paths(self.baseline_dir, self.baseline_size)

    def check(self, window: int) -> DriftResult:
        """Compare the last `window` cases with the baseline (and keep the result)."""
        result = self._check(window)
        self.latest = result
        return result

    def _forget_latest(self) -> None:
        self.latest = None

    def _check(self, window: int) -> DriftResult:
        now = datetime.now(UTC)
        if not self.baseline_dir.is_dir():
            return DriftResult(
                None, f"no data: the baseline folder {self.baseline_dir} is absent (DRIFT_BASELINE_DIR)", now
            )
        cases = self.storage.cases.list_cases(limit=min(window, MAX_PAGE_SIZE)).items
        if len(cases) < self.min_cases:
            return DriftResult(
                None, f"no data: {len(cases)} recent cases, {self.min_cases} needed (DRIFT_MIN_CASES)", now
            )
        recent = [stats_from_bytes(self.storage.images.get(case.image_sha256)) for case in cases]
        embeddings, status = self._embeddings(cases)
        report = compare_images(self.baseline(), recent, self.alpha, embeddings)
        drifted = ", ".join(test.feature for test in report.drifted) or "none"
        sizes = f"{len(recent)} recent cases against {len(self.baseline())} baseline films"
        return DriftResult(report, f"{sizes}; embeddings: {status.detail}; drift: {drifted}", now, status)

    def _embeddings(self, cases: Sequence[CaseRecord]) -> tuple[tuple[np.ndarray, np.ndarray] | None, EmbeddingStatus]:
        """The (reference, recent) embeddings of the serving model version, or why the MMD test is left out."""
        predictor = self.serving()
        if predictor is None:
            return None, EmbeddingStatus("no_model", "not tested, no model is loaded")
        version = predictor.version
        rows = [np.frombuffer(case.embedding, np.float32) for case in cases
                if case.model_version == version and case.embedding]  # fmt: skip
        if len(rows) < self.min_cases:
            detail = f"not tested, {len(rows)} recent cases by model {version}, {self.min_cases} needed"
            return None, EmbeddingStatus("too_few_cases", detail, version, new_size=len(rows))
        paths = self.baseline_paths()
        reference = self.reference.get(predictor, paths)
        if reference is None:
            failed = self.reference.failures.get(reference_file(self.reference.cache_dir, version, paths))
            detail = f"not tested yet, the baseline films are being run through model {version}"
            detail += f" (the last attempt failed: {failed})" if failed else ""
            return None, EmbeddingStatus("computing", detail, version, new_size=len(rows))
        detail = f"{len(rows)} cases by model {version} against {len(reference)} baseline films (MMD)"
        return (reference, np.stack(rows)), EmbeddingStatus("tested", detail, version, len(reference), len(rows))


def get_drift(request: Request) -> DriftMonitor:
    return request.app.state.drift


DriftDep = Annotated[DriftMonitor, Depends(get_drift)]
