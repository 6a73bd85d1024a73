"""A synthetic chest radiograph and a complete sample case, for layout previews, tests and the benchmark.

Nothing here is patient data: the "radiograph" is drawn from ellipses and arcs, the overlay from a Gaussian blob.
Preview all three reports with `python -m reports sample --out DIR`.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
from PIL import Image, ImageFilter

from reports.records import (
    ModelCard,
    NoduleMark,
    NoduleReport,
    PatientDetails,
    ReportCase,
    SimilarCase,
    UncertaintyDetails,
)
from reports.wording import nodule_performance_sentence

# Where the synthetic opacity (and so the overlay's hot spot) sits, as fractions of width and height.
OPACITY_CENTRE = (0.3, 0.62)
# The sample's nodule: a small round spot in the left upper zone, and the box the sample's nodule model marks it with
# (x, y, w, h in the 640 x 700 film's pixels); a second, weaker mark sits on a rib crossing (a false mark).
NODULE_CENTRE = (0.68, 0.36)
NODULE_MARKS = ((408.0, 224.0, 56.0, 56.0, 0.83), (150.0, 330.0, 48.0, 44.0, 0.31))


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def synthetic_radiograph(size: tuple[int, int] = (640, 700), seed: int = 0, opacity: bool = True) -> np.ndarray:
    """A frontal chest radiograph look-alike as floats in [0, 1] (height x width), bright bone, dark lungs."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    wobble = rng.normal(0, 0.012, 4)
    image = np.full((height, width), 0.06)
    image[_ellipse(xx, yy, 0.5, 0.58, 0.47, 0.56)] = 0.58  # soft tissue of the thorax
    for cx in (0.31 + wobble[0], 0.69 + wobble[1]):  # lung fields, closed below by the diaphragm domes
        image[_ellipse(xx, yy, cx, 0.47 + wobble[2], 0.16, 0.31)] = 0.2
    image[np.abs(xx - 0.5) < 0.045] = 0.8  # spine and mediastinum
    image[_ellipse(xx, yy, 0.57, 0.63 + wobble[3], 0.14, 0.12)] = 0.72  # heart
    for rib in range(9):  # posterior ribs as bright curved bands over the lungs
        curve = 0.2 + rib * 0.062 + 0.35 * (xx - 0.5) ** 2
        image[(np.abs(yy - curve) < 0.009) & (np.abs(xx - 0.5) > 0.05) & (np.abs(xx - 0.5) < 0.44)] += 0.14
    for side in (-1, 1):  # clavicles
        image[
            (np.abs(yy - (0.16 + 0.12 * np.abs(xx - 0.5))) < 0.012)
            & (side * (xx - 0.5) > 0.05)
            & (side * (xx - 0.5) < 0.3)
        ] = 0.85
    if opacity:
        cx, cy = OPACITY_CENTRE
        distance = ((xx - cx) / 0.09) ** 2 + ((yy - cy) / 0.08) ** 2
        image += 0.28 * np.exp(-distance)
    image += rng.normal(0, 0.018, image.shape)
    blurred = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(3))
    return np.asarray(blurred, dtype=np.float32) / 255


def with_nodule(pixels: np.ndarray, centre: tuple[float, float] = NODULE_CENTRE, radius: float = 0.025) -> np.ndarray:
    """`pixels` with a small, soft-edged round opacity (a nodule) at `centre` (fractions of width and height)."""
    height, width = pixels.shape
    yy, xx = np.mgrid[0:height, 0:width]
    distance = np.hypot(xx - centre[0] * width, yy - centre[1] * height) / (radius * width)
    return np.clip(pixels + 0.3 * np.clip(1.3 - distance, 0, 1), 0, 1).astype(np.float32)


def sample_nodule(image_size: tuple[int, int] = (640, 700)) -> NoduleReport:
    """The sample case's second finding: a nodule, two marks, the measured operating point in words."""
    return NoduleReport(
        label="NODULE",
        probability=0.78,
        threshold=0.42,
        model_version="nodule-resnet18-2026.12.1",
        marks=tuple(NoduleMark(*mark) for mark in NODULE_MARKS),
        performance=nodule_performance_sentence(0.61, 0.96),
        image_size=image_size,
    )


