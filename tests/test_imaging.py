"""imaging/: decoding every supported format and DICOM variant, every error class, metadata, quality checks,
preprocessing. Inputs come from tests/factories.py; the real-data tests use ../shared/datasets."""

from __future__ import annotations

import csv
import dataclasses
import io
import struct
import time
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from imaging import (
    CorruptImageError,
    DecodedImage,
    EmptyImageError,
    ImagingError,
    PreprocessSpec,
    QualityThresholds,
    UnsupportedFormatError,
    UnusableImageError,
    assess_quality,
    decode_image,
    encode_pixels_png16,
    from_pixels_png16,
    patient_age_years,
    polarity_score,
    preprocess,
    sniff_format,
    to_display_png,
    to_model_input,
    to_pixels_png16,
    to_square_uint8,
)
from imaging.dicom import codestream_size, window_to_unit
from tests.factories import (
    COMPRESSED_TRANSFER_SYNTAXES,
    DEFAULT_PATIENT_TAGS,
    NATIVE_TRANSFER_SYNTAXES,
    dicom_bytes,
    jpeg_bytes,
    jpeg_declaring_size,
    png_bomb,
    png_bytes,
    png_declaring_size,
    synthetic_radiograph,
    tiff_bytes,
    to_stored,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns loudly about damaged files

SIDE = 128
LOSSY = {JPEGBaseline8Bit, JPEG2000}


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    return synthetic_radiograph(SIDE, SIDE + 16)


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    """Large enough (>= 224 px) that the small-image check stays quiet."""
    return synthetic_radiograph(256, 240, seed=3)


def full_range(stored: np.ndarray) -> np.ndarray:
    """What a viewer shows without a VOI module: the stored range stretched to [0, 1]."""
    values = stored.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


def codes(decoded: DecodedImage, thresholds: QualityThresholds | None = None) -> list[str]:
    return [warning.code for warning in assess_quality(decoded, thresholds)]


# --- raster formats -----------------------------------------------------------------------------------------------


def test_png_8bit_is_divided_by_255(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph)
    decoded = decode_image(png_bytes(stored))
    assert decoded.format == "PNG" and decoded.pixels.dtype == np.float32
    assert decoded.pixels.shape == stored.shape == (decoded.height, decoded.width)
    np.testing.assert_array_equal(decoded.pixels, stored.astype(np.float32) / 255.0)
    assert decoded.metadata["source_bits"] == 8 and decoded.metadata["channels"] == 1


@pytest.mark.parametrize(
    "encode",
    [
        png_bytes,
        tiff_bytes,
        lambda a: tiff_bytes(a, compression="zlib"),
        lambda a: tiff_bytes(a.astype(">u2")),
    ],
    ids=["png", "tiff", "tiff-deflate", "tiff-big-endian"],
)
def test_16bit_keeps_its_dynamic_range(radiograph: np.ndarray, encode: Callable[[np.ndarray], bytes]) -> None:
    stored = to_stored(radiograph, 12).astype(np.uint16)  # a 12-bit detector in 16-bit words
    decoded = decode_image(encode(stored))
    assert decoded.metadata["source_bits"] == 16
    np.testing.assert_allclose(decoded.pixels, full_range(stored), atol=1e-6)
    assert len(np.unique(decoded.pixels)) > 1000  # not squeezed into 256 levels


def test_float_tiff(radiograph: np.ndarray) -> None:
    decoded = decode_image(tiff_bytes(radiograph.astype(np.float32)))
    np.testing.assert_allclose(decoded.pixels, full_range(radiograph.astype(np.float32)), atol=1e-5)


def test_float_tiff_with_nan_is_corrupt(radiograph: np.ndarray) -> None:
    pixels = radiograph.astype(np.float32)
    pixels[5, 5] = np.nan
    with pytest.raises(CorruptImageError, match="non-finite"):
        decode_image(tiff_bytes(pixels))


def test_jpeg_grayscale_and_rgb(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph)
    gray = decode_image(jpeg_bytes(stored))
    rgb = decode_image(jpeg_bytes(np.stack([stored] * 3, axis=-1)))
    for decoded in (gray, rgb):
        assert decoded.format == "JPEG"
        assert np.abs(decoded.pixels - stored / 255.0).mean() < 0.01
    assert rgb.metadata["channels"] == 3
    assert rgb.metadata["colored_pixel_fraction"] == 0.0  # gray saved as RGB is not colour


def test_jpeg_exif_orientation_is_applied() -> None:
    stored = to_stored(synthetic_radiograph(100, 200))
    decoded = decode_image(jpeg_bytes(stored, exif_orientation=6))  # rotate 90 degrees clockwise to display
    assert (decoded.height, decoded.width) == (200, 100)
    np.testing.assert_allclose(decoded.pixels, np.rot90(stored, k=-1) / 255.0, atol=0.05)


def test_colour_source_is_measured(radiograph: np.ndarray) -> None:
    rgb = np.stack([to_stored(radiograph)] * 3, axis=-1)
    rgb[20:60, 20:80, 0] = 255  # a red annotation
    for data in (png_bytes(rgb), tiff_bytes(rgb), dicom_bytes(rgb), dicom_bytes(rgb, transfer_syntax=JPEGBaseline8Bit)):
        decoded = decode_image(data)
        assert decoded.metadata["colored_pixel_fraction"] == pytest.approx(40 * 60 / rgb[..., 0].size, rel=0.1)
        assert "color_source" in codes(decoded)


def test_png_with_alpha_and_palette(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph)
    rgba = np.dstack([stored, stored, stored, np.full_like(stored, 128)])
    np.testing.assert_allclose(decode_image(png_bytes(rgba)).pixels, stored / 255.0, atol=1 / 255)
    buffer = io.BytesIO()
    Image.fromarray(stored).convert("P").save(buffer, "PNG")
    assert decode_image(buffer.getvalue()).pixels.shape == stored.shape


def test_multi_page_tiff_uses_first_page_and_warns(radiograph: np.ndarray) -> None:
    decoded = decode_image(tiff_bytes(to_stored(radiograph), pages=3))
    assert decoded.metadata["multi_frame"] is True
    assert "multiple_frames" in codes(decoded)


def test_format_is_sniffed_from_content_not_name(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph)
    assert sniff_format(png_bytes(stored)) == "PNG"
    assert sniff_format(jpeg_bytes(stored)) == "JPEG"
    assert sniff_format(tiff_bytes(stored)) == "TIFF"
    assert sniff_format(dicom_bytes(stored)) == "DICOM"
    assert sniff_format(dicom_bytes(stored, preamble=False)) == "DICOM"
    assert sniff_format(b"GIF89a....") is None


# --- DICOM: transfer syntaxes, bit depths, display pipeline -----------------------------------------------------


def _transfer_syntax_cases() -> list[tuple[str, int]]:
    cases = []
    for uid in (*NATIVE_TRANSFER_SYNTAXES, *COMPRESSED_TRANSFER_SYNTAXES):
        for bits in (8, 12, 16):
            if uid == JPEGBaseline8Bit and bits > 8:
                continue  # baseline JPEG is 8-bit only
            cases.append((uid, bits))
    return cases


@pytest.mark.parametrize(("transfer_syntax", "bits"), _transfer_syntax_cases())
def test_dicom_transfer_syntaxes_and_bit_depths(radiograph: np.ndarray, transfer_syntax: str, bits: int) -> None:
    stored = to_stored(radiograph, bits)
    decoded = decode_image(dicom_bytes(stored, transfer_syntax=transfer_syntax, bits_stored=bits))
    assert decoded.format == "DICOM"
    assert decoded.metadata["TransferSyntaxUID"] == transfer_syntax
    assert decoded.metadata["source_bits"] == bits
    if transfer_syntax in LOSSY:  # lossy codecs smooth the fine noise: compare structure, not values
        assert np.corrcoef(decoded.pixels.ravel(), full_range(stored).ravel())[0, 1] > 0.97
        assert np.abs(decoded.pixels - full_range(stored)).mean() < 0.05
    else:
        np.testing.assert_allclose(decoded.pixels, full_range(stored), atol=1e-6)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless])
