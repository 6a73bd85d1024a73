"""imaging: from uploaded bytes to a normalized grayscale radiograph and on to a model input.

Public surface:
- `decode_image(bytes) -> DecodedImage` (PNG, JPEG, TIFF 8/16-bit, DICOM incl. compressed transfer syntaxes)
- `PreprocessSpec`, `preprocess`, `to_square_uint8`, `to_model_input`: the one preprocessing path
- `ImagingError` and its subclasses, each with a user-facing message
"""

from imaging.decode import SUPPORTED_FORMATS, DecodedImage, decode_image, dicom_metadata
from imaging.errors import (
    CorruptImageError,
    EmptyImageError,
    ImagingError,
    UnsupportedFormatError,
    UnusableImageError,
)
from imaging.preprocess import PreprocessSpec, preprocess, to_model_input, to_square_uint8

__all__ = [
    "SUPPORTED_FORMATS",
    "CorruptImageError",
    "DecodedImage",
    "EmptyImageError",
    "ImagingError",
    "PreprocessSpec",
    "UnsupportedFormatError",
    "UnusableImageError",
    "decode_image",
    "dicom_metadata",
    "preprocess",
    "to_model_input",
    "to_square_uint8",
]
