"""Test inputs made in code: synthetic radiographs, raster files, DICOM files (written with pydicom) and hostile
files. Every factory is deterministic (seeded) and fast (milliseconds at the default 256 x 256 size).

Import from tests: `from tests.factories import synthetic_radiograph, png_bytes, dicom_bytes, ...`.

Pixel conventions
-----------------
* `synthetic_radiograph()` returns float64 in [0, 1] in display convention (MONOCHROME2: lungs dark, mediastinum
  and bone bright), shaped like a PA chest film.
* `to_stored(pixels, bits)` quantises that to unsigned stored values (uint8 up to 8 bits, uint16 above).
* The raster writers (`png_bytes`, `jpeg_bytes`, `tiff_bytes`) take the array to store: uint8 or uint16 (TIFF
  also float32), shape (H, W) for grayscale or (H, W, 3) for RGB.
* `dicom_bytes(stored, ...)` takes the stored pixel values (what goes into Pixel Data): uint8/uint16/int16 of
  shape (H, W), (frames, H, W) or (H, W, 3); the DICOM display pipeline (rescale, VOI, MONOCHROME1) is described
  by its keyword arguments, so tests can predict exactly what a correct viewer shows.

Hostile inputs: `png_declaring_size`, `png_bomb`, `jpeg_declaring_size`, and `dicom_bytes(extra_tags=...)` to
write any header value (huge Rows/Columns, nonsense NumberOfFrames, zero window width, ...).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tifffile
import torch
from PIL import Image
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from imaging import PreprocessSpec
from inference import ModelCheckpoint, create_model

__all__ = [
    "COMPRESSED_TRANSFER_SYNTAXES",
    "DEFAULT_PATIENT_TAGS",
    "NATIVE_TRANSFER_SYNTAXES",
    "SOP_CLASS_BY_MODALITY",
    "dicom_bytes",
    "jpeg_bytes",
    "jpeg_declaring_size",
    "jpeg_lossless_codestream",
    "png_bomb",
    "png_bytes",
    "png_declaring_size",
    "synthetic_radiograph",
    "tiff_bytes",
    "to_stored",
]

# Tag values `dicom_bytes` writes unless told otherwise; tests compare extracted metadata against these.
DEFAULT_PATIENT_TAGS: dict[str, str] = {
    "PatientID": "CXR-TEST-0001",
    "PatientName": "Doe^Jane",
    "PatientSex": "F",
    "PatientAge": "034Y",
    "PatientBirthDate": "19900115",
    "StudyDate": "20240501",
    "ViewPosition": "PA",
    "BodyPartExamined": "CHEST",
    "Manufacturer": "CXR Workstation test factory",
}
SOP_CLASS_BY_MODALITY: dict[str, str] = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
NATIVE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,  # uncompressed pixels, the whole dataset zlib-deflated
)
# Every compressed transfer syntax `dicom_bytes` can write (grayscale; JPEG baseline also RGB).
COMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)


# --- pixel arrays -----------------------------------------------------------------------------------------------


def synthetic_radiograph(height: int = 256, width: int = 256, *, seed: int = 0) -> np.ndarray:
    """A PA-chest-like image in display convention, float64 in [0.03, 0.97] (nothing clipped).

    Dark air around the body, mid-gray soft tissue, two dark lung fields with brighter ribs, a bright
    mediastinum and spine between them, a bright diaphragm below, plus smooth texture and fine noise.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    v, u = y / max(height - 1, 1), x / max(width - 1, 1)  # 0..1 down and across
    image = np.full((height, width), 0.08)
    body = ((u - 0.5) / 0.46) ** 2 + ((v - 0.62) / 0.62) ** 2 < 1.0
    image[body] = 0.55
    lungs = np.zeros_like(body)
    for centre in (0.3, 0.7):
        lungs |= ((u - centre) / 0.16) ** 2 + ((v - 0.45) / 0.28) ** 2 < 1.0
    image[lungs] = 0.22 + 0.12 * v[lungs]  # lung bases a little denser than the apices
    ribs = lungs & (np.sin(2 * np.pi * (v * 9.0 + 1.5 * (u - 0.5) ** 2)) > 0.55)
    image[ribs] += 0.12
    mediastinum = (np.abs(u - 0.5) < 0.08 + 0.05 * v) & (v > 0.12) & (v < 0.82)
    image[mediastinum] = 0.78
    diaphragm = body & (v > 0.73 + 0.06 * np.cos(np.pi * (u - 0.5) * 2))
    image[diaphragm] = np.maximum(image[diaphragm], 0.7)
    texture = _smooth_noise(rng, height, width)
    image += 0.05 * texture + rng.normal(0.0, 0.012, size=(height, width))
    return np.clip(image, 0.03, 0.97)