def test_monochrome1_is_inverted(radiograph: np.ndarray, transfer_syntax: str) -> None:
    stored = to_stored(radiograph)
    mono2 = decode_image(dicom_bytes(stored, transfer_syntax=transfer_syntax))
    mono1 = decode_image(dicom_bytes(stored, transfer_syntax=transfer_syntax, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono1.pixels, 1.0 - mono2.pixels, atol=1e-6)
    assert "possibly_inverted" in codes(mono1) and "possibly_inverted" not in codes(mono2)


def test_rescale_slope_and_intercept_with_window(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph, 12)
    slope, intercept, center, width = 2.0, -1024.0, 2000.0, 3000.0
    decoded = decode_image(dicom_bytes(stored, bits_stored=12, rescale=(slope, intercept), window=(center, width)))
    values = stored * slope + intercept
    expected = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-5)
    assert decoded.metadata["voi"] == "window"


def test_negative_rescale_slope_inverts_display(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph, 12)
    decoded = decode_image(dicom_bytes(stored, bits_stored=12, rescale=(-1.0, 4095.0)))
    np.testing.assert_allclose(decoded.pixels, 1.0 - full_range(stored), atol=1e-6)


def test_signed_pixels_with_rescale(radiograph: np.ndarray) -> None:
    stored = (to_stored(radiograph, 12).astype(np.int16) - 2048).astype(np.int16)
    decoded = decode_image(dicom_bytes(stored, bits_stored=12, rescale=(1.0, 100.0)))
    np.testing.assert_allclose(decoded.pixels, full_range(stored), atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_window_functions(radiograph: np.ndarray, function: str) -> None:
    stored = to_stored(radiograph, 12)
    center, width = 1800.0, 1200.0
    decoded = decode_image(dicom_bytes(stored, bits_stored=12, window=(center, width), voi_lut_function=function))
    if function == "LINEAR_EXACT":
        expected = np.clip((stored - center) / width + 0.5, 0, 1)
    else:
        expected = 1 / (1 + np.exp(-4 * (stored - center) / width))
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-5)


