"""Measure the input gate: test-split radiographs wrongly refused, and non-radiographs caught.

    python bench/ood_gate.py [--checkpoint models/pneumonia.pt] [--data ../shared/datasets/kermany-pneumonia]
                             [--json out.json]

The checkpoint must carry an OOD reference (`python -m mlops.fit_gate ...`). Sets:
- radiographs: the whole Kermany test split (never seen by training or by the reference fit). Target: < 2% refused.
- non-radiographs (target: >= 95% caught), each set reported on its own:
  photos: every scikit-image sample image that ships with the package, matplotlib's and scikit-learn's samples;
  faces: scikit-image's LFW subset (25 px faces, upscaled; low-detail photos);
  scans: CT, MR, NM, ultrasound and secondary-capture slices from pydicom's test files, as exported pixels (as
  DICOM files the decoder already refuses non-projection modalities);
  inverted / rotated 90 / 180 / 270: every test radiograph transformed;
  synthetic: noise, smooth noise, gradients, checkerboards, blank pages with text, constant images.
Each image goes through the serving Predictor (decode-equivalent [0, 1] grayscale pixels in, gate verdict out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imaging import decode_image
from inference import Predictor, load_checkpoint
from inference.ood import OOD_EXTRA_KEY
from inference.uncertainty import UncertaintyPolicy
from settings import get_settings

BATCH = 16
MIN_SIDE = 64  # the decoder refuses smaller images before any gate


def unit(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2GRAY)
    low, high = float(image.min()), float(image.max())
    return np.zeros_like(image) if high <= low else (image - low) / (high - low)


def radiographs(data_dir: Path, split: str) -> list[np.ndarray]:
    files = sorted((data_dir / split).glob("*/*"))
    return [decode_image(f.read_bytes()).pixels for f in files]


def package_photos() -> Iterator[tuple[str, np.ndarray]]:
    import matplotlib
    import skimage.data
    import sklearn.datasets

    warnings.simplefilter("ignore")
    for name in skimage.data.__all__:
        loader = getattr(skimage.data, name)
        if name in {"data_dir", "download_all", "file_hash", "lbp_frontal_face_cascade_filename", "lfw_subset"}:
            continue
        try:
            image = loader()
        except Exception:
            continue
        if isinstance(image, tuple):  # stereo pairs
            image = image[0]
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] not in (3, 4):
            image = image[image.shape[0] // 2]  # volumes: the middle slice
        if image.ndim in (2, 3) and min(image.shape[:2]) >= MIN_SIDE:
            yield f"skimage:{name}", unit(image.astype(np.float32))
    sample_dir = Path(matplotlib.get_data_path()) / "sample_data"
    for path in [sample_dir / "grace_hopper.jpg", sample_dir / "Minduka_Present_Blue_Pack.png"]:
        if path.is_file():
            yield f"matplotlib:{path.name}", decode_image(path.read_bytes()).pixels
    for index, image in enumerate(sklearn.datasets.load_sample_images().images):
        yield f"sklearn:{index}", unit(image.astype(np.float32))


def faces() -> Iterator[tuple[str, np.ndarray]]:
    import skimage.data

    for index, face in enumerate(skimage.data.lfw_subset()):
        yield f"lfw:{index}", cv2.resize(unit(face), (128, 128), interpolation=cv2.INTER_CUBIC)


def dicom_scans() -> Iterator[tuple[str, np.ndarray]]:
    """Slices of every non-projection modality among pydicom's test files, deduplicated by pixel content."""
    import pydicom
    from pydicom.data import get_testdata_files
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    warnings.simplefilter("ignore")
    seen: set[str] = set()
    for path in get_testdata_files():
        try:
            ds = pydicom.dcmread(path)
            modality = str(ds.get("Modality", "") or "")
            if modality in {"CR", "DX", "RTDOSE", "RTPLAN", "SR", "ECG", ""} or "PixelData" not in ds:
                continue
            pixels = ds.pixel_array
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                pixels = pixels[len(pixels) // 2]
            if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
                pixels = apply_color_lut(pixels, ds)
            elif pixels.ndim == 2:
                pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
        except Exception:
            continue
        image = unit(np.asarray(pixels, dtype=np.float32))
        digest = hashlib.sha256(cv2.resize(image, (32, 32)).round(2).tobytes()).hexdigest()
        if min(image.shape[:2]) >= MIN_SIDE and digest not in seen:
            seen.add(digest)
            yield f"pydicom:{modality}:{Path(path).name}", image


def synthetic(count: int = 10, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for i in range(count):
        size = (int(rng.integers(200, 400)), int(rng.integers(200, 400)))
        yield f"noise:{i}", rng.random(size, dtype=np.float32)
        yield f"smooth-noise:{i}", unit(cv2.GaussianBlur(rng.random(size, dtype=np.float32), (0, 0), 8))
        axis = i % 2  # horizontal and vertical ramps
        ramp = np.linspace(0, 1, size[axis], dtype=np.float32)
        yield f"gradient:{i}", np.broadcast_to(ramp[None, :] if axis else ramp[:, None], size).copy()
        cells = int(rng.integers(4, 16))
        board = (np.indices(size).sum(axis=0) // max(1, min(size) // cells)) % 2
        yield f"checkerboard:{i}", board.astype(np.float32)
        page = np.full(size, 242, dtype=np.uint8)
        for line in range(2, size[0] // 30):
            cv2.putText(page, "Lorem ipsum dolor sit amet", (10, line * 28), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 13, 1)
        yield f"text-page:{i}", page.astype(np.float32) / 255
        yield f"constant:{i}", np.full(size, float(rng.random()), dtype=np.float32)


def gate(predictor: Predictor, images: list[np.ndarray]) -> list[tuple[bool, str]]:
    verdicts = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        verdicts.extend((p.ood, p.ood_reason) for p in predictor.predict_batch(chunk, [None] * len(chunk)))
    return verdicts


def layer_of(reason: str) -> str:
    if not reason:
        return "passed"
    return "embedding" if "embedding distance" in reason else "image check"


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=settings.model_path)
    parser.add_argument("--data", type=Path, default=settings.cxr_data_dir / "kermany-pneumonia")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=settings.torch_threads)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    checkpoint = load_checkpoint(args.checkpoint)
    if OOD_EXTRA_KEY not in checkpoint.extra:
        raise SystemExit(f"{args.checkpoint} has no OOD reference: run `python -m mlops.fit_gate` first")
    predictor = Predictor(
        checkpoint, threads=args.threads, cache_size=1, cache_ttl=1, uncertainty=UncertaintyPolicy(method="none")
    )
    reference = predictor.gate.reference
    print(
        f"model {checkpoint.version}; embedding threshold {reference.threshold:.2f} "
        f"(p{reference.percentile:g} of {reference.holdout_images} held-out training images)"
    )

    test_images = radiographs(args.data, args.split)
    sets: dict[str, list[np.ndarray]] = {}
    named: dict[str, list[str]] = {}
    for set_name, source in (
        ("photos", package_photos()),
        ("faces", faces()),
        ("scans", dicom_scans()),
        ("synthetic", synthetic()),
    ):
        items = list(source)
        named[set_name] = [name for name, _ in items]
        sets[set_name] = [image for _, image in items]
    sets["inverted"] = [1.0 - image for image in test_images]
    for turns in (1, 2, 3):
        sets[f"rotated {90 * turns}"] = [np.ascontiguousarray(np.rot90(image, turns)) for image in test_images]

    results: dict[str, dict] = {}
    verdicts = gate(predictor, test_images)
    refused = [v for v in verdicts if v[0]]
    results["radiographs (wrongly refused)"] = {
        "n": len(verdicts),
        "rate": len(refused) / len(verdicts),
        "by_layer": dict(Counter(layer_of(r) for _, r in refused)),
    }
    caught_total, total = 0, 0
    for set_name, images in sets.items():
        verdicts = gate(predictor, images)
        caught = [v for v in verdicts if v[0]]
        caught_total += len(caught)
        total += len(verdicts)
        missed = [named[set_name][i] for i, v in enumerate(verdicts) if not v[0]] if set_name in named else []
        results[set_name] = {
            "n": len(verdicts),
            "rate": len(caught) / max(1, len(verdicts)),
            "by_layer": dict(Counter(layer_of(r) for _, r in caught)),
            "missed": missed[:20] if missed else len(verdicts) - len(caught),
        }
    macro = float(np.mean([v["rate"] for k, v in results.items() if not k.startswith("radiographs")]))
    results["non-radiographs (caught, all sets)"] = {"n": total, "rate": caught_total / max(1, total)}
    results["non-radiographs (caught, mean over sets)"] = {"n": len(sets), "rate": macro}

    print(f"{'set':42s} {'n':>6s} {'rate':>8s}  layers")
    for name, row in results.items():
        print(f"{name:42s} {row['n']:6d} {100 * row['rate']:7.2f}%  {row.get('by_layer', '')}")
        if row.get("missed") and isinstance(row["missed"], list):
            print(f"{'':42s} missed: {', '.join(row['missed'])}")
    if args.json:
        args.json.write_text(json.dumps({"model": checkpoint.version, "results": results}, indent=2))


if __name__ == "__main__":
    main()