def _smooth_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.uniform(-1.0, 1.0, size=(9, 9))
    rows = np.linspace(0, 8, height)
    cols = np.linspace(0, 8, width)
    r0, c0 = np.minimum(rows.astype(int), 7), np.minimum(cols.astype(int), 7)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def to_stored(pixels: np.ndarray, bits: int = 8) -> np.ndarray:
    """Quantise [0, 1] values to unsigned integers using `bits` bits (uint8 for <= 8 bits, else uint16)."""
    if not 1 <= bits <= 16:
        raise ValueError("bits must be 1..16")
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.rint(np.clip(pixels, 0.0, 1.0) * (2**bits - 1)).astype(dtype)


# --- raster files -----------------------------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 (8-bit) or uint16 (16-bit grayscale) array, (H, W) or (H, W, 3)/(H, W, 4) uint8."""
    if array.dtype == np.uint16 and array.ndim != 2:
        raise ValueError("16-bit PNG here is grayscale only")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95, *, exif_orientation: int | None = None) -> bytes:
    """Baseline JPEG of a uint8 array, (H, W) or (H, W, 3); `exif_orientation` (1-8) adds that EXIF tag, e.g. 6:
    a viewer must rotate the stored pixels 90 degrees clockwise."""
    if array.dtype != np.uint8:
        raise ValueError("baseline JPEG holds 8-bit samples only")
    buffer = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation
    Image.fromarray(array).save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray, *, compression: str | None = None, pages: int = 1) -> bytes:
    """TIFF of a uint8/uint16/float32 array, (H, W) or (H, W, 3); `compression` None or "zlib";
    `pages` > 1 repeats the image as further pages (a multi-page TIFF)."""
    photometric = "rgb" if array.ndim == 3 else "minisblack"
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        for _ in range(pages):
            writer.write(array, photometric=photometric, compression=compression)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring_size(width: int, height: int) -> bytes:
    """A well-formed 8-bit grayscale PNG header declaring `width` x `height` px, followed by almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A genuinely decodable, all-black 1-bit PNG of `side` x `side` px that compresses ~1000:1.

    side=8000 gives a ~10 kB file declaring 64 MP (2 GB had it been decoded to float32 RGB).
    """
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_declaring_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with the size in its frame header (SOF) rewritten; the entropy-coded data is left as it was."""
    offset = 2
    while offset + 9 <= len(jpeg):
        marker = jpeg[offset + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            patched = bytearray(jpeg)
            patched[offset + 5 : offset + 9] = struct.pack(">HH", height, width)
            return bytes(patched)
        offset += 2 + int.from_bytes(jpeg[offset + 2 : offset + 4], "big")
    raise ValueError("no SOF marker found")


# --- JPEG lossless (Process 14, first-order prediction) ---------------------------------------------------------
# pydicom has no encoder for it, so the factory writes the codestream itself: ITU-T T.81 Annex H with one
# Huffman table in which every difference category 0..16 has a 5-bit code. libjpeg decodes it, which checks it.


def jpeg_lossless_codestream(stored: np.ndarray, precision: int) -> bytes:
    """One grayscale frame as a Process 14 SV1 (predictor 1: left neighbour) lossless JPEG codestream."""
    if stored.ndim != 2:
        raise ValueError("grayscale frames only")
    image = stored.astype(np.int64)
    height, width = image.shape
    prediction = np.empty_like(image)
    prediction[0, 0] = 1 << (precision - 1)
    prediction[0, 1:] = image[0, :-1]
    prediction[1:, 0] = image[:-1, 0]
    prediction[1:, 1:] = image[1:, :-1]
    difference = (image - prediction) % 65536
    difference = np.where(difference > 32768, difference - 65536, difference).ravel()
    entropy_coded = _huffman_encode_differences(difference)
    huffman_bits = bytes([0, 0, 0, 0, 17] + [0] * 11)  # 17 codes of length 5
    dht = b"\xff\xc4" + struct.pack(">H", 2 + 1 + 16 + 17) + b"\x00" + huffman_bits + bytes(range(17))
    sof3 = b"\xff\xc3" + struct.pack(">HBHHB", 11, precision, height, width, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + bytes([1, 0, 0])  # Ss=1 predictor, Se=0, Ah/Al=0
    return b"\xff\xd8" + dht + sof3 + sos + entropy_coded + b"\xff\xd9"


def _huffman_encode_differences(difference: np.ndarray) -> bytes:
    magnitude = np.abs(difference)
    category = np.where(magnitude == 0, 0, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int64) + 1)
    extra_bits = np.where(category == 16, 0, category)  # category 16 (difference 32768) carries no extra bits
    extra = np.where(difference >= 0, difference, difference + (1 << extra_bits) - 1) & ((1 << extra_bits) - 1)
    code = (category << extra_bits) | extra  # the 5-bit Huffman code of category c is c itself
    length = 5 + extra_bits
    positions = np.arange(21)[None, :]
    shifts = (length[:, None] - 1 - positions).clip(min=0)
    bits = ((code[:, None] >> shifts) & 1).astype(np.uint8)
    stream = bits[positions < length[:, None]]
    stream = np.concatenate([stream, np.ones((-stream.size) % 8, dtype=np.uint8)])  # pad with 1-bits
    return np.packbits(stream).tobytes().replace(b"\xff", b"\xff\x00")  # byte stuffing


# --- DICOM ------------------------------------------------------------------------------------------------------


def dicom_bytes(
    stored: np.ndarray | None,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    photometric: str | None = None,
    bits_stored: int | None = None,
    modality: str = "DX",
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_lut_function: str | None = None,
    voi_lut: np.ndarray | None = None,
    voi_lut_first_mapped: int = 0,
    patient: Mapping[str, str] | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    raw_tags: Mapping[str | int, tuple[str, Any]] | None = None,
    declared_transfer_syntax: str | None = None,
    preamble: bool = True,
    jpeg_quality: int = 95,
) -> bytes:
    """A DICOM Part 10 file (bytes) written by pydicom.

    stored: the stored pixel values; None writes an image-less dataset (no Pixel Data).
    transfer_syntax: a native one (`NATIVE_TRANSFER_SYNTAXES`) or one of `COMPRESSED_TRANSFER_SYNTAXES`.
    photometric: default MONOCHROME2 for grayscale, RGB (YBR_FULL_422 for JPEG baseline) for (H, W, 3).
    bits_stored: default 8 for uint8, 16 for 16-bit arrays; e.g. 12 for 12-bit data in 16-bit words.
    rescale: (slope, intercept) of the modality rescale; window: (center, width), `voi_lut_function` optional.
    voi_lut: a VOI LUT Sequence item's table (uint16 values), mapping stored value `voi_lut_first_mapped + i`
    to `voi_lut[i]`.
    patient: patient/study tags (default `DEFAULT_PATIENT_TAGS`); extra_tags: any keyword -> value, set last
    (overriding everything, so tests can write hostile headers such as Rows=60000).
    raw_tags: keyword or integer tag -> (VR, value) written with that VR, for values the tag's own VR cannot
    hold (e.g. {"NumberOfFrames": ("LO", "abc")}: a reader then finds text where a number belongs) and for
    private tags (e.g. {0x00091010: ("OB", bytes(10**7))}).
    declared_transfer_syntax: write the dataset as `transfer_syntax` but name this one in the file meta (an
    exotic or mislabelled file); needs a preamble.
    preamble: False writes a bare dataset (no 128-byte preamble, no file meta), native transfer syntaxes only.
    """
    uid = UID(str(transfer_syntax))
    ds = Dataset()
    sop_class = SOP_CLASS_BY_MODALITY.get(modality, SECONDARY_CAPTURE)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    for keyword, value in (DEFAULT_PATIENT_TAGS if patient is None else patient).items():
        setattr(ds, keyword, value)
    if stored is not None:
        _set_image_pixel_module(ds, stored, photometric, bits_stored)
        _set_display_modules(ds, rescale, window, voi_lut_function, voi_lut, voi_lut_first_mapped)
        _set_pixel_data(ds, stored, uid, jpeg_quality)
    with config.disable_value_validation():  # extra tags may be deliberately invalid
        for keyword, value in (extra_tags or {}).items():
            setattr(ds, keyword, value)
        for keyword, (vr, value) in (raw_tags or {}).items():
            ds.add_new(keyword, vr, value)
        if declared_transfer_syntax is not None:
            return _write_mislabelled(ds, uid, UID(declared_transfer_syntax), sop_class)
        return _write(ds, uid, sop_class, preamble)


def _set_image_pixel_module(ds: Dataset, stored: np.ndarray, photometric: str | None, bits_stored: int | None) -> None:
    color = stored.ndim == 3 and stored.shape[-1] == 3
    frames = stored.shape[0] if stored.ndim == 3 and not color else 1
    rows, columns = stored.shape[1:] if frames > 1 else stored.shape[:2]
    ds.Rows, ds.Columns = int(rows), int(columns)
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if color else "MONOCHROME2")
    if color:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 8 * stored.dtype.itemsize
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(stored.dtype, np.signedinteger) else 0


def _set_display_modules(
    ds: Dataset,
    rescale: tuple[float, float] | None,
    window: tuple[float, float] | None,
    voi_lut_function: str | None,
    voi_lut: np.ndarray | None,
    first_mapped: int,
) -> None:
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{value:g}" for value in rescale)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{value:g}" for value in window)
    if voi_lut_function is not None:
        ds.VOILUTFunction = voi_lut_function
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [int(voi_lut.size) % 65536, int(first_mapped), 16]
        item.add_new("LUTData", "OW", np.asarray(voi_lut, dtype="<u2").tobytes())
        ds.VOILUTSequence = [item]


def _set_pixel_data(ds: Dataset, stored: np.ndarray, uid: UID, jpeg_quality: int) -> None:
    frames = _frames_of(ds, stored)
    if uid in NATIVE_TRANSFER_SYNTAXES:
        ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
        return
    if uid == JPEGBaseline8Bit:
        if stored.dtype != np.uint8:
            raise ValueError("JPEG baseline holds 8-bit samples only")
        if ds.SamplesPerPixel == 3:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate([jpeg_bytes(frame, quality=jpeg_quality) for frame in frames])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        return
    if uid in (JPEGLossless, JPEGLosslessSV1):
        if ds.SamplesPerPixel != 1:
            raise ValueError("the factory's lossless JPEG encoder is grayscale only")
        ds.PixelData = encapsulate([jpeg_lossless_codestream(frame, int(ds.BitsStored)) for frame in frames])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        return
    if uid in (JPEG2000Lossless, JPEG2000, RLELossless):
        ds.PixelData = b""  # compress() needs the element present; `arr` supplies the values
        options: dict[str, Any] = {"j2k_cr": [8]} if uid == JPEG2000 else {}  # lossy: 8:1, visually faithful
        ds.compress(uid, stored, generate_instance_uid=False, **options)
        return
    raise ValueError(f"the factory cannot write transfer syntax {uid}")


def _frames_of(ds: Dataset, stored: np.ndarray) -> Sequence[np.ndarray]:
    return list(stored) if int(ds.get("NumberOfFrames", 1)) > 1 else [stored]


def _file_meta(ds: Dataset, uid: UID, sop_class: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", sop_class)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = uid
    meta.ImplementationClassUID = generate_uid()
    return meta


def _write_mislabelled(ds: Dataset, uid: UID, declared: UID, sop_class: str) -> bytes:
    """File meta naming `declared`, dataset encoded as `uid` (explicit VR little endian family)."""
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, _file_meta(ds, declared, sop_class), enforce_standard=True)
    buffer.is_little_endian, buffer.is_implicit_VR = True, uid == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _write(ds: Dataset, uid: UID, sop_class: str, preamble: bool) -> bytes:
    buffer = io.BytesIO()
    if not preamble:
        if uid not in NATIVE_TRANSFER_SYNTAXES:
            raise ValueError("a bare dataset (no file meta) can only be native")
        ds.save_as(buffer, implicit_vr=uid == ImplicitVRLittleEndian, little_endian=True)
        return buffer.getvalue()
    ds.file_meta = _file_meta(ds, uid, sop_class)
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def random_checkpoint(
    architecture: str = "test_resnet",
    *,
    version: str = "tiny",
    drop_rate: float = 0.2,
    seed: int = 0,
    input_size: int = 64,
    temperature: float = 1.0,
    threshold: float = 0.5,
) -> ModelCheckpoint:
    """A randomly initialised (seeded) checkpoint in the model contract: for tests of plumbing, not of findings."""
    torch.manual_seed(seed)
    model = create_model(architecture, 2, drop_rate=drop_rate)
    return ModelCheckpoint(
        architecture=architecture,
        task="pneumonia",
        class_names=["NORMAL", "PNEUMONIA"],
        preprocess=PreprocessSpec(input_size=input_size),
        state_dict=model.state_dict(),
        temperature=temperature,
        threshold=threshold,
        version=version,
        model_kwargs={"drop_rate": drop_rate},
    )
