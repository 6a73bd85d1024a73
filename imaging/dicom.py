"""DICOM: parse, check it is a single projection radiograph, decode any supported transfer syntax, and map the
stored values to display values the way a DICOM viewer does.

Display pipeline (PS3.3 C.11 / C.7.6.3): modality LUT or rescale slope/intercept, then the VOI LUT sequence or the
window (LINEAR, LINEAR_EXACT, SIGMOID), then MONOCHROME1 inversion. Without a VOI module the full value range is
shown (min-max), ignoring pixel padding. The header is checked before any pixel data is decoded, so a hostile
file cannot make us allocate more than `max_pixels` worth of memory.
"""

from __future__ import annotations

import io
import re
import zlib
from datetime import date
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragmented_frames
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, ExplicitVRBigEndian

from imaging.errors import CorruptImageError, UnsupportedFormatError, UnusableImageError
from imaging.image import (
    DecodedImage,
    check_pixel_count,
    colored_pixel_fraction,
    is_decoder_panic,
    rgb_to_gray,
    scale_to_unit,
)

DICOM_TAGS = (
    "PatientID",
    "PatientName",
    "PatientSex",
    "PatientAge",
    "PatientBirthDate",
    "StudyDate",
    "StudyInstanceUID",
    # The very image, so the exports can point at it: the structured report's nodule marks are coordinates on it.
    "SeriesInstanceUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "Manufacturer",
)
# Projection radiography. OT (other) covers radiographs some devices store under a generic SOP class; DR is not a
# standard code but some older devices write it. A secondary capture (SOP class 1.2.840.10008.5.1.4.1.1.7[.x]) of
# modality OT is a screenshot, a scanned document or a test pattern (pydicom's SC_* files): refused. A digitised film
# stored as a secondary capture keeps its modality (CR/DX) and passes.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "MG", "OT", "PX"})
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_BARE_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00")  # file meta or identifying group, little endian
_AGE_PATTERN = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)  # unit-less ages occur: years
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
# pydicom's pure-Python RLE decoder has no output bound and is slow on hostile input; the Rust one stops at the
# declared frame size.
_PREFERRED_PLUGIN = {"1.2.840.10008.1.2.5": "pylibjpeg"}


def looks_like_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file ("DICM" after the 128-byte preamble), or a bare dataset without preamble."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if len(data) < 8 or data[:2] not in _BARE_DICOM_GROUPS:
        return False
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():  # explicit VR
        return True
    return int.from_bytes(data[4:8], "little") < len(data)  # implicit VR: a plausible value length


def decode_dicom(data: bytes, max_pixels: int) -> DecodedImage:
    _check_deflated_size(data, max_pixels)
    ds = read_dataset(data)
    metadata = dicom_metadata(ds)
    rows, columns, samples = _check_projection_radiograph(ds)
    check_pixel_count(columns, rows, max_pixels)
    transfer_syntax = _transfer_syntax(ds)
    if _is_compressed(transfer_syntax):
        _check_decoder(transfer_syntax)
        _check_codestream_size(ds, columns, rows)
    else:
        _check_native_length(ds)
    raw = _pixel_array(ds, transfer_syntax)
    if raw.shape[:2] != (rows, columns):
        raise CorruptImageError(f"The DICOM pixel data has shape {raw.shape}, not the declared {rows}x{columns}.")
    if samples == 3 or _photometric(ds) == "PALETTE COLOR":
        pixels, colored = _color_to_gray(ds, raw)
        voi = "none"  # VOI applies to grayscale only
    else:
        pixels, voi = _monochrome_to_display(ds, raw)
        colored = 0.0
    metadata.update(
        {
            "width": columns,
            "height": rows,
            "source_bits": _int_tag(ds, "BitsStored", 8),
            "channels": samples,
            "colored_pixel_fraction": colored,
            "multi_frame": False,
            "voi": voi,
        }
    )
    return DecodedImage(pixels=pixels, format="DICOM", metadata=metadata)


def _check_deflated_size(data: bytes, max_pixels: int) -> None:
    """Deflated Explicit VR Little Endian inflates the whole dataset at once: a zip bomb for pydicom.

    Inflate in bounded chunks first, discarding the output, and refuse a dataset larger than a radiograph of
    `max_pixels` 16-bit pixels (plus room for the header) could be.
    """
    meta_end = _file_meta_end(data)
    if meta_end is None or meta_end > len(data) or DEFLATED_TRANSFER_SYNTAX.encode() not in data[132:meta_end]:
        return
    limit = 2 * max_pixels + 1_000_000
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, inflated = data[meta_end:], 0
    try:
        while pending and inflated <= limit:
            inflated += len(inflater.decompress(pending, 1 << 20))
            pending = inflater.unconsumed_tail
    except zlib.error:
        raise CorruptImageError("The deflated DICOM dataset is damaged.") from None
    if inflated > limit:
        raise UnusableImageError("The deflated DICOM dataset inflates to more data than any radiograph holds.")


