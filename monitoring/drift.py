"""Input drift: are recent films still like the ones the model was trained and validated on?

Per image, statistics of the file as stored (`ImageStats`): intensity mean, spread, contrast, sharpness, size, bit
depth, format and the DICOM manufacturer, view and photometric interpretation. These describe the raw input on
purpose: the bit depth or photometric interpretation of a film is exactly what the model's own preprocessing
normalises away, so they are read here with Pillow and pydicom and not through `imaging`'s display pipeline.

Tests (scipy), one per statistic: two-sample Kolmogorov-Smirnov for the numbers, chi-square on the category counts;
PSI is reported beside each as the size of the shift. On embeddings, a permutation test of the maximum mean
discrepancy (RBF kernel, median-distance bandwidth). Drift is declared when any p-value is below
`alpha / number of tests` (Bonferroni), so on two samples of the same distribution the chance of any alarm is at
most `alpha`. Chosen over alibi-detect (needs numpy < 2), evidently (fails to import beside pandas 3; its embedding
MMD defaults raised false alarms on identical data) and frouros (caps numpy < 2.2): scipy is already here, and the
permutation MMD is 30 lines whose false-alarm rate the tests measure.

The embeddings come from the model, which this room does not load: the API hands them in (api/drift.py: the baseline
films' embeddings under the serving model, cached per version, against the recent cases of that version), and the
command line reads them from two .npy files. The MMD joins the image tests' Bonferroni family (one verdict, one
false-alarm rate for the alert rule), so with it the per-test threshold is alpha / 12.

    python -m monitoring.drift --baseline DIR --new DIR [--alpha 0.05] [--embeddings BASELINE.npy NEW.npy]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pydicom
from PIL import Image
from scipy import stats as scipy_stats

NUMERIC = ("intensity_mean", "intensity_std", "contrast", "sharpness", "width", "height")
CATEGORICAL = ("bit_depth", "format", "manufacturer", "view", "photometric")
MMD_PERMUTATIONS = 1000  # p-values down to 1/1001, below alpha / 12 for any alpha >= 0.012
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"})
_PIL_BITS = {
    "1": 1,
    "L": 8,
    "P": 8,
    "RGB": 8,
    "RGBA": 8,
    "LA": 8,
    "I;16": 16,
    "I;16B": 16,
    "I;16L": 16,
    "I": 32,
    "F": 32,
}


@dataclass(frozen=True)
class ImageStats:
    intensity_mean: float  # of pixels scaled to [0, 1] by the stored bit depth
    intensity_std: float
    contrast: float  # 99th minus 1st percentile
    sharpness: float  # mean absolute difference of neighbouring pixels (blur lowers it)
    width: float
    height: float
    bit_depth: str
    format: str
    manufacturer: str = "-"
    view: str = "-"
    photometric: str = "-"


def image_stats(pixels: np.ndarray, bit_depth: int, fmt: str, tags: dict[str, str] | None = None) -> ImageStats:
    """Statistics of one stored image: `pixels` as stored (2-D, integers up to 2**bit_depth - 1, or floats)."""
    scaled = pixels.astype(np.float64)
    if np.issubdtype(pixels.dtype, np.integer):
        scaled /= float(2**bit_depth - 1)
    low, high = np.percentile(scaled, [1, 99])
    sharpness = (np.abs(np.diff(scaled, axis=0)).mean() + np.abs(np.diff(scaled, axis=1)).mean()) / 2
    tags = tags or {}
    return ImageStats(
        intensity_mean=float(scaled.mean()),
        intensity_std=float(scaled.std()),
        contrast=float(high - low),
        sharpness=float(sharpness),
        width=float(pixels.shape[1]),
        height=float(pixels.shape[0]),
        bit_depth=str(bit_depth),
        format=fmt,
        manufacturer=tags.get("Manufacturer") or "-",
        view=tags.get("ViewPosition") or "-",
        photometric=tags.get("PhotometricInterpretation") or "-",
    )


def read_image_stats(path: Path) -> ImageStats:
    """Statistics of an image file (PNG, JPEG, TIFF: Pillow; DICOM: pydicom)."""
    return stats_from_bytes(Path(path).read_bytes())


def stats_from_bytes(data: bytes) -> ImageStats:
    """Statistics of an image's bytes; DICOM is recognised by its preamble ('DICM' at offset 128)."""
    if data[128:132] == b"DICM":
        return _dicom_stats(pydicom.dcmread(io.BytesIO(data)))
    with Image.open(io.BytesIO(data)) as image:
        bits = _PIL_BITS.get(image.mode, 8)
        pixels = np.asarray(image.convert("L") if image.mode in ("RGB", "RGBA", "P", "LA") else image)
        return image_stats(pixels, bits, image.format or "unknown")