def test_window_edge_cases() -> None:
    values = np.array([0.0, 99.0, 100.0, 101.0, 200.0])
    np.testing.assert_array_equal(window_to_unit(values, 100.5, 1.0), [0, 0, 0, 1, 1])  # width 1: x > c - 0.5
    with pytest.raises(ValueError):
        window_to_unit(values, 100.0, 0.5, "LINEAR")
    with pytest.raises(ValueError):
        window_to_unit(values, 100.0, 10.0, "CUBIC")


@pytest.mark.parametrize("window", [(2000.0, 0.0), (2000.0, -5.0)])
def test_invalid_window_falls_back_to_full_range(radiograph: np.ndarray, window: tuple[float, float]) -> None:
    stored = to_stored(radiograph, 12)
    decoded = decode_image(dicom_bytes(stored, bits_stored=12, window=window))
    np.testing.assert_allclose(decoded.pixels, full_range(stored), atol=1e-6)
    assert decoded.metadata["voi"] == "none"


def test_unparseable_window_falls_back_to_full_range(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph, 12)
    data = dicom_bytes(stored, bits_stored=12, window=(100, 100), raw_tags={"WindowWidth": ("LO", "abc")})
    np.testing.assert_allclose(decode_image(data).pixels, full_range(stored), atol=1e-6)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_voi_lut_sequence(radiograph: np.ndarray, transfer_syntax: str) -> None:
    stored = to_stored(radiograph, 12)
    first_mapped = 500
    lut = (np.sqrt(np.linspace(0, 1, 3000)) * 60000 + 1000).astype(np.uint16)
    data = dicom_bytes(
        stored,
        bits_stored=12,
        transfer_syntax=transfer_syntax,
        voi_lut=lut,
        voi_lut_first_mapped=first_mapped,
        window=(10.0, 5.0),  # present but the LUT wins
    )
    decoded = decode_image(data)
    index = np.clip(stored.astype(np.int64) - first_mapped, 0, lut.size - 1)
    expected = (lut[index] - lut.min()) / (lut.max() - lut.min())  # the LUT's own output range, not the image's
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-5)
    assert decoded.metadata["voi"] == "lut"


