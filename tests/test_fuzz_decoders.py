"""Fuzzing the image decoders with hypothesis: valid PNG, JPEG, TIFF and DICOM files (every DICOM encoding the
product reads) from tests/factories.py, mutated byte-wise (flips, hostile values, insertions, deletions,
truncation, duplicated slices), biased towards the headers where sizes and lengths live.

Every case must either decode or raise an `ImagingError` subclass (a clear 4xx in the API): no other exception,
no hang (each decode well under `HANG_S`). A sample also goes through the live API, which must never answer 5xx.
The default run is a few hundred cases; `-m slow` runs thousands.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from imaging import Deidentifier, ImagingError, decode_image, deidentify_dicom
from tests.factories import dicom_bytes, jpeg_bytes, png_bytes, synthetic_radiograph, tiff_bytes, to_stored

HANG_S = 20.0  # a decode of these 64-96 px files takes milliseconds; this only catches runaway loops
DEFAULT_CASES = 300
SLOW_CASES = 5000
API_CASES = 40
DEIDENTIFY_CASES = 150
HEADER_BYTES = 1024  # most mutations land here: sizes, lengths, offsets and tags live in the first kilobyte
INTERESTING_VALUES = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff", b"\x00\x00", b"\xff\xff\xff\x7f",
                      b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\x01\x00\x01\x00")  # fmt: skip


def _image(seed: int, size: int = 64) -> np.ndarray:
    return synthetic_radiograph(size, size, seed=seed)


def seed_files() -> dict[str, bytes]:
    """One small valid file per format and encoding (decodes fine before mutation)."""
    eight, sixteen = to_stored(_image(1)), to_stored(_image(2), bits=16)
    return {
        "png8": png_bytes(eight),
        "png16": png_bytes(sixteen),
        "jpeg": jpeg_bytes(to_stored(_image(3)), quality=80),
        "tiff8": tiff_bytes(eight),
        "tiff16-zlib": tiff_bytes(sixteen, compression="zlib"),
        "tiff-float": tiff_bytes(_image(4).astype(np.float32)),
        "dicom-explicit": dicom_bytes(
            sixteen, bits_stored=12, transfer_syntax=ExplicitVRLittleEndian, window=(2048, 4096), rescale=(1.0, -1024.0)
        ),
        "dicom-implicit-m1": dicom_bytes(eight, transfer_syntax=ImplicitVRLittleEndian, photometric="MONOCHROME1"),
        "dicom-bare": dicom_bytes(eight, preamble=False),
        "dicom-jpeg": dicom_bytes(eight, transfer_syntax=JPEGBaseline8Bit),
        "dicom-jpeg-lossless": dicom_bytes(sixteen, transfer_syntax=JPEGLossless),
        "dicom-jpeg-sv1": dicom_bytes(sixteen, transfer_syntax=JPEGLosslessSV1),
        "dicom-j2k-lossless": dicom_bytes(sixteen, transfer_syntax=JPEG2000Lossless),
        "dicom-j2k": dicom_bytes(eight, transfer_syntax=JPEG2000),
        "dicom-rle": dicom_bytes(sixteen, transfer_syntax=RLELossless),
    }


SEEDS = seed_files()


@st.composite
def _position(draw: st.DrawFn, length: int) -> int:
    if length <= 1:
        return 0
    header = st.integers(0, min(length, HEADER_BYTES) - 1)
    return draw(st.one_of(header, header, st.integers(0, length - 1)))  # two thirds in the header


def _mutate(draw: st.DrawFn, data: bytearray) -> None:
    kind = draw(st.sampled_from(("flip", "value", "insert", "delete", "duplicate", "truncate")))
    at = draw(_position(len(data)))
    if kind == "flip" and data:
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "value":
        value = draw(st.sampled_from(INTERESTING_VALUES) | st.binary(min_size=1, max_size=4))
        data[at : at + len(value)] = value
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "delete":
        del data[at : at + draw(st.integers(1, 64))]
    elif kind == "duplicate":
        size = draw(st.integers(1, 256))
        data[at:at] = data[draw(_position(len(data))) :][:size]
    elif kind == "truncate":
        del data[at:]


@st.composite
def mutated_files(draw: st.DrawFn, prefix: str = "") -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(seed for seed in SEEDS if seed.startswith(prefix))))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        _mutate(draw, data)
    return name, bytes(data)


def decode_outcome(data: bytes) -> str:
    """'decoded' or the ImagingError subclass name; any other exception propagates (a crash), slowness fails."""
    started = time.monotonic()
    try:
        decode_image(data)
        outcome = "decoded"
    except ImagingError as exc:
        outcome = type(exc).__name__
    elapsed = time.monotonic() - started
    assert elapsed < HANG_S, f"decoding took {elapsed:.1f} s"
    return outcome


def fuzz(cases: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=cases, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(mutated_files())
    def run(case: tuple[str, bytes]) -> None:
        name, data = case
        outcomes[f"{name}:{decode_outcome(data)}"] += 1

    run()
    return outcomes


def summarise(outcomes: Counter[str]) -> dict[str, int]:
    by_outcome: Counter[str] = Counter()
    for key, count in outcomes.items():
        by_outcome[key.split(":", 1)[1]] += count
    return dict(by_outcome)


def test_seed_files_are_valid() -> None:
    for name, data in SEEDS.items():
        assert decode_image(data).width == 64, name


def test_fuzzed_decoders_raise_only_imaging_errors() -> None:
    outcomes = fuzz(DEFAULT_CASES)
    total = sum(outcomes.values())
    print(f"decoder fuzz: {total} cases, outcomes {summarise(outcomes)}")
    assert total >= DEFAULT_CASES * 0.9  # hypothesis may stop a little early once it has exhausted variety
    assert len({key.split(":")[0] for key in outcomes}) == len(SEEDS)  # every format was exercised
    assert summarise(outcomes).get("decoded", 0) > 0 and len(summarise(outcomes)) > 2  # mutations do both


@pytest.mark.slow
def test_fuzzed_decoders_thousands_of_cases() -> None:
    outcomes = fuzz(SLOW_CASES)
    print(f"decoder fuzz (slow): {sum(outcomes.values())} cases, outcomes {summarise(outcomes)}")
    assert sum(outcomes.values()) >= SLOW_CASES * 0.9


def test_fuzzed_dicom_deidentification_raises_only_imaging_errors() -> None:
    """De-identification reads the same hostile files (exports, training sets): same rule, no other exception."""
    key = Deidentifier(b"fuzzing-secret-0123456789")
    outcomes: Counter[str] = Counter()

    @settings(max_examples=DEIDENTIFY_CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(mutated_files(prefix="dicom"))
    def run(case: tuple[str, bytes]) -> None:
        try:
            deidentify_dicom(case[1], key)
            outcomes["deidentified"] += 1
        except ImagingError as exc:
            outcomes[type(exc).__name__] += 1

    run()
    print(f"de-identification fuzz: {sum(outcomes.values())} cases, outcomes {dict(outcomes)}")
    assert outcomes["deidentified"] > 0 and sum(outcomes.values()) >= DEIDENTIFY_CASES * 0.9


def _post_each(client: httpx.Client, path: str) -> Callable[[tuple[str, bytes]], int]:
    def post(case: tuple[str, bytes]) -> int:
        name, data = case
        return client.post(path, files={"file": (name, data, "application/octet-stream")}).status_code

    return post


def test_fuzzed_uploads_never_get_5xx(client: httpx.Client) -> None:
    statuses: Counter[int] = Counter()
    predict, inspect = _post_each(client, "/predict"), _post_each(client, "/v1/dicom/inspect")

    @settings(max_examples=API_CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(mutated_files(), st.booleans())
    def run(case: tuple[str, bytes], use_inspect: bool) -> None:
        status = (inspect if use_inspect else predict)(case)
        statuses[status] += 1
        assert status < 500, (case[0], status)

    run()
    print(f"upload fuzz: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= API_CASES * 0.9 and statuses[200] > 0