def _dicom_stats(dataset: pydicom.Dataset) -> ImageStats:
    pixels = dataset.pixel_array
    pixels = pixels[0] if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4) else pixels  # first frame
    pixels = pixels.mean(axis=-1) if pixels.ndim == 3 else pixels  # colour: its brightness
    tags = {
        key: str(dataset.get(key, "") or "") for key in ("Manufacturer", "ViewPosition", "PhotometricInterpretation")
    }
    return image_stats(pixels, int(dataset.get("BitsStored", 16)), "DICOM", tags)


def image_paths(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def sample_paths(folder: Path, limit: int | None = None, seed: int = 0) -> list[Path]:
    """The folder's images; with `limit`, a random sample of that many (the same ones for a seed), sorted."""
    paths = image_paths(folder)
    if limit is not None and limit < len(paths):
        paths = [paths[i] for i in sorted(np.random.default_rng(seed).choice(len(paths), limit, replace=False))]
    return paths


def read_folder(folder: Path, limit: int | None = None, seed: int = 0) -> list[ImageStats]:
    """Statistics of the folder's images (of `sample_paths`' sample with `limit`)."""
    return [read_image_stats(path) for path in sample_paths(folder, limit, seed)]


# --- tests ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureTest:
    feature: str
    test: str  # ks | chi2 | mmd
    statistic: float
    p_value: float
    psi: float | None  # population stability index (numbers only): < 0.1 small, > 0.25 large


@dataclass(frozen=True)
class DriftReport:
    alpha: float
    baseline_size: int
    new_size: int
    tests: list[FeatureTest]

    @property
    def threshold(self) -> float:
        """Per-test significance after the Bonferroni correction."""
        return self.alpha / max(1, len(self.tests))

    @property
    def drifted(self) -> list[FeatureTest]:
        return [t for t in self.tests if t.p_value < self.threshold]

    @property
    def detected(self) -> bool:
        return bool(self.drifted)


def psi(baseline: np.ndarray, new: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the baseline's deciles (a small floor keeps empty bins finite)."""
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0 if np.allclose(baseline.mean(), new.mean()) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(baseline, edges)[0] / len(baseline)
    actual = np.histogram(new, edges)[0] / len(new)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _numeric_test(name: str, baseline: np.ndarray, new: np.ndarray) -> FeatureTest:
    if np.ptp(np.concatenate([baseline, new])) == 0:
        return FeatureTest(name, "ks", 0.0, 1.0, 0.0)
    result = scipy_stats.ks_2samp(baseline, new)
    return FeatureTest(name, "ks", float(result.statistic), float(result.pvalue), psi(baseline, new))


def _categorical_test(name: str, baseline: Sequence[str], new: Sequence[str]) -> FeatureTest:
    categories = sorted(set(baseline) | set(new))
    if len(categories) < 2:
        return FeatureTest(name, "chi2", 0.0, 1.0, None)
    counts_a, counts_b = Counter(baseline), Counter(new)
    table = np.array([[counts_a[c] for c in categories], [counts_b[c] for c in categories]])
    result = scipy_stats.chi2_contingency(table)
    return FeatureTest(name, "chi2", float(result.statistic), float(result.pvalue), None)


def compare_images(
    baseline: Sequence[ImageStats],
    new: Sequence[ImageStats],
    alpha: float = 0.05,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
) -> DriftReport:
    """One test per image statistic and, given (baseline, new) embedding rows, the MMD test: one Bonferroni family."""
    tests = [
        _numeric_test(name, np.array([getattr(s, name) for s in baseline]), np.array([getattr(s, name) for s in new]))
        for name in NUMERIC
    ]
    tests += [_categorical_test(name, [getattr(s, name) for s in baseline], [getattr(s, name) for s in new])
              for name in CATEGORICAL]  # fmt: skip
    if embeddings is not None:
        tests.append(mmd_test(*embeddings))
    return DriftReport(alpha, len(baseline), len(new), tests)


def mmd_test(baseline: np.ndarray, new: np.ndarray, permutations: int = MMD_PERMUTATIONS, seed: int = 0) -> FeatureTest:
    """Permutation test of the squared maximum mean discrepancy between two sets of embeddings (rows).

    RBF kernel with the median squared distance of the pooled rows as bandwidth; the biased (V-statistic) MMD of a
    split is w.K.w with w = 1/n on one side and -1/m on the other, so all permutations are one matrix product.
    The p-value is (exceedances + 1) / (permutations + 1): never below 1 / (permutations + 1), which must stay under
    the Bonferroni threshold of the family it joins (MMD_PERMUTATIONS = 1000 allows 0.001)."""
    pooled = np.concatenate([baseline, new]).astype(np.float64)
    squared = np.sum(pooled**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * pooled @ pooled.T, 0)
    bandwidth = np.median(distances[np.triu_indices(len(pooled), 1)]) or 1.0
    kernel = np.exp(-distances / bandwidth)
    n, total = len(baseline), len(pooled)
    rng = np.random.default_rng(seed)
    orders = np.vstack([np.arange(total), *(rng.permutation(total) for _ in range(permutations))])
    side = np.where(np.arange(total) < n, 1.0 / n, -1.0 / (total - n))  # by position: the first n are "baseline"
    weights = np.empty((len(orders), total))
    np.put_along_axis(weights, orders, side[None, :], axis=1)  # weights[r, k]: pooled row k's side in split r
    values = np.sum((weights @ kernel) * weights, axis=1)  # row 0: the observed split
    observed = float(values[0])
    exceed = int(np.sum(values[1:] >= observed - 1e-12))
    return FeatureTest("embedding", "mmd", observed, (exceed + 1) / (permutations + 1), None)


# --- command line ---------------------------------------------------------------------------------------------------


def describe(report: DriftReport) -> str:
    lines = [f"baseline {report.baseline_size} images, new {report.new_size}; per-test threshold "
             f"{report.threshold:.4f} (alpha {report.alpha:g}, Bonferroni over {len(report.tests)} tests)"]  # fmt: skip
    for test in report.tests:
        mark = "DRIFT" if test in report.drifted else "ok"
        size = f"  psi {test.psi:.3f}" if test.psi is not None else ""
        lines.append(
            f"{mark:5}  {test.feature:15} {test.test:4} stat {test.statistic:10.4f}  p {test.p_value:.2e}{size}"
        )
    verdict = ", ".join(t.feature for t in report.drifted) if report.detected else "none"
    lines.append(f"drift detected: {verdict}")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Exit status 0: no drift; 1: drift detected; 2: an unusable folder."""
    parser = argparse.ArgumentParser(prog="python -m monitoring.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline", type=Path, required=True, help="folder of reference images (searched recursively)"
    )
    parser.add_argument("--new", type=Path, required=True, help="folder of recent images")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise false-alarm rate")
    parser.add_argument("--limit", type=int, default=None, help="a random sample of this many images per folder")
    parser.add_argument("--embeddings", type=Path, nargs=2, metavar=("BASELINE.npy", "NEW.npy"), default=None,
                        help="the two sets' embeddings (rows) for the MMD test, e.g. VAR_DIR/drift/*.npy")  # fmt: skip
    args = parser.parse_args(list(argv) if argv is not None else None)
    baseline, new = read_folder(args.baseline, args.limit), read_folder(args.new, args.limit)
    if len(baseline) < 2 or len(new) < 2:
        print(f"need at least 2 images in each folder (baseline {len(baseline)}, new {len(new)})", file=out)
        return 2
    embeddings = None if args.embeddings is None else (np.load(args.embeddings[0]), np.load(args.embeddings[1]))
    report = compare_images(baseline, new, args.alpha, embeddings)
    print(describe(report), file=out)
    return 1 if report.detected else 0


if __name__ == "__main__":
    raise SystemExit(main())