def test_voi_lut_with_monochrome1(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph, 12)
    lut = np.linspace(0, 4095, 4096).astype(np.uint16)
    mono1 = decode_image(dicom_bytes(stored, bits_stored=12, voi_lut=lut, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono1.pixels, 1.0 - stored / 4095.0, atol=1e-5)


def test_pixel_padding_is_black_and_ignored_for_range(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph, 12)
    padded = stored.copy()
    padded[:, :10] = 4095  # padding brighter than anything real
    decoded = decode_image(dicom_bytes(padded, bits_stored=12, extra_tags={"PixelPaddingValue": 4095}))
    assert np.all(decoded.pixels[:, :10] == 0.0)
    np.testing.assert_allclose(decoded.pixels[:, 10:], full_range(stored[:, 10:]), atol=1e-6)


def test_bare_dataset_without_preamble(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph, 12)
    for transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        decoded = decode_image(dicom_bytes(stored, bits_stored=12, transfer_syntax=transfer_syntax, preamble=False))
        np.testing.assert_allclose(decoded.pixels, full_range(stored), atol=1e-6)


def test_codestream_size_parsing(radiograph: np.ndarray) -> None:
    jpeg = jpeg_bytes(to_stored(radiograph))
    assert codestream_size(jpeg) == (SIDE + 16, SIDE)
    assert codestream_size(jpeg_declaring_size(jpeg, 5000, 4000)) == (5000, 4000)
    assert codestream_size(b"not a codestream") is None


# --- DICOM metadata ------------------------------------------------------------------------------------------------


def test_patient_and_study_tags(radiograph: np.ndarray) -> None:
    decoded = decode_image(dicom_bytes(to_stored(radiograph), modality="CR"))
    for keyword, value in DEFAULT_PATIENT_TAGS.items():
        assert decoded.metadata[keyword] == value
    assert decoded.metadata["Modality"] == "CR"
    assert decoded.metadata["PhotometricInterpretation"] == "MONOCHROME2"
    assert decoded.metadata["patient_age_years"] == 34
    assert len(decoded.metadata["StudyInstanceUID"]) > 10


def test_absent_or_damaged_tags_are_left_out(radiograph: np.ndarray) -> None:
    data = dicom_bytes(to_stored(radiograph), patient={"PatientID": "P-7"}, raw_tags={"PatientAge": ("LO", "abc")})
    metadata = decode_image(data).metadata
    assert metadata["PatientID"] == "P-7"
    assert "PatientName" not in metadata and "patient_age_years" not in metadata


def test_metadata_is_json_serialisable(radiograph: np.ndarray) -> None:
    import json

    for data in (dicom_bytes(to_stored(radiograph)), png_bytes(to_stored(radiograph))):
        json.dumps(decode_image(data).metadata)


@pytest.mark.parametrize(
    ("age", "birth", "study", "years"),
    [
        ("045Y", None, None, 45),
        ("018M", None, None, 1),
        ("011M", None, None, 0),
        ("003W", None, None, 0),
        ("400D", None, None, 1),
        ("62", None, None, 62),
        (None, "19900115", "20240114", 33),
        (None, "19900115", "20240115", 34),
        ("junk", "19900115", "20240115", 34),
        (None, "19900115", None, None),
        (None, "20250101", "20240101", None),
        (None, "19901345", "20240101", None),
    ],
)
def test_patient_age_years(age: str | None, birth: str | None, study: str | None, years: int | None) -> None:
    assert patient_age_years(age, birth, study) == years


# --- every error class ---------------------------------------------------------------------------------------------


def test_error_classes_and_codes() -> None:
    expected = {
        EmptyImageError: "empty_image",
        UnsupportedFormatError: "unsupported_format",
        CorruptImageError: "corrupt_image",
        UnusableImageError: "unusable_image",
    }
    for error_class, code in expected.items():
        assert issubclass(error_class, ImagingError) and issubclass(error_class, ValueError)
        assert error_class.code == code


@pytest.mark.parametrize("data", [b"", bytearray()])
def test_empty_upload(data: bytes) -> None:
    with pytest.raises(EmptyImageError, match="empty"):
        decode_image(data)


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (100, 100)).save(buffer, "GIF")
    return buffer.getvalue()


def _bmp() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (100, 100)).save(buffer, "BMP")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [b"hello, not an image", b"%PDF-1.7\n...", b"\x00" * 500, _gif(), _bmp(), b"\x89PN"],
    ids=["text", "pdf", "zeros", "gif", "bmp", "too-short"],
)
def test_unsupported_formats_list_the_supported_ones(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError, match="PNG, JPEG, TIFF, DICOM"):
        decode_image(data)


def _truncation_inputs() -> dict[str, bytes]:
    image = synthetic_radiograph(SIDE, SIDE)
    stored8, stored16 = to_stored(image), to_stored(image, 16)
    inputs = {
        "png8": png_bytes(stored8),
        "png16": png_bytes(stored16),
        "jpeg": jpeg_bytes(stored8),
        "tiff8": tiff_bytes(stored8),
        "tiff16": tiff_bytes(stored16),
        "tiff-deflate": tiff_bytes(stored16, compression="zlib"),
    }
    for uid in (*NATIVE_TRANSFER_SYNTAXES, *COMPRESSED_TRANSFER_SYNTAXES):
        inputs[f"dicom-{uid.keyword}"] = dicom_bytes(stored8, transfer_syntax=uid)
    return inputs