def read_dataset(data: bytes) -> Dataset:
    """Parse the whole dataset (pixel data stays encoded); any parse failure is a damaged file."""
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    meta_end = _file_meta_end(data) if has_preamble else None
    if meta_end is not None and meta_end > len(data):
        raise CorruptImageError("The DICOM file is truncated: it ends inside its file meta header.")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
    except Exception as exc:  # pydicom raises many types (EOFError, ValueError, struct.error, ...) on damage
        raise CorruptImageError(f"The DICOM file could not be parsed ({type(exc).__name__}).") from None
    if has_preamble and len(ds) == 0:
        raise CorruptImageError("The DICOM file is truncated: nothing follows its file meta header.")
    _check_last_element_complete(ds)
    return ds


def _file_meta_end(data: bytes) -> int | None:
    """Offset where the file meta group ends, from its leading (0002,0000) group length; None when absent."""
    if len(data) < 144:
        return 144  # not even the group length element fits: the file stops inside its meta header
    if data[132:136] != b"\x02\x00\x00\x00":
        return None
    return 144 + int.from_bytes(data[140:144], "little")


def _check_last_element_complete(ds: Dataset) -> None:
    """pydicom keeps an element cut short by the end of the file; its declared length tells it was truncated."""
    for tag in reversed(list(ds.keys())):  # only the last element can be cut, but order is by tag
        element = ds.get_item(tag)
        if not isinstance(element, RawDataElement) or element.value is None:
            continue
        if element.length != _UNDEFINED_LENGTH and len(element.value) < element.length:
            raise CorruptImageError("The DICOM file is truncated: it ends in the middle of a data element.")


# --- header checks --------------------------------------------------------------------------------------------


def _tag_value(ds: Dataset, keyword: str) -> Any:
    """A header value; pydicom converts values lazily, so a damaged element only fails when read."""
    try:
        return ds.get(keyword)
    except Exception:
        raise CorruptImageError(f"The DICOM header element {keyword} is damaged.") from None


