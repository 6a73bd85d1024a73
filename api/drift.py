"""Drift of the films this workstation analyses: the most recent cases' stored originals against a baseline folder
of the films the served model was trained on (DRIFT_BASELINE_DIR), with monitoring.drift's tests. The baseline's
statistics are read once; the last result is kept for the alert rule `drift_detected`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from monitoring import DriftReport, ImageStats, compare_images, read_folder, stats_from_bytes
from settings import Settings
from storage import MAX_PAGE_SIZE, Storage


@dataclass(frozen=True)
class DriftResult:
    report: DriftReport | None  # None: no data (the reason says why)
    reason: str
    at: datetime


class DriftMonitor:
    def __init__(self, storage: Storage, baseline_dir: Path, baseline_size: int, min_cases: int, alpha: float) -> None:
        self.storage, self.baseline_dir, self.baseline_size = storage, baseline_dir, baseline_size
        self.min_cases, self.alpha = min_cases, alpha
        self._baseline: list[ImageStats] | None = None
        self._lock = threading.Lock()
        self.latest: DriftResult | None = None

    @classmethod
    def from_settings(cls, settings: Settings, storage: Storage) -> DriftMonitor:
        baseline = settings.drift_baseline_dir or settings.cxr_data_dir / "kermany-pneumonia" / "train"
        return cls(storage, baseline, settings.drift_baseline_size, settings.drift_min_cases, settings.drift_alpha)

    def baseline(self) -> list[ImageStats]:
        """A fixed random sample of the baseline folder (the same one every time), read once."""
        with self._lock:
            if self._baseline is None:
                self._baseline = read_folder(self.baseline_dir, self.baseline_size)
            return self._baseline

    def check(self, window: int) -> DriftResult:
        """Compare the last `window` cases with the baseline (and keep the result)."""
        result = self._check(window)
        self.latest = result
        return result

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
        report = compare_images(self.baseline(), recent, self.alpha)
        drifted = ", ".join(test.feature for test in report.drifted) or "none"
        return DriftResult(
            report, f"{len(recent)} recent cases against {len(self.baseline())} baseline films; drift: {drifted}", now
        )


def get_drift(request: Request) -> DriftMonitor:
    return request.app.state.drift


DriftDep = Annotated[DriftMonitor, Depends(get_drift)]