TRUNCATION_INPUTS = _truncation_inputs()


@pytest.mark.parametrize("name", sorted(TRUNCATION_INPUTS))
def test_truncated_files_are_corrupt(name: str) -> None:
    data = TRUNCATION_INPUTS[name]
    # Cuts from just past the magic bytes / DICOM preamble to just before the end of the image data (a file's
    # last bytes are end markers, checksums or delimiters whose loss can leave the image whole).
    start = 140 if name.startswith("dicom") else 12
    for cut in sorted({start, 300, *(int(len(data) * f) for f in (0.25, 0.5, 0.75, 0.95)), len(data) - 32}):
        with pytest.raises(CorruptImageError):
            decode_image(data[:cut])


@pytest.mark.parametrize("name", sorted(TRUNCATION_INPUTS))
def test_random_damage_never_escapes_as_another_exception(name: str) -> None:
    data = TRUNCATION_INPUTS[name]
    rng = np.random.default_rng(7)
    outcomes: Counter[str] = Counter()
    for _ in range(40):
        damaged = bytearray(data)
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 12))):
            damaged[position] = int(rng.integers(0, 256))
        started = time.process_time()  # CPU time: the test machine may be busy with other work
        try:
            decode_image(bytes(damaged))
            outcomes["decoded"] += 1
        except ImagingError as error:  # anything else fails the test
            outcomes[type(error).__name__] += 1
        assert time.process_time() - started < 5.0
    assert sum(outcomes.values()) == 40


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"modality": "CT"}, "modality CT is not a projection"),
        ({"modality": "MR"}, "modality MR is not a projection"),
    ],
)
def test_non_projection_modalities_are_unusable(radiograph: np.ndarray, extra: dict, match: str) -> None:
    stored = to_stored(radiograph, 12).astype(np.int16)
    with pytest.raises(UnusableImageError, match=match):
        decode_image(dicom_bytes(stored, bits_stored=12, **extra))


def test_multi_frame_dicom_is_unusable(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph)
    for transfer_syntax in (ExplicitVRLittleEndian, JPEGBaseline8Bit):
        with pytest.raises(UnusableImageError, match="3 frames"):
            decode_image(dicom_bytes(np.stack([stored] * 3), transfer_syntax=transfer_syntax))


