"""Decode PNG, JPEG, TIFF and DICOM bytes into one normalized grayscale array plus metadata.

Every consumer (training, serving, reports) goes through `decode_image`, so a radiograph looks the same to the
model whichever way it arrived. Pixels come back as float32 in [0, 1], 0 = black (no attenuation shown as dark),
whatever the photometric interpretation of the source.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from imaging.errors import CorruptImageError, EmptyImageError, UnsupportedFormatError, UnusableImageError

SUPPORTED_FORMATS = ("PNG", "JPEG", "TIFF", "DICOM")
MIN_SIDE_PX = 64  # below this a chest radiograph carries too little detail to analyse
PROJECTION_MODALITIES = {"CR", "DX", "DR", "RG", "MG", "OT", "PX"}  # OT/PX: secondary captures of radiographs
DICOM_TAGS = (
    "PatientID",
    "PatientName",
    "PatientSex",
    "PatientAge",
    "PatientBirthDate",
    "StudyDate",
    "StudyInstanceUID",
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "Manufacturer",
)
# PIL decompression-bomb guard: a radiograph above ~100 MP is not a radiograph.
Image.MAX_IMAGE_PIXELS = 100_000_000


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # float32, shape (H, W), values in [0, 1]
    format: str  # one of SUPPORTED_FORMATS
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def decode_image(data: bytes, min_side: int = MIN_SIDE_PX) -> DecodedImage:
    """Decode any supported upload; raise an `ImagingError` subclass with a user-facing message otherwise."""
    if not data:
        raise EmptyImageError("The uploaded file is empty.")
    decoded = _decode_dicom(data) if _looks_like_dicom(data) else _decode_raster(data)
    if min(decoded.pixels.shape) < min_side:
        raise UnusableImageError(
            f"Image is {decoded.width}x{decoded.height} px; at least {min_side} px per side is needed for analysis."
        )
    return decoded


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _unsupported() -> UnsupportedFormatError:
    return UnsupportedFormatError(
        "The file is not an image in a supported format. Supported formats: " + ", ".join(SUPPORTED_FORMATS) + "."
    )


def _decode_raster(data: bytes) -> DecodedImage:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _unsupported() from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"The image could not be read: {exc}.") from None
    fmt = "JPEG" if image.format == "MPO" else image.format
    if fmt not in SUPPORTED_FORMATS:
        raise _unsupported()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
        pixels = _raster_to_gray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CorruptImageError(f"The {fmt} file is truncated or damaged ({exc}).") from None
    meta = {"source_bits": _bits_of(image), "source_mode": image.mode, "width": image.width, "height": image.height}
    return DecodedImage(pixels=pixels, format=fmt, metadata=meta)


def _bits_of(image: Image.Image) -> int:
    return 16 if image.mode in ("I;16", "I;16B", "I;16L", "I", "F") else 8


def _raster_to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        return _scale_to_unit(array)
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA").convert("RGB") if image.mode != "LA" else image.convert("L")
    gray = image.convert("L")
    return np.asarray(gray, dtype=np.float32) / 255.0


def _scale_to_unit(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32, copy=False)
    lo, hi = float(np.min(array)), float(np.max(array))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise CorruptImageError("The image holds non-finite pixel values.")
    if hi <= lo:
        return np.zeros_like(array, dtype=np.float32)
    return (array - lo) / (hi - lo)


def _decode_dicom(data: bytes) -> DecodedImage:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptImageError(f"The DICOM file could not be parsed ({type(exc).__name__}).") from None
    metadata = dicom_metadata(ds)
    _check_projection_radiograph(ds)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for broken or unsupported pixel data
        raise CorruptImageError(
            f"The DICOM pixel data could not be decoded (transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')}:"
            f" {type(exc).__name__})."
        ) from None
    if raw.ndim != 2:
        raise UnusableImageError(
            f"DICOM pixel data has shape {raw.shape}; a single-frame grayscale radiograph is required."
        )
    pixels = _dicom_to_display(ds, raw)
    metadata.update({"source_bits": int(ds.get("BitsStored", 8) or 8), "width": raw.shape[1], "height": raw.shape[0]})
    return DecodedImage(pixels=pixels, format="DICOM", metadata=metadata)


def _check_projection_radiograph(ds: pydicom.Dataset) -> None:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnusableImageError("The DICOM file holds no pixel data (it is not an image).")
    modality = str(ds.get("Modality", "") or "").upper()
    if modality and modality not in PROJECTION_MODALITIES:
        raise UnusableImageError(
            f"DICOM modality {modality} is not a projection radiograph; a chest X-ray (CR/DX) is required."
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnusableImageError(
            f"The DICOM file holds {frames} frames; a single-frame projection radiograph is required."
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise UnusableImageError("The DICOM image is in colour; a grayscale radiograph is required.")


def _dicom_to_display(ds: pydicom.Dataset, raw: np.ndarray) -> np.ndarray:
    """Modality LUT (rescale), then VOI LUT or window, then MONOCHROME1 inversion, scaled to [0, 1]."""
    values = apply_modality_lut(raw, ds).astype(np.float32)
    has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
    # A broken VOI module falls back to the full range, which is still diagnostic.
    if has_voi:
        with contextlib.suppress(ValueError, TypeError, IndexError, KeyError):
            values = apply_voi_lut(values, ds, index=0).astype(np.float32)
    pixels = _scale_to_unit(values)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def dicom_metadata(ds: pydicom.Dataset) -> dict[str, Any]:
    """The patient and study tags the case record and UI use, as plain strings (absent tags left out)."""
    meta: dict[str, Any] = {}
    for keyword in DICOM_TAGS:
        value = ds.get(keyword)
        if value is not None and str(value).strip():
            meta[keyword] = str(value).strip()
    meta["PhotometricInterpretation"] = str(ds.get("PhotometricInterpretation", ""))
    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsuid is not None:
        meta["TransferSyntaxUID"] = str(tsuid)
    return meta
