"""Decode PNG, JPEG, TIFF and DICOM bytes into one normalized grayscale array plus metadata.

Every consumer (training, serving, reports) goes through `decode_image`, so a radiograph looks the same to the
model whichever way it arrived. Pixels come back as float32 in [0, 1], 0 = black (no attenuation shown as dark),
whatever the photometric interpretation of the source.

The format is chosen from the file's magic bytes, never from its name, and Pillow is only allowed the three
raster formats we support, so no other decoder ever sees an upload. Every failure is an `ImagingError`
subclass: hostile or damaged input gets a 4xx answer, never a crash.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imaging.dicom import DICOM_TAGS, decode_dicom, dicom_metadata, looks_like_dicom
from imaging.errors import (
    CorruptImageError,
    EmptyImageError,
    ImagingError,
    UnsupportedFormatError,
    UnusableImageError,
)
from imaging.image import (
    MAX_PIXELS,
    MIN_SIDE_PX,
    DecodedImage,
    check_chest_shape,
    check_min_side,
    check_pixel_count,
    colored_pixel_fraction,
    is_decoder_panic,
    scale_to_unit,
)

__all__ = [
    "DICOM_TAGS",
    "MAX_PIXELS",
    "MIN_SIDE_PX",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "decode_image",
    "dicom_metadata",
    "sniff_format",
]

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("PNG", "JPEG", "TIFF", "DICOM")
# Pillow's own decompression-bomb guard stays as a second line of defence behind `check_pixel_count`.
Image.MAX_IMAGE_PIXELS = 100_000_000

_RASTER_MAGIC: dict[str, tuple[bytes, ...]] = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),  # classic and BigTIFF, both byte orders
}
# Pillow plugins allowed per sniffed format (MPO is Pillow's name for a multi-picture JPEG).
_PILLOW_FORMATS = {"PNG": ["PNG"], "JPEG": ["JPEG", "MPO"], "TIFF": ["TIFF"]}
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def decode_image(data: bytes, min_side: int = MIN_SIDE_PX, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode any supported upload; raise an `ImagingError` subclass with a user-facing message otherwise.

    `min_side`: smallest side (px) accepted; `max_pixels`: largest image decoded (checked from the header,
    before pixel memory is allocated).
    """
    if not data:
        raise EmptyImageError("The uploaded file is empty.")
    data = bytes(data)
    fmt = sniff_format(data)
    if fmt is None:
        raise _unsupported()
    try:
        decoded = decode_dicom(data, max_pixels) if fmt == "DICOM" else _decode_raster(data, fmt, max_pixels)
    except ImagingError:
        raise
    except BaseException as exc:  # last resort: a decoder bug on hostile input must still be a 4xx, not a 500
        if not isinstance(exc, Exception) and not is_decoder_panic(exc):
            raise  # KeyboardInterrupt, SystemExit, ...
        logger.warning("unexpected %s while decoding a %s upload", type(exc).__name__, fmt, exc_info=True)
        raise CorruptImageError(f"The {fmt} file could not be decoded ({type(exc).__name__}).") from None
    check_min_side(decoded, min_side)
    check_chest_shape(decoded)
    return decoded


def sniff_format(data: bytes) -> str | None:
    """The supported format the bytes are in, by magic number; None when they are in none of them."""
    if looks_like_dicom(data):
        return "DICOM"
    for fmt, magics in _RASTER_MAGIC.items():
        if data.startswith(magics):
            return fmt
    return None


def _unsupported() -> UnsupportedFormatError:
    return UnsupportedFormatError(
        "The file is not an image in a supported format. Supported formats: " + ", ".join(SUPPORTED_FORMATS) + "."
    )


def _decode_raster(data: bytes, fmt: str, max_pixels: int) -> DecodedImage:
    image = _open_raster(data, fmt)
    check_pixel_count(image.width, image.height, max_pixels)
    multi_frame = _is_multi_frame(image)
    try:
        image.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on damage
        raise CorruptImageError(f"The {fmt} file is truncated or damaged ({_describe(exc)}).") from None
    image = _apply_exif_orientation(image)
    pixels, colored = _raster_to_gray(image)
    metadata = {
        "width": image.width,
        "height": image.height,
        "source_bits": _bits_of(image),
        "source_mode": image.mode,
        "channels": len(image.getbands()),
        "colored_pixel_fraction": colored,
        "multi_frame": multi_frame,
    }
    return DecodedImage(pixels=pixels, format=fmt, metadata=metadata)


def _open_raster(data: bytes, fmt: str) -> Image.Image:
    """Parse the header only; the magic bytes already said which format, so any failure means damage."""
    try:
        return Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[fmt])
    except Image.DecompressionBombError:
        raise UnusableImageError(
            f"The {fmt} file declares an image of more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP; at most"
            f" {MAX_PIXELS / 1e6:.0f} MP can be analysed."
        ) from None
    except UnidentifiedImageError:
        raise CorruptImageError(f"The {fmt} file is truncated or its header is damaged.") from None
    except Exception as exc:
        raise CorruptImageError(f"The {fmt} file could not be read ({_describe(exc)}).") from None


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _is_multi_frame(image: Image.Image) -> bool:
    """True for a multi-page TIFF or an animated PNG; only the first frame is analysed (a quality warning says so).

    `is_animated` seeks at most to the second frame, so a hostile chain of thousands of TIFF pages costs nothing.
    An MPO's extra pictures are previews of the primary one and do not count.
    """
    if image.format == "MPO":
        return False
    try:
        return bool(getattr(image, "is_animated", False))
    except Exception as exc:
        raise CorruptImageError(f"The {image.format} file has a damaged frame structure ({_describe(exc)}).") from None
    finally:
        _rewind(image)


def _rewind(image: Image.Image) -> None:
    with contextlib.suppress(EOFError, ValueError, OSError):  # single-frame images cannot seek; that is fine
        image.seek(0)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Show the image upright as a viewer would; an unreadable EXIF block keeps the stored orientation."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:
        return image


def _bits_of(image: Image.Image) -> int:
    if image.mode in ("I", "F"):
        return 32
    return 16 if image.mode.startswith("I;16") else 8


def _raster_to_gray(image: Image.Image) -> tuple[np.ndarray, float]:
    """Grayscale float32 [0, 1] plus the share of clearly coloured pixels (0 for a grayscale source).

    8-bit sources are divided by 255 (their intended display); deeper sources keep their full dynamic range
    by min-max scaling, since their nominal maximum (65535) is rarely used by 10-14 bit detectors.
    """
    if image.mode in _HIGH_DEPTH_MODES:
        return scale_to_unit(np.asarray(image)), 0.0
    if image.mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, 0.0
    try:
        rgb = image.convert("RGB")
    except (ValueError, OSError):
        raise UnsupportedFormatError(f"The image uses the {image.mode} colour model, which is not supported.") from None
    colored = colored_pixel_fraction(np.asarray(rgb), 255.0)
    return np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0, colored
