"""Everything one case view needs from the backend, fetched in parallel once and kept in the session.

Each artifact is optional: a backend that lacks an endpoint (404) or refuses one (4xx) leaves a readable note
for that part of the page instead of failing the whole view.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ui.client import BackendClient, BackendError
from ui.imagery import ImageDataError, decode_heatmap, grayscale_display, image_size
from ui.nodules import NODULE_TASK, no_model_note

T = TypeVar("T")
SIMILAR_K = 5
CACHE_KEY = "case_artifacts"
MAX_CACHED_CASES = 8  # a reading session revisits a handful of cases; images are not kept beyond that

FEATURE_NAMES: dict[str, str] = {"image": "Stored image", "heatmap": "Grad-CAM heatmap", "similar": "Similar cases"}
ImageAndSize = tuple[np.ndarray, tuple[int, int]]


@dataclass
class Neighbour:
    similarity: float
    label: str
    origin: str  # short, for the tile: "confirmed case 1a2b3c4d" or "reference · kermany-pneumonia"
    identifier: str  # the full case or reference id, for the tooltip
    thumbnail: bytes | None = None


@dataclass
class CaseArtifacts:
    case: dict[str, Any]
    image: np.ndarray | None = None  # uint8 grayscale, display-sized
    image_size: tuple[int, int] | None = None  # the stored image's width, height: the backend's coordinates
    display_png: bytes | None = None  # `image` as PNG, for the figure that draws the nodule marks (made on first use)
    heatmap: np.ndarray | None = None  # float32 [0, 1] raw Grad-CAM map, re-blended in the browser view
    overlays: dict[float, bytes] = field(default_factory=dict)  # backend-blended PNGs when no raw map exists
    neighbours: list[Neighbour] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # artifact -> why it is missing, in words

    @property
    def case_id(self) -> str:
        return str(self.case["case_id"])


def explain_failure(feature: str, error: BackendError) -> str:
    name = FEATURE_NAMES.get(feature, feature)
    if error.route_missing:
        return f"{name}: not available on this backend yet (its endpoint answered {error.status_code})."
    return error.message  # the backend's own sentence, shown under the section it concerns


def _attempt(feature: str, fetch: Callable[[], T], notes: dict[str, str]) -> T | None:
    try:
        return fetch()
    except BackendError as error:
        if error.unauthorized:
            raise
        notes[feature] = explain_failure(feature, error)
    except ImageDataError as error:
        notes[feature] = f"{FEATURE_NAMES.get(feature, feature)}: {error}"
    return None


def neighbour_origin(row: dict[str, Any]) -> str:
    if row.get("case_id"):
        return f"confirmed case {str(row['case_id'])[:8]}"
    return f"reference · {row['dataset']}" if row.get("dataset") else "reference library"


def _neighbours(client: BackendClient, answer: dict[str, Any], pool: ThreadPoolExecutor) -> list[Neighbour]:
    rows = [row for row in answer.get("neighbours") or [] if isinstance(row, dict)]

    def thumbnail(row: dict[str, Any]) -> bytes | None:
        url = row.get("thumbnail_url")
        try:
            return client.get_bytes(str(url)) if url else None
        except BackendError:
            return None  # a gallery tile without a picture still carries label and similarity

    pictures = list(pool.map(thumbnail, rows))
    return [
        Neighbour(
            similarity=float(row.get("similarity", 0.0)),
            label=str(row.get("label") or "unlabelled"),
            origin=neighbour_origin(row),
            identifier=str(row.get("case_id") or row.get("ref_id") or ""),
            thumbnail=picture,
        )
        for row, picture in zip(rows, pictures, strict=True)
    ]


def _image_and_size(client: BackendClient, case_id: str) -> ImageAndSize:
    data = client.case_image(case_id)
    return grayscale_display(data), image_size(data)


def why_no_nodule_finding(client: BackendClient) -> str:
    """The reason a case has no nodule finding, in the backend's words (GET /model/info?task=nodule: 404 when none
    is configured, 503 when one was refused, e.g. for its test AUROC)."""
    try:
        info = client.model_info(NODULE_TASK)
    except BackendError as error:
        if error.unauthorized:
            raise
        return no_model_note(error.message)
    if info.get("task") != NODULE_TASK:  # an older backend answers its only model whatever the task
        return no_model_note("this backend has no nodule model.")
    return f"This case has no nodule finding: it was analysed before the nodule model {info['version']} was served."


def load_artifacts(client: BackendClient, case: dict[str, Any], k: int = SIMILAR_K) -> CaseArtifacts:
    """Image, raw heatmap and neighbours (with thumbnails) of one case, requested concurrently; for a case without a
    nodule finding, also why it has none."""
    case_id = str(case["case_id"])
    artifacts = CaseArtifacts(case=case)
    notes = artifacts.notes
    with ThreadPoolExecutor(max_workers=8) as pool:
        image = pool.submit(_attempt, "image", lambda: _image_and_size(client, case_id), notes)
        heatmap = pool.submit(_attempt, "heatmap", lambda: decode_heatmap(client.heatmap_raw(case_id)), notes)
        similar = pool.submit(_attempt, "similar", lambda: client.similar(case_id, k), notes)
        nodule = pool.submit(why_no_nodule_finding, client) if case.get("nodule") is None else None
        shown = image.result()
        artifacts.image, artifacts.image_size = shown if shown is not None else (None, None)
        artifacts.heatmap = heatmap.result()
        if nodule is not None:
            notes["nodule"] = nodule.result()
        answer = similar.result()
        if answer is not None:
            artifacts.neighbours = _neighbours(client, answer, pool)
    return artifacts


def overlay_at(client: BackendClient, artifacts: CaseArtifacts, opacity: float) -> bytes | None:
    """A backend-blended overlay PNG for backends without `?format=raw`; cached per opacity step."""
    step = round(opacity, 1)
    if step not in artifacts.overlays:
        picture = _attempt("heatmap", lambda: client.heatmap_overlay(artifacts.case_id, step), artifacts.notes)
        if picture is None:
            return None
        artifacts.overlays[step] = picture
    return artifacts.overlays[step]


def cached_artifacts(
    store: MutableMapping[str, Any], client: BackendClient, case: dict[str, Any], refresh: bool = False
) -> CaseArtifacts:
    """Artifacts of `case` from the session store, fetched on first use; later case JSON comes via `remember_case`."""
    cache: dict[str, CaseArtifacts] = store.setdefault(CACHE_KEY, {})
    case_id = str(case["case_id"])
    if refresh or case_id not in cache:
        cache[case_id] = load_artifacts(client, case)
        while len(cache) > MAX_CACHED_CASES:
            cache.pop(next(iter(cache)))
    return cache[case_id]


def remember_case(store: MutableMapping[str, Any], case: dict[str, Any]) -> None:
    """Replace the case JSON of a cached view (after sign or review) without refetching its images."""
    cache: dict[str, CaseArtifacts] = store.setdefault(CACHE_KEY, {})
    if str(case.get("case_id")) in cache:
        cache[str(case["case_id"])].case = case
