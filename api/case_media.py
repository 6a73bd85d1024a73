"""A case's pixels, heatmap and similar cases, from what its analysis stored (one decode, one forward per study).

The analysis decodes an upload once. It keeps the decoded pixels as a 16-bit PNG at WORKING_SIDE (no tags of the
upload) in the artifact store, and the case row carries the embedding. The image, heatmap, similar-case and report
requests read those, on any process: none decodes the original again and none runs a classification forward. The
heatmap is computed once per (case, model version, method) and stored. Cases stored before this (no pixel file, no
embedding) and cases read by another model version fall back to a decode and a forward pass.

An upload inspected first (`POST /v1/dicom/inspect`) is held here for UPLOAD_TTL_S under its sha256, so the study
that follows can name it (`upload_id`) instead of sending and decoding the same bytes again.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
from cachetools import LRUCache, TTLCache
from fastapi import status

from api.errors import ApiError
from case_retrieval import CaseLibrary, Neighbour
from imaging import DecodedImage, decode_image, encode_pixels_png16, from_pixels_png16
from inference import Predictor, heatmap_to_png16
from storage import ArtifactStore, CaseRecord, ImageStore, safe_artifact_name

WORKING_SIDE = 1024  # px of the kept pixels: the largest view the UI and the reports show
PIXELS_ARTIFACT = "pixels-png16.png"
UPLOAD_TTL_S = 600
UPLOADS_HELD = 4  # decoded uploads can be tens of MB each
PIXELS_CACHED = 8


class CaseMedia:
    """Thread-safe; one per API process. Caches only save file reads: the stored files are the truth."""

    def __init__(self, images: ImageStore, artifacts: ArtifactStore) -> None:
        self.images, self.artifacts = images, artifacts
        self._uploads: TTLCache[str, tuple[bytes, DecodedImage]] = TTLCache(UPLOADS_HELD, UPLOAD_TTL_S)
        self._pixels: LRUCache[str, np.ndarray] = LRUCache(PIXELS_CACHED)
        self._lock = threading.Lock()

    # --- uploads --------------------------------------------------------------------------------------------------

    def decode_upload(self, data: bytes) -> tuple[str, DecodedImage]:
        """sha256 and decode of uploaded bytes, held for a study that names it; a held upload is not decoded again."""
        upload_id = hashlib.sha256(data).hexdigest()
        with self._lock:
            held = self._uploads.get(upload_id)
        if held is not None:
            return upload_id, held[1]
        decoded = decode_image(data)
        with self._lock:
            self._uploads[upload_id] = (data, decoded)
        return upload_id, decoded

    def held_upload(self, upload_id: str) -> tuple[bytes, DecodedImage]:
        """The bytes and decode of an inspected upload; 409 once it has expired or was received by another server."""
        with self._lock:
            held = self._uploads.get(upload_id.lower())
        if held is None:
            raise ApiError(
                status.HTTP_409_CONFLICT,
                f"Upload {upload_id[:12]}... is no longer held by this server (uploads are kept "
                f"{UPLOAD_TTL_S // 60} minutes after inspection); send the file itself.",
            )
        return held

    # --- what the analysis keeps -------------------------------------------------------------------------------

    def keep_pixels(self, case_id: str, pixels: np.ndarray) -> None:
        """Store the decoded pixels of a new case (at WORKING_SIDE), so no later request decodes the original."""
        png, kept = encode_pixels_png16(pixels, WORKING_SIDE)
        self.artifacts.put(case_id, PIXELS_ARTIFACT, png)
        with self._lock:
            self._pixels[case_id] = kept

    def pixels(self, record: CaseRecord, detail: int = WORKING_SIDE) -> np.ndarray:
        """The case's decoded pixels in [0, 1], longer side at most WORKING_SIDE; asked for more `detail` (px of the
        longer side) than that, the original is decoded when it has more."""
        original_side = max(int(record.study_metadata.get("width", 0)), int(record.study_metadata.get("height", 0)))
        if detail > WORKING_SIDE and original_side > WORKING_SIDE:
            return decode_image(self.images.get(record.image_sha256)).pixels
        with self._lock:
            cached = self._pixels.get(record.id)
        if cached is not None:
            return cached
        stored = self.artifacts.get(record.id, PIXELS_ARTIFACT)
        if stored is None:  # a case stored before pixels were kept
            self.keep_pixels(record.id, decode_image(self.images.get(record.image_sha256)).pixels)
            return self.pixels(record)
        pixels = from_pixels_png16(stored)
        with self._lock:
            self._pixels[record.id] = pixels
        return pixels

    # --- derived on request --------------------------------------------------------------------------------------

    def heatmap(self, record: CaseRecord, predictor: Predictor, method: str) -> bytes:
        """Raw 16-bit PNG Grad-CAM of the case's predicted class under `predictor`, computed once and stored."""
        name = safe_artifact_name("heatmap", method, predictor.version) + ".png"
        raw = self.artifacts.get(record.id, name)
        if raw is None:
            target = record.prediction if record.prediction in predictor.checkpoint.class_names else None
            raw = heatmap_to_png16(predictor.heatmap(self.pixels(record), method=method, target_class=target).values)
            self.artifacts.put(record.id, name, raw)
        return raw

    def embedding(self, record: CaseRecord, predictor: Predictor) -> np.ndarray:
        """The stored embedding when `predictor` made it; otherwise one forward pass of `predictor`."""
        if record.embedding is not None and record.model_version == predictor.version:
            return np.frombuffer(record.embedding, dtype=np.float32)
        return predictor.predict(self.pixels(record), record.image_sha256).embedding

    def neighbours(self, record: CaseRecord, predictor: Predictor, library: CaseLibrary, k: int) -> list[Neighbour]:
        """The k most similar confirmed cases and reference images (never the case itself), most similar first."""
        embedding = self.embedding(record, predictor)
        return library.search(embedding, k, model_version=predictor.version, exclude_case_id=record.id)