def to_png(pixels: np.ndarray) -> bytes:
    """Greyscale [0, 1] floats or an RGB uint8 array as PNG bytes."""
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map (blue, cyan, yellow, red) of values in [0, 1], as RGB floats."""
    channels = [np.clip(1.5 - np.abs(4 * values - offset), 0, 1) for offset in (3, 2, 1)]
    return np.stack(channels, axis=-1)


def synthetic_overlay(pixels: np.ndarray, centre: tuple[float, float] = OPACITY_CENTRE) -> np.ndarray:
    """A Grad-CAM style overlay: the radiograph in grey with a jet-coloured blob around `centre` (RGB uint8)."""
    height, width = pixels.shape
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    heat = np.exp(-(((xx - centre[0]) / 0.14) ** 2 + ((yy - centre[1]) / 0.12) ** 2))
    alpha = 0.5 * heat[..., None]
    grey = np.repeat(pixels[..., None], 3, axis=-1)
    return (np.clip((1 - alpha) * grey + alpha * _jet(heat), 0, 1) * 255).astype(np.uint8)


def sample_case(created_at: datetime | None = None) -> ReportCase:
    """A complete, positive, unsigned case with every optional field filled in (both findings)."""
    pixels = with_nodule(synthetic_radiograph())
    created = created_at or datetime(2026, 3, 14, 10, 32, tzinfo=UTC)
    thumbnails = [to_png(synthetic_radiograph((128, 140), seed=seed, opacity=seed % 2 == 1)) for seed in range(1, 6)]
    return ReportCase(
        report_id="RPT-2026-000123",
        case_id="c-7f3a9e21",
        created_at=created,
        finding="PNEUMONIA",
        positive_class="PNEUMONIA",
        probabilities={"NORMAL": 0.087, "PNEUMONIA": 0.913},
        confidence=0.913,
        threshold=0.5,
        model=ModelCard(
            version="pneumonia-resnet18-2026.03.1",
            architecture="resnet18",
            calibration="temperature scaling (T = 1.42) on the validation split",
            test_metrics={"auroc": 0.955, "accuracy": 0.859, "sensitivity": 0.932, "specificity": 0.741, "n": 624},
            limitations=(
                "Trained on paediatric frontal chest radiographs (Kermany et al.); performance on adults, lateral "
                "views and portable AP films is unverified. Not validated for other findings (effusion, nodules, "
                "pneumothorax). Test-set specificity is lower than sensitivity: expect false positives."
            ),
        ),
        image_png=to_png(pixels),
        patient=PatientDetails(
            patient_id="MRN-0042-17",
            name="Jane Doe",
            age=54,
            sex="F",
            birth_date="19711102",
            clinical_history=(
                "Three days of productive cough and fever up to 38.9 °C. Crackles over the right lower zone. "
                "Ex-smoker (20 pack-years). No known drug allergies.\n\nQuestion: pneumonia?"
            ),
        ),
        study={
            "StudyDate": "20260314",
            "Modality": "DX",
            "ViewPosition": "PA",
            "BodyPartExamined": "CHEST",
            "Manufacturer": "Example Medical Systems",
            "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.10238472983749823749823",
            "PhotometricInterpretation": "MONOCHROME2",
            "format": "DICOM",
            "width": 640,
            "height": 700,
        },
        uncertainty=UncertaintyDetails(entropy=0.296, std=0.041, method="MC dropout, 20 passes"),
        uncertain=False,
        quality_warnings=("Image slightly rotated (clavicle heads asymmetric).",),
        similar_cases=[
            SimilarCase(f"ref-{index:04d}", "PNEUMONIA" if index % 2 else "NORMAL", 0.94 - 0.03 * index, thumbnail)
            for index, thumbnail in enumerate(thumbnails, start=1)
        ],
        heatmap_png=to_png(synthetic_overlay(pixels)),
        nodule=sample_nodule(),
    )
