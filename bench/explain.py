"""Per-image cost of heatmaps and uncertainty versus one forward pass, measured in one run on the same images.

    python bench/explain.py [--checkpoint models/pneumonia.pt] [--images 20] [--passes 20] [--threads 2]

Rows (median and p95 ms per image, batch 1, each image a different Kermany test radiograph; the steps take
turns image by image):
- forward: the bare model forward (what every prediction costs at least)
- predict (no uncertainty): the Predictor path with UNCERTAINTY_METHOD=none (forward, embedding, input gate)
- predict + mc_dropout: the default path (one backbone pass, N resampled heads)
- predict + tta: N full forward passes
- gradcam, gradcam++: one heatmap on the Explainer's model copy

With --quality, it also scores the whole test split with the settings' policy and reports how useful the flag is:
share flagged uncertain, error rate among flagged and unflagged cases, and the AUROC of entropy and std for
telling wrong predictions from right ones.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imaging import decode_image, preprocess
from inference import Predictor, load_checkpoint
from inference.explain import Explainer
from inference.uncertainty import UncertaintyPolicy
from settings import get_settings

WARM_UP = 3


def timed_interleaved(actions: dict[str, Callable[[np.ndarray], object]], images: list[np.ndarray]) -> dict:
    """ms per image for every action; the actions take turns on each image (in a rotating order), so that load
    from other processes hits them alike and the ratios stay meaningful on a shared machine."""
    for action in actions.values():
        for image in images[:WARM_UP]:
            action(image)
    names = list(actions)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for index, image in enumerate(images):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            actions[name](image)
            timings[name].append((time.perf_counter() - started) * 1000)
    return timings


def load_images(data_dir: Path, count: int) -> list[np.ndarray]:
    files = sorted((data_dir / "test").glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no test images under {data_dir / 'test'}")
    return [decode_image(f.read_bytes()).pixels for f in random.Random(0).sample(files, min(count, len(files)))]


def uncertainty_quality(checkpoint_path: Path, data_dir: Path, threads: int) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    predictor = Predictor(load_checkpoint(checkpoint_path), threads=threads, cache_size=1, cache_ttl=1)
    files = sorted((data_dir / "test").glob("*/*"))
    truth, results = [], []
    for start in range(0, len(files), 16):
        chunk = files[start : start + 16]
        results += predictor.predict_batch([decode_image(f.read_bytes()).pixels for f in chunk], [None] * len(chunk))
        truth += [f.parent.name for f in chunk]
    wrong = np.array([r.label != t for r, t in zip(results, truth, strict=True)])
    flagged = np.array([r.uncertain for r in results])
    entropy = np.array([r.uncertainty.entropy for r in results])
    std = np.array([r.uncertainty.std for r in results])
    return {
        "images": len(results),
        "method": results[0].uncertainty.method,
        "flagged_uncertain": float(flagged.mean()),
        "error_rate_flagged": float(wrong[flagged].mean()) if flagged.any() else float("nan"),
        "error_rate_unflagged": float(wrong[~flagged].mean()) if (~flagged).any() else float("nan"),
        "error_rate_all": float(wrong.mean()),
        "auroc_entropy_for_errors": float(roc_auc_score(wrong, entropy)) if 0 < wrong.sum() < len(wrong) else 0.0,
        "auroc_std_for_errors": float(roc_auc_score(wrong, std)) if 0 < wrong.sum() < len(wrong) else 0.0,
        "std_p50": float(np.median(std)),
        "std_p95": float(np.percentile(std, 95)),
        "entropy_p50": float(np.median(entropy)),
        "ood_refused": float(np.mean([r.ood for r in results])),
    }


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=settings.model_path)
    parser.add_argument("--data", type=Path, default=settings.cxr_data_dir / "kermany-pneumonia")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--passes", type=int, default=settings.uncertainty_passes)
    parser.add_argument("--threads", type=int, default=settings.torch_threads)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--quality", action="store_true", help="also score the test split (uncertainty usefulness)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.checkpoint)
    images = load_images(args.data, args.images)
    model = checkpoint.build_model()

    def forward(image: np.ndarray) -> None:
        with torch.inference_mode():
            model(torch.from_numpy(preprocess(image, checkpoint.preprocess))[None])

    def predictor_for(method: str) -> Predictor:
        policy = UncertaintyPolicy(method=method, passes=args.passes)  # type: ignore[arg-type]
        return Predictor(checkpoint, threads=args.threads, cache_size=1, cache_ttl=1, uncertainty=policy)

    explainer = Explainer(checkpoint)
    rows = timed_interleaved(
        {
            "forward": forward,
            "predict (no uncertainty)": predictor_for("none").predict,
            f"predict + mc_dropout x{args.passes}": predictor_for("mc_dropout").predict,
            f"predict + tta x{args.passes}": predictor_for("tta").predict,
            "gradcam": lambda image: explainer.heatmap(image, method="gradcam"),
            "gradcam++": lambda image: explainer.heatmap(image, method="gradcam++"),
        },
        images,
    )
    base = float(np.median(rows["forward"]))
    print(
        f"model {checkpoint.version} ({checkpoint.architecture}, {checkpoint.preprocess.input_size} px), "
        f"{len(images)} images, {args.threads} threads, batch 1"
    )
    print(f"{'step':34s} {'median ms':>10s} {'p95 ms':>8s} {'x forward':>10s}")
    summary = {}
    for name, values in rows.items():
        median, p95 = float(np.median(values)), float(np.percentile(values, 95))
        summary[name] = {"median_ms": round(median, 2), "p95_ms": round(p95, 2), "x_forward": round(median / base, 2)}
        print(f"{name:34s} {median:10.1f} {p95:8.1f} {median / base:10.2f}")
    mc_extra = (
        summary[f"predict + mc_dropout x{args.passes}"]["median_ms"] - summary["predict (no uncertainty)"]["median_ms"]
    )
    print(f"uncertainty cost (mc_dropout over no uncertainty): {mc_extra:.1f} ms per image")
    quality = uncertainty_quality(args.checkpoint, args.data, args.threads) if args.quality else {}
    for name, value in quality.items():
        print(f"{name:34s} {value:.4f}" if isinstance(value, float) else f"{name:34s} {value}")
    if args.json:
        payload = {"model": checkpoint.version, "threads": args.threads, "rows": summary, "quality": quality}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
