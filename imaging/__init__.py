"""imaging: from uploaded bytes to a normalized grayscale radiograph, its quality warnings and a model input.

Public surface:
- `decode_image(data, min_side=MIN_SIDE_PX, max_pixels=MAX_PIXELS) -> DecodedImage`: PNG, JPEG, TIFF (8/16-bit,
  float) and DICOM (uncompressed, JPEG baseline, JPEG lossless, JPEG 2000, RLE; MONOCHROME1, rescale, VOI LUT or
  window), with patient/study tags in `DecodedImage.metadata`. `sniff_format(data)` names the format only.
- `assess_quality(decoded, thresholds=None) -> list[QualityWarning]`, `QualityThresholds`, `polarity_score`.
- `to_display_png(pixels, max_side=None) -> bytes`: the decoded image as people see it (UI, case image);
  `to_pixels_png16` / `encode_pixels_png16` / `from_pixels_png16`: a case's decoded pixels kept losslessly, without
  tags.
- `PreprocessSpec`, `preprocess`, `to_square_uint8`, `to_model_input`: the one preprocessing path.
- `ImagingError` and its subclasses (`EmptyImageError` 400, `UnsupportedFormatError` 415, `CorruptImageError` 422,
  `UnusableImageError` 422 in the API), each with a user-facing message and a stable `code`.
- `dicom_metadata(dataset)`, `patient_age_years(age, birth_date, study_date)`, `DICOM_TAGS`.
- De-identification (PS3.15 basic profile, dates shifted, UIDs remapped consistently): `Deidentifier(secret)`,
  `deidentify_dataset(ds, key)`, `deidentify_dicom(data, key)`, `DeidentificationError`.
"""

from imaging.decode import MAX_PIXELS, MIN_SIDE_PX, SUPPORTED_FORMATS, DecodedImage, decode_image, sniff_format
from imaging.deidentify import DeidentificationError, Deidentifier, deidentify_dataset, deidentify_dicom
from imaging.dicom import DICOM_TAGS, dicom_metadata, patient_age_years
from imaging.display import encode_pixels_png16, from_pixels_png16, to_display_png, to_pixels_png16
from imaging.errors import (
    CorruptImageError,
    EmptyImageError,
    ImagingError,
    UnsupportedFormatError,
    UnusableImageError,
)
from imaging.preprocess import PreprocessSpec, preprocess, to_model_input, to_square_uint8
from imaging.quality import QualityThresholds, QualityWarning, assess_quality, polarity_score

__all__ = [
    "DICOM_TAGS",
    "MAX_PIXELS",
    "MIN_SIDE_PX",
    "SUPPORTED_FORMATS",
    "CorruptImageError",
    "DecodedImage",
    "DeidentificationError",
    "Deidentifier",
    "EmptyImageError",
    "ImagingError",
    "PreprocessSpec",
    "QualityThresholds",
    "QualityWarning",
    "UnsupportedFormatError",
    "UnusableImageError",
    "assess_quality",
    "decode_image",
    "deidentify_dataset",
    "deidentify_dicom",
    "dicom_metadata",
    "encode_pixels_png16",
    "from_pixels_png16",
    "patient_age_years",
    "polarity_score",
    "preprocess",
    "sniff_format",
    "to_display_png",
    "to_model_input",
    "to_pixels_png16",
    "to_square_uint8",
]