def _int_tag(ds: Dataset, keyword: str, default: int) -> int:
    value = _tag_value(ds, keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CorruptImageError(f"The DICOM header element {keyword} is not a valid number.") from None


def _float_tag(ds: Dataset, keyword: str, default: float) -> float:
    value = _tag_value(ds, keyword)
    if value is None or value == "":
        return default
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else default  # multi-valued (several windows): the first is the default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CorruptImageError(f"The DICOM header element {keyword} is not a valid number.") from None
    if not np.isfinite(number):
        raise CorruptImageError(f"The DICOM header element {keyword} is not a finite number.")
    return number


def _check_projection_radiograph(ds: Dataset) -> tuple[int, int, int]:
    """Refuse what is not one projection image; return (rows, columns, samples per pixel)."""
    if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if _is_image_storage(ds):  # pydicom silently stops at the end of a file cut between elements
            raise CorruptImageError("The DICOM file is an image but holds no pixel data: it is truncated or damaged.")
        raise UnusableImageError("The DICOM file holds no pixel data (it is not an image).")
    modality = str(_tag_value(ds, "Modality") or "").strip().upper()
    if not modality:
        raise UnusableImageError(
            "The DICOM object names no modality, so it is not known to be a radiograph; a chest X-ray (CR/DX) "
            "is required."
        )
    if modality not in PROJECTION_MODALITIES:
        raise UnusableImageError(
            f"DICOM modality {modality} is not a projection radiograph; a chest X-ray (CR/DX) is required."
        )
    sop_class = _sop_class(ds)
    if modality == "OT" and (sop_class == SECONDARY_CAPTURE or sop_class.startswith(SECONDARY_CAPTURE + ".")):
        raise UnusableImageError(
            "The DICOM object is a secondary capture (a screenshot, scanned document or test pattern), "
            "not a chest radiograph (CR/DX)."
        )
    frames = _int_tag(ds, "NumberOfFrames", 1)
    if frames > 1:
        raise UnusableImageError(
            f"The DICOM file holds {frames} frames; a single-frame projection radiograph is required."
        )
    rows, columns = _int_tag(ds, "Rows", 0), _int_tag(ds, "Columns", 0)
    if rows <= 0 or columns <= 0:
        raise CorruptImageError("The DICOM header does not give a valid image size (Rows/Columns).")
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    photometric = _photometric(ds)
    if samples not in (1, 3) or (samples == 1 and photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")):
        raise UnsupportedFormatError(
            f"DICOM images with {samples} samples per pixel and photometric interpretation"
            f" {photometric or 'unset'} are not supported."
        )
    return rows, columns, samples


def _sop_class(ds: Dataset) -> str:
    file_meta = getattr(ds, "file_meta", None)
    return _tag_text(ds, "SOPClassUID") or (_tag_text(file_meta, "MediaStorageSOPClassUID") if file_meta else "")


def _is_image_storage(ds: Dataset) -> bool:
    """Whether the SOP class (dataset or file meta) is an image storage class, or the header describes pixels."""
    return "Image Storage" in UID(_sop_class(ds)).name or "Rows" in ds


def _photometric(ds: Dataset) -> str:
    return str(_tag_value(ds, "PhotometricInterpretation") or "").strip().upper()


def _transfer_syntax(ds: Dataset) -> UID:
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid is None:  # a bare dataset: pydicom recorded the encoding it detected
        implicit, little = getattr(ds, "original_encoding", (True, True))
        return UID("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1" if little else ExplicitVRBigEndian)
    return UID(str(uid))


def _is_compressed(transfer_syntax: UID) -> bool:
    try:
        return bool(transfer_syntax.is_compressed)
    except ValueError:  # not a transfer syntax pydicom knows (private or invented)
        raise UnsupportedFormatError(f"DICOM transfer syntax {transfer_syntax} is not supported.") from None


def _check_decoder(transfer_syntax: UID) -> None:
    try:
        available = get_decoder(transfer_syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        name = transfer_syntax.name if transfer_syntax.is_valid else str(transfer_syntax)
        raise UnsupportedFormatError(
            f"DICOM transfer syntax {name} is not supported; use uncompressed, JPEG baseline, JPEG lossless,"
            " JPEG 2000 or RLE."
        )


def _check_codestream_size(ds: Dataset, columns: int, rows: int) -> None:
    """The JPEG / JPEG 2000 codestream carries its own size, which decoders trust over the DICOM header: a
    codestream declaring a huge image inside a small DICOM would otherwise be decoded in full."""
    try:
        fragment = next(generate_fragmented_frames(ds.PixelData, number_of_frames=1))[0]
    except Exception:
        raise CorruptImageError("The DICOM compressed pixel data is not validly encapsulated.") from None
    size = codestream_size(fragment)
    if size is not None and size != (columns, rows):
        raise CorruptImageError(
            f"The DICOM compressed pixel data holds a {size[0]}x{size[1]} image but the header declares"
            f" {columns}x{rows}."
        )


def _check_native_length(ds: Dataset) -> None:
    """Uncompressed pixel data must be as long as the header says (one pad byte allowed): shorter is a truncated
    file, longer means Rows/Columns/Bits are wrong and the image would be shown sheared or cropped."""
    if "PixelData" not in ds:
        return  # float pixel data: pydicom checks it
    try:
        expected = get_expected_length(ds, "bytes")
    except Exception:
        raise CorruptImageError("The DICOM image pixel description (bits, samples) is damaged.") from None
    actual = len(ds.PixelData)
    if actual < expected:
        raise CorruptImageError(
            f"The DICOM pixel data is truncated: {actual} bytes where the header declares {expected}."
        )
    if actual > expected + 1:
        raise CorruptImageError(
            f"The DICOM pixel data holds {actual} bytes but the header declares {expected}: its size or bit depth"
            " is wrong."
        )


def codestream_size(codestream: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a JPEG, JPEG-LS or JPEG 2000 codestream; None when it is none of these."""
    if codestream.startswith(b"\xff\xd8"):
        return _jpeg_frame_size(codestream)
    start = codestream.find(b"\xff\x4f\xff\x51", 0, 4096)  # SOC + SIZ, also inside a JP2 wrapper
    if start < 0 or len(codestream) < start + 24:
        return None
    x_siz, y_siz, x_offset, y_offset = (
        int.from_bytes(codestream[start + offset : start + offset + 4], "big") for offset in (8, 12, 16, 20)
    )
    return x_siz - x_offset, y_siz - y_offset


_SOF_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7})


def _jpeg_frame_size(codestream: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 9 <= len(codestream):
        if codestream[offset] != 0xFF:
            return None
        marker = codestream[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _SOF_MARKERS:
            height = int.from_bytes(codestream[offset + 5 : offset + 7], "big")
            width = int.from_bytes(codestream[offset + 7 : offset + 9], "big")
            return width, height
        offset += 2 + int.from_bytes(codestream[offset + 2 : offset + 4], "big")
    return None


def _pixel_array(ds: Dataset, transfer_syntax: UID) -> np.ndarray:
    plugin = _PREFERRED_PLUGIN.get(str(transfer_syntax), "")
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = FileMetaDataset()  # a bare dataset: tell pydicom the encoding it was read with
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    try:
        ds.pixel_array_options(decoding_plugin=plugin)
        return ds.pixel_array
    except BaseException as exc:  # pydicom and its plugins raise many types for broken or truncated pixel data
        if not isinstance(exc, Exception) and not is_decoder_panic(exc):
            raise  # KeyboardInterrupt, SystemExit, ...
        name = transfer_syntax.name if transfer_syntax.is_valid else str(transfer_syntax)
        raise CorruptImageError(
            f"The DICOM pixel data could not be decoded ({name}: {type(exc).__name__}); the file is truncated or"
            " damaged."
        ) from None


# --- stored values to display values --------------------------------------------------------------------------


def _monochrome_to_display(ds: Dataset, raw: np.ndarray) -> tuple[np.ndarray, str]:
    """Modality LUT, then VOI, then MONOCHROME1 inversion; returns the [0, 1] image and which VOI was used."""
    padding = _padding_mask(ds, raw)
    values = _modality_values(ds, raw)
    pixels, voi = _apply_voi(ds, values)
    if pixels is None:
        pixels = scale_to_unit(values, None if padding is None else ~padding)
    if _photometric(ds) == "MONOCHROME1":
        pixels = np.subtract(1.0, pixels, dtype=np.float32)
    if padding is not None:
        pixels[padding] = 0.0  # padding is "no image here": always shown black
    return pixels, voi


def _padding_mask(ds: Dataset, raw: np.ndarray) -> np.ndarray | None:
    """Pixels holding Pixel Padding Value (or inside the padding range): outside the real image."""
    if "PixelPaddingValue" not in ds:
        return None
    first = _int_tag(ds, "PixelPaddingValue", 0)
    last = _int_tag(ds, "PixelPaddingRangeLimit", first)
    lo, hi = min(first, last), max(first, last)
    mask = (raw >= lo) & (raw <= hi)
    return mask if mask.any() and not mask.all() else None


def _modality_values(ds: Dataset, raw: np.ndarray) -> np.ndarray:
    if "ModalityLUTSequence" in ds:
        try:
            return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
        except Exception:
            raise CorruptImageError("The DICOM Modality LUT is damaged.") from None
    values = raw.astype(np.float32)
    slope = _float_tag(ds, "RescaleSlope", 1.0)
    intercept = _float_tag(ds, "RescaleIntercept", 0.0)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def _apply_voi(ds: Dataset, values: np.ndarray) -> tuple[np.ndarray | None, str]:
    """VOI LUT sequence first (as pydicom and most viewers prefer), then the window; None when neither is usable.

    A damaged VOI module falls back to the full range, which is still diagnostic.
    """
    if "VOILUTSequence" in ds:
        try:
            pixels = voi_lut_to_unit(values, ds.VOILUTSequence[0], _is_big_endian(ds))
        except (CorruptImageError, AttributeError, IndexError, KeyError, TypeError, ValueError):
            pixels = None
        if pixels is not None:
            return pixels, "lut"
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center, width = _float_tag(ds, "WindowCenter", 0.0), _float_tag(ds, "WindowWidth", 0.0)
            function = str(_tag_value(ds, "VOILUTFunction") or "LINEAR").strip().upper()
            pixels = window_to_unit(values, center, width, function)
        except (CorruptImageError, ValueError):
            pixels = None
        if pixels is not None:
            return pixels, "window"
    return None, "none"


def window_to_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing with the output range mapped to [0, 1].

    Raises ValueError for a width the function does not allow or an unknown function.
    """
    x = np.asarray(values, dtype=np.float32)
    if function == "LINEAR":
        if width < 1:
            raise ValueError("LINEAR window width must be >= 1")
        if width == 1:  # degenerate window: a threshold at center - 0.5
            return (x > center - 0.5).astype(np.float32)
        out = (x - np.float32(center - 0.5)) * np.float32(1.0 / (width - 1)) + np.float32(0.5)
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError("LINEAR_EXACT window width must be > 0")
        out = (x - np.float32(center)) * np.float32(1.0 / width) + np.float32(0.5)
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError("SIGMOID window width must be > 0")
        exponent = np.clip(-4.0 * (x - np.float32(center)) / np.float32(width), -80.0, 80.0)
        return (1.0 / (1.0 + np.exp(exponent))).astype(np.float32)
    else:
        raise ValueError(f"unknown VOI LUT function {function}")
    return np.clip(out, 0.0, 1.0, out=out)


def voi_lut_to_unit(values: np.ndarray, item: Dataset, big_endian: bool = False) -> np.ndarray | None:
    """Apply one VOI LUT Sequence item (PS3.3 C.11.2.1.1) and map the LUT's own output range to [0, 1].

    Values below the first mapped value take the first entry, above the last the last entry. None when the LUT
    is flat (it carries no display information).
    """
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # 0 means 2**16 entries
    lut = _lut_data(item.LUTData, entries, bits, big_endian)
    lo, hi = float(lut.min()), float(lut.max())
    if hi <= lo:
        return None
    index = np.clip(np.rint(values) - first_mapped, 0, entries - 1).astype(np.int32)
    table = ((lut - lo) / (hi - lo)).astype(np.float32)
    return table[index]


def _lut_data(value: Any, entries: int, bits: int, big_endian: bool) -> np.ndarray:
    if isinstance(value, bytes | bytearray):
        if bits <= 8 and len(value) < 2 * entries:
            data = np.frombuffer(value, dtype=np.uint8)
        else:
            data = np.frombuffer(value[: len(value) // 2 * 2], dtype=">u2" if big_endian else "<u2")
    else:
        data = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if data.size < entries:
        raise CorruptImageError("The DICOM VOI LUT holds fewer entries than its descriptor declares.")
    return data[:entries].astype(np.float64)


def _is_big_endian(ds: Dataset) -> bool:
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return str(uid) == ExplicitVRBigEndian


def _color_to_gray(ds: Dataset, raw: np.ndarray) -> tuple[np.ndarray, float]:
    """RGB (pydicom already converted YBR to RGB) or palette colour to luma, plus the coloured-pixel share."""
    if _photometric(ds) == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(raw, ds)
        except Exception:
            raise CorruptImageError("The DICOM palette colour lookup table is damaged.") from None
        max_value = 255.0 if rgb.dtype == np.uint8 else 65535.0  # palette entries are 8 or 16 bit
    else:
        rgb = raw
        max_value = float(2 ** _int_tag(ds, "BitsStored", 8 * rgb.dtype.itemsize) - 1)
    return rgb_to_gray(rgb, max_value), colored_pixel_fraction(rgb, max_value)


# --- patient and study tags -------------------------------------------------------------------------------------


def dicom_metadata(ds: Dataset) -> dict[str, Any]:
    """The patient and study tags the case record and UI use, as plain strings (absent or damaged tags left out).

    Also `PhotometricInterpretation`, `TransferSyntaxUID` and, when the age or the birth and study dates allow,
    `patient_age_years` (an int).
    """
    meta: dict[str, Any] = {}
    for keyword in (*DICOM_TAGS, "PhotometricInterpretation"):
        text = _tag_text(ds, keyword)
        if text:
            meta[keyword] = text
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid is not None:
        meta["TransferSyntaxUID"] = str(uid)
    age = patient_age_years(meta.get("PatientAge"), meta.get("PatientBirthDate"), meta.get("StudyDate"))
    if age is not None:
        meta["patient_age_years"] = age
    return meta


def _tag_text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()
    except Exception:  # a damaged optional tag must not make the whole image unusable
        return ""


def patient_age_years(age: str | None, birth_date: str | None = None, study_date: str | None = None) -> int | None:
    """Whole years from a DICOM Age String ("045Y", "018M", "003W", "010D"; a bare number means years), else from
    the birth and study dates (DA, YYYYMMDD)."""
    if age:
        match = _AGE_PATTERN.match(age)
        if match:
            unit = match.group(2).upper() or "Y"
            return int(int(match.group(1)) * _DAYS_PER_UNIT[unit] // 365.25)
    born, studied = _parse_da(birth_date), _parse_da(study_date)
    if born is None or studied is None or studied < born:
        return None
    return studied.year - born.year - ((studied.month, studied.day) < (born.month, born.day))


def _parse_da(value: str | None) -> date | None:
    """A DICOM DA value (YYYYMMDD); None when absent or invalid."""
    if not value or len(value.strip()) != 8 or not value.strip().isdigit():
        return None
    text = value.strip()
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
