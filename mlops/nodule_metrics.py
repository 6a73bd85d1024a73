"""How well the nodule model finds and locates: image-level AUROC and the FROC curve, with patient-bootstrap intervals.

A mark is a hit when its centre (the heatmap peak) falls inside a radiologist's box: NIH's boxes are loose (median
side about 28 mm), so IoU would punish marks on the lesion itself. Each box counts once however many marks hit it;
a mark inside no box is a false positive. FROC films are the located ones (boxed positives and negatives): a
positive film without boxes may hold the nodule a mark points at, so its marks can be neither hits nor false ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imaging import decode_image
from inference import NodulePredictor, locate
from labelled_data import NoduleSample
from mlops.metrics import auroc

Box = tuple[float, float, float, float]
Mark = tuple[float, float, float]  # centre x, centre y, score (stored pixels)


@dataclass(frozen=True)
class FilmResult:
    patient_id: str
    positive: bool
    located: bool
    probability: float  # image level
    boxes: tuple[Box, ...]
    marks: tuple[Mark, ...]  # every mark the model would give at location threshold 0


@dataclass(frozen=True)
class FrocPoint:
    threshold: float
    sensitivity: float
    false_positives_per_film: float


def inside(mark: Mark, box: Box) -> bool:
    x, y, w, h = box
    return x <= mark[0] <= x + w and y <= mark[1] <= y + h


def _scored_marks(films: Sequence[FilmResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Per mark: score, hit box id (-1: false positive), film index; plus box and film counts (located films)."""
    scores, hit_ids, film_ids = [], [], []
    box_offset = 0
    located = [film for film in films if film.located]
    for index, film in enumerate(located):
        for mark in film.marks:
            hit = next((box_offset + i for i, box in enumerate(film.boxes) if inside(mark, box)), -1)
            scores.append(mark[2])
            hit_ids.append(hit)
            film_ids.append(index)
        box_offset += len(film.boxes)
    return np.array(scores), np.array(hit_ids, dtype=int), np.array(film_ids, dtype=int), box_offset, len(located)


def froc(films: Sequence[FilmResult]) -> list[FrocPoint]:
    """One point per distinct mark score, from the strictest threshold to the most lenient."""
    scores, hit_ids, _, n_boxes, n_films = _scored_marks(films)
    if n_films == 0 or n_boxes == 0:
        return []
    points = []
    for threshold in np.unique(scores)[::-1]:
        kept = scores >= threshold
        found = len(set(hit_ids[kept & (hit_ids >= 0)].tolist()))
        false = int(np.sum(kept & (hit_ids < 0)))
        points.append(FrocPoint(float(threshold), found / n_boxes, false / n_films))
    return points


def sensitivity_at(points: Sequence[FrocPoint], false_positives_per_film: float) -> float:
    """Best sensitivity reachable with at most that many false marks per film (0 when no point qualifies)."""
    allowed = [p.sensitivity for p in points if p.false_positives_per_film <= false_positives_per_film]
    return max(allowed, default=0.0)


def threshold_for(points: Sequence[FrocPoint], false_positives_per_film: float) -> float:
    """The most lenient mark threshold whose false marks per film stay within the budget (for validation)."""
    allowed = [p.threshold for p in points if p.false_positives_per_film <= false_positives_per_film]
    return min(allowed, default=1.0)


def operating_point(films: Sequence[FilmResult], threshold: float) -> FrocPoint:
    """Sensitivity and false marks per film when marks below `threshold` are dropped."""
    kept = [p for p in froc(films) if p.threshold >= threshold]
    return kept[-1] if kept else FrocPoint(threshold, 0.0, 0.0)


def image_auroc(films: Sequence[FilmResult]) -> float:
    labels = np.array([film.positive for film in films], dtype=int)
    return auroc(labels, np.array([film.probability for film in films]))


def patient_bootstrap(films: Sequence[FilmResult], statistic, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of `statistic(films)` over resamples of patients (all their films together)."""
    by_patient: dict[str, list[FilmResult]] = {}
    for film in films:
        by_patient.setdefault(film.patient_id, []).append(film)
    patients = sorted(by_patient)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        drawn = rng.integers(0, len(patients), len(patients))
        value = statistic([film for i in drawn for film in by_patient[patients[i]]])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def summarise(films: Sequence[FilmResult], location_threshold: float, rounds: int = 1000) -> dict[str, object]:
    """Every figure the model card and the bench report, with intervals."""
    points = froc(films)
    at_threshold = operating_point(films, location_threshold)

    def at(fp: float):
        return lambda sample: sensitivity_at(froc(sample), fp)

    boxed = [f for f in films if f.located]
    return {
        "films": len(films),
        "positive_films": sum(f.positive for f in films),
        "boxes": sum(len(f.boxes) for f in boxed),
        "auroc": image_auroc(films),
        "auroc_ci": list(patient_bootstrap(films, image_auroc, rounds)),
        "auroc_boxed_only": image_auroc(boxed),
        "sensitivity_at_0.5_fp": sensitivity_at(points, 0.5),
        "sensitivity_at_0.5_fp_ci": list(patient_bootstrap(boxed, at(0.5), rounds)),
        "sensitivity_at_1_fp": sensitivity_at(points, 1.0),
        "sensitivity_at_1_fp_ci": list(patient_bootstrap(boxed, at(1.0), rounds)),
        "location_threshold": location_threshold,
        "sensitivity_at_threshold": at_threshold.sensitivity,
        "false_positives_per_film_at_threshold": at_threshold.false_positives_per_film,
    }


def score_films(predictor: NodulePredictor, samples: Sequence[NoduleSample]) -> list[FilmResult]:
    """Each film through the serving path: its calibrated probability and every mark (threshold 0), for FROC."""
    films = []
    for sample in samples:
        pixels = decode_image(sample.path.read_bytes()).pixels
        height, width = pixels.shape
        image_logit, heat = predictor.forward(pixels)
        probability = predictor.finding(image_logit, heat, width, height).probability
        marks = tuple((*mark.centre, mark.score) for mark in locate(heat, width, height, 0.0))
        films.append(FilmResult(sample.patient_id, sample.positive, sample.located, probability, sample.boxes, marks))
    return films