def test_dicom_without_pixel_data() -> None:
    report = dicom_bytes(None, modality="SR", extra_tags={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.11"})
    with pytest.raises(UnusableImageError, match="no pixel data"):
        decode_image(report)
    with pytest.raises(CorruptImageError, match="no pixel data"):  # an image class without its image: cut short
        decode_image(dicom_bytes(None, modality="DX"))


def test_too_small_is_unusable() -> None:
    stored = to_stored(synthetic_radiograph(40, 150))
    with pytest.raises(UnusableImageError, match="at least 64 px"):
        decode_image(png_bytes(stored))
    with pytest.raises(UnusableImageError, match="at least 64 px"):
        decode_image(dicom_bytes(stored))
    assert decode_image(png_bytes(stored), min_side=32).height == 40


@pytest.mark.parametrize(
    ("tags", "error", "match"),
    [
        ({"raw_tags": {"NumberOfFrames": ("LO", "abc")}}, CorruptImageError, "NumberOfFrames is not a valid number"),
        ({"extra_tags": {"Rows": 0}}, CorruptImageError, "valid image size"),
        ({"extra_tags": {"Rows": SIDE - 20}}, CorruptImageError, "header declares"),
        ({"extra_tags": {"Rows": SIDE + 20}}, CorruptImageError, "truncated"),
        ({"extra_tags": {"BitsAllocated": 32}}, CorruptImageError, "truncated"),
        ({"photometric": "YBR_FULL"}, UnsupportedFormatError, "photometric interpretation YBR_FULL"),
        ({"declared_transfer_syntax": "1.2.840.10008.1.2.4.100"}, UnsupportedFormatError, "MPEG2"),
        ({"declared_transfer_syntax": "1.2.3.4.5"}, UnsupportedFormatError, "1.2.3.4.5 is not supported"),
    ],
)
def test_damaged_or_exotic_dicom_headers(tags: dict, error: type[ImagingError], match: str) -> None:
    stored = to_stored(synthetic_radiograph(SIDE, SIDE), 12)
    with pytest.raises(error, match=match):
        decode_image(dicom_bytes(stored, bits_stored=12, **tags))


# --- hostile input: bounded time and memory -------------------------------------------------------------------------


def _bounded(call: Callable[[], object], seconds: float = 3.0, megabytes: int = 64) -> None:
    """`call` must raise an ImagingError quickly (CPU time) without allocating much (numpy and Python memory)."""
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ImagingError):
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.process_time() - started < seconds
    assert peak < megabytes * 2**20


def test_huge_declared_raster_sizes_are_refused_before_decoding(radiograph: np.ndarray) -> None:
    jpeg = jpeg_bytes(to_stored(radiograph))
    _bounded(lambda: decode_image(png_declaring_size(100_000, 100_000)))
    _bounded(lambda: decode_image(png_declaring_size(9_000, 9_000)))
    _bounded(lambda: decode_image(jpeg_declaring_size(jpeg, 60_000, 60_000)))
    _bounded(lambda: decode_image(jpeg_declaring_size(jpeg, 9_000, 9_000)))
    with pytest.raises(UnusableImageError, match="at most 50 MP"):
        decode_image(png_declaring_size(9_000, 9_000))


def test_png_decompression_bomb(radiograph: np.ndarray) -> None:
    bomb = png_bomb(8_000)  # 64 MP of black in a few kB
    assert len(bomb) < 100_000
    _bounded(lambda: decode_image(bomb))
    with pytest.raises(UnusableImageError, match="64 MP"):
        decode_image(bomb)


def test_dicom_huge_declared_size(radiograph: np.ndarray) -> None:
    data = dicom_bytes(to_stored(radiograph), extra_tags={"Rows": 60_000, "Columns": 60_000})
    _bounded(lambda: decode_image(data))
    with pytest.raises(UnusableImageError, match="3600 MP"):
        decode_image(data)


def test_dicom_codestream_larger_than_header_is_refused_before_decoding(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph)
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(stored, transfer_syntax=JPEGBaseline8Bit)))
    dataset.PixelData = encapsulate([jpeg_declaring_size(jpeg_bytes(stored), 9_000, 9_000)])
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    _bounded(lambda: decode_image(buffer.getvalue()))  # decoders trust the codestream: 81 MP decoded
    with pytest.raises(CorruptImageError, match="9000x9000"):
        decode_image(buffer.getvalue())


def _rle_run(count: int) -> bytes:
    """PackBits-style RLE segment data decoding to `count` zero bytes."""
    tail = count % 128
    return b"\x81\x00" * (count // 128) + (bytes([tail - 1]) + b"\x00" * tail if tail else b"")


def test_rle_segment_overflowing_its_frame_is_corrupt() -> None:
    """pylibjpeg-rle panics (a Rust PanicException, not an Exception) when a segment decodes past the frame."""
    first, second = _rle_run(64 * 64 + 200), _rle_run(64 * 64)
    first += b"\x80" * (len(first) % 2)  # 0x80 is a no-op run header, used as padding
    header = struct.pack("<16I", 2, 64, 64 + len(first), *([0] * 13))
    dataset = pydicom.dcmread(
        io.BytesIO(dicom_bytes(to_stored(synthetic_radiograph(64, 64), 16), transfer_syntax=RLELossless))
    )
    dataset.PixelData = encapsulate([header + first + second])
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(CorruptImageError, match="RLE Lossless"):
        decode_image(buffer.getvalue())


def test_deflated_dicom_decodes_and_a_deflate_bomb_is_refused(radiograph: np.ndarray) -> None:
    stored = to_stored(radiograph, 12)
    deflated = dicom_bytes(stored, bits_stored=12, transfer_syntax=DeflatedExplicitVRLittleEndian)
    np.testing.assert_allclose(decode_image(deflated).pixels, full_range(stored), atol=1e-6)
    bomb = dicom_bytes(
        stored,
        bits_stored=12,
        transfer_syntax=DeflatedExplicitVRLittleEndian,
        raw_tags={0x00090010: ("LO", "CXR TEST"), 0x00091010: ("OB", bytes(8_000_000))},
    )
    assert len(bomb) < 100_000
    with pytest.raises(UnusableImageError, match="inflates"):
        decode_image(bomb, max_pixels=1_000_000)  # 8 MB inflated > 2 bytes x 1 MP + header room


# --- quality checks --------------------------------------------------------------------------------------------------


def _decoded(pixels: np.ndarray, **metadata: object) -> DecodedImage:
    return DecodedImage(pixels=pixels.astype(np.float32), format="PNG", metadata=dict(metadata))


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_radiographs_raise_no_warnings(seed: int) -> None:
    image = synthetic_radiograph(300, 256, seed=seed)
    assert codes(_decoded(image)) == []
    assert polarity_score(image) > 0.2 and polarity_score(1 - image) < -0.2


def test_quality_checks_fire_on_bad_images(film: np.ndarray) -> None:
    assert codes(_decoded(np.full((256, 256), 0.4))) == ["near_constant"]
    assert codes(_decoded(0.45 + 0.1 * film)) == ["low_contrast"]
    assert "possibly_inverted" in codes(_decoded(1 - film))
    dark = film.copy()
    dark[:, : dark.shape[1] // 2] = 0
    assert "overexposed" in codes(_decoded(dark))
    assert "overexposed" in codes(_decoded(film * 0.25))
    bright = film.copy()
    bright[: bright.shape[0] // 4] = 1
    assert "underexposed" in codes(_decoded(bright))
    assert "underexposed" in codes(_decoded(0.7 + 0.3 * film))


def test_geometry_checks() -> None:
    assert codes(_decoded(synthetic_radiograph(100, 120))) == ["small_image"]
    assert codes(_decoded(synthetic_radiograph(100, 120)), QualityThresholds(min_side_px=64)) == []
    assert "extreme_aspect_ratio" in codes(_decoded(synthetic_radiograph(240, 600)))


def test_dicom_header_checks(film: np.ndarray) -> None:
    lateral = _decoded(1 - film, ViewPosition="LL")
    assert codes(lateral) == ["lateral_view"]  # the polarity layout only holds for frontal views
    assert codes(_decoded(film, BodyPartExamined="HAND")) == ["not_chest"]
    assert codes(_decoded(film, BodyPartExamined="CHEST", ViewPosition="AP")) == []


def test_quality_warning_shape(film: np.ndarray) -> None:
    (warning,) = assess_quality(_decoded(1 - film))
    assert warning.as_dict() == {"code": "possibly_inverted", "message": warning.message, "value": warning.value}
    assert warning.value is not None and warning.value < 0 and "inverted" in warning.message


# --- preprocessing and display ----------------------------------------------------------------------------------------


def test_preprocess_shape_and_normalisation(radiograph: np.ndarray) -> None:
    spec = PreprocessSpec(input_size=96, mean=0.5, std=0.25, equalize=False)
    model_input = preprocess(radiograph.astype(np.float32), spec)
    assert model_input.shape == (1, 96, 96) and model_input.dtype == np.float32
    square = to_square_uint8(radiograph.astype(np.float32), 96)
    np.testing.assert_allclose(model_input[0], (square / 255.0 - 0.5) / 0.25, atol=1e-6)
    flat = preprocess(np.full((50, 80), 0.5, dtype=np.float32), spec)
    np.testing.assert_allclose(flat, (128 / 255 - 0.5) / 0.25, atol=1e-6)


def test_preprocess_equalisation_and_augment_hook(radiograph: np.ndarray) -> None:
    spec = PreprocessSpec(input_size=64, mean=0.5, std=0.25, equalize=True)
    seen: list[np.ndarray] = []

    def augment(image: np.ndarray) -> np.ndarray:
        seen.append(image)
        return image[:, ::-1].copy()

    dull = (0.4 + 0.2 * radiograph).astype(np.float32)
    out = preprocess(dull, spec, augment=augment)
    assert seen[0].dtype == np.uint8 and seen[0].shape == (64, 64)
    restored = out[0] * 0.25 + 0.5
    assert restored.max() - restored.min() > 0.95  # equalisation spreads a dull histogram over the full range
    np.testing.assert_allclose(out, to_model_input(seen[0][:, ::-1].copy(), spec))


def test_preprocess_spec_round_trip_and_validation() -> None:
    spec = PreprocessSpec(input_size=192, mean=0.45, std=0.2, equalize=True)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert PreprocessSpec.from_dict({"input_size": 64, "mean": 0.5, "std": 0.25}).equalize is False
    with pytest.raises(ValueError, match="lacks 'std'"):
        PreprocessSpec.from_dict({"input_size": 64, "mean": 0.5})
    for bad in ({"input_size": 0}, {"std": 0.0}, {"mean": float("nan")}):
        with pytest.raises(ValueError):
            PreprocessSpec(**bad)


def test_to_display_png(radiograph: np.ndarray) -> None:
    png = to_display_png(radiograph.astype(np.float32), max_side=64)
    shown = np.asarray(Image.open(io.BytesIO(png)))
    assert shown.dtype == np.uint8 and max(shown.shape) == 64
    assert shown.shape[1] / shown.shape[0] == pytest.approx(radiograph.shape[1] / radiograph.shape[0], rel=0.05)
    full = np.asarray(Image.open(io.BytesIO(to_display_png(radiograph.astype(np.float32)))))
    np.testing.assert_array_equal(full, np.rint(radiograph.astype(np.float32) * 255).astype(np.uint8))


# --- real data ------------------------------------------------------------------------------------------------------


def _samples(dicom_samples_dir: Path) -> list[dict[str, str]]:
    with (dicom_samples_dir / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_real_dicom_samples_decode_and_match_previews(dicom_samples_dir: Path) -> None:
    for row in _samples(dicom_samples_dir):
        decoded = decode_image((dicom_samples_dir / row["file"]).read_bytes())
        assert (decoded.width, decoded.height) == (int(row["original_width"]), int(row["original_height"]))
        assert decoded.metadata["Modality"] == row["modality"]
        assert decoded.metadata["PhotometricInterpretation"] == row["photometric"]
        assert decoded.metadata["TransferSyntaxUID"] == row["transfer_syntax"]
        assert decoded.metadata["PatientID"] == row["patient_id"]
        if row["view_position"]:
            assert decoded.metadata["ViewPosition"] == row["view_position"]
        preview = np.asarray(Image.open(dicom_samples_dir / row["preview"]).convert("L"), dtype=np.float32) / 255
        shrunk = cv2.resize(decoded.pixels, preview.shape[::-1], interpolation=cv2.INTER_AREA)
        assert np.corrcoef(shrunk.ravel(), preview.ravel())[0, 1] > 0.99
        assert np.abs(shrunk - preview).mean() < 0.02


def test_real_monochrome1_is_the_inverse_of_its_twin(dicom_samples_dir: Path) -> None:
    rows = _samples(dicom_samples_dir)
    mono1_row = next(row for row in rows if row["photometric"] == "MONOCHROME1")
    twin_row = next(r for r in rows if r["photometric"] == "MONOCHROME2" and r["patient_id"] == mono1_row["patient_id"])
    mono1 = decode_image((dicom_samples_dir / mono1_row["file"]).read_bytes())
    twin = decode_image((dicom_samples_dir / twin_row["file"]).read_bytes())
    np.testing.assert_allclose(mono1.pixels, 1.0 - twin.pixels, atol=1e-6)
    assert "possibly_inverted" in codes(mono1)  # the fake MONOCHROME1 file really shows as a negative
    assert codes(twin) == []


def test_real_dicom_samples_metadata(dicom_samples_dir: Path) -> None:
    rows = _samples(dicom_samples_dir)
    siim = next(r for r in rows if r["photometric"] == "MONOCHROME2" and r["transfer_syntax"].endswith(".50"))
    metadata = decode_image((dicom_samples_dir / siim["file"]).read_bytes()).metadata
    assert metadata["BodyPartExamined"] == "CHEST" and metadata["PatientSex"] == "M"
    assert metadata["patient_age_years"] == 62


def test_kermany_test_split_warning_rates(kermany_dir: Path) -> None:
    """Calibration guard: real radiographs rarely trip any check, inverted ones almost always do."""
    files = sorted((kermany_dir / "test").glob("*/*.jpg"))
    assert len(files) == 618
    per_check: Counter[str] = Counter()
    inverted_flagged = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            decoded = decode_image(path.read_bytes())
            per_check.update(codes(decoded))
            inverted = dataclasses.replace(decoded, pixels=1.0 - decoded.pixels)
            inverted_flagged += "possibly_inverted" in codes(inverted)
    rates = {code: count / len(files) for code, count in per_check.items()}
    print(f"Kermany test warning rates: {rates or 'none'}; inverted copies flagged: {inverted_flagged}/{len(files)}")
    assert all(rate <= 0.01 for rate in rates.values()), rates
    assert inverted_flagged / len(files) >= 0.97


def test_kept_pixels_are_exactly_what_their_png_reads_back() -> None:
    pixels = np.random.default_rng(3).random((300, 200), dtype=np.float32)
    png, kept = encode_pixels_png16(pixels, 128)
    assert png == to_pixels_png16(pixels, 128) and kept.shape == (128, 85)
    assert np.array_equal(kept, from_pixels_png16(png))  # the cache a process keeps equals what another reads
