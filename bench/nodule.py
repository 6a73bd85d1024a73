"""Measure the nodule/mass model on the test split through the serving path, and the cost of both findings per film.

    python bench/nodule.py [--checkpoint models/nodule.pt] [--pneumonia models/pneumonia.pt]
                           [--data ../shared/datasets/nih-nodule-boxes] [--split test] [--out bench/measured]

Prints the image-level AUROC (nodule/mass films, boxed or not, against films with other findings) with its patient
bootstrap interval, the FROC curve (sensitivity against false marks per film; a hit is a mark centre inside a
radiologist's box) and the sensitivity at 0.5 and 1 false mark per film; writes `nodule-froc.png` and `nodule.json`.
Then times one film at batch 1 on this CPU: decode, the pneumonia model and the nodule model (warm, no cache), on the
runtime named by --runtime/--precision (both models; int8 graphs are made ahead by `python -m mlops.export_runtime`).
Targets (issue 23): AUROC >= 0.75, sensitivity >= 0.5 at 1 false mark per film, both findings <= 80 ms per film.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imaging import decode_image
from inference import NodulePredictor, Predictor, load_checkpoint
from labelled_data import load_boxed_set
from mlops.nodule_metrics import FilmResult, froc, score_films, summarise
from settings import get_settings


def plot_froc(films: list[FilmResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = froc(films)
    figure, axes = plt.subplots(figsize=(5, 4), dpi=120)
    axes.step([p.false_positives_per_film for p in points], [p.sensitivity for p in points], where="post")
    for budget in (0.5, 1.0):
        axes.axvline(budget, color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="false marks per film", ylabel="sensitivity (boxes found)", xlim=(0, 3), ylim=(0, 1), title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def time_both(pneumonia: Predictor, nodule: NodulePredictor, files: list[Path], rounds: int) -> dict[str, float]:
    """Median milliseconds per film at batch 1: decode, pneumonia, nodule (each warm, caches bypassed)."""
    decode_ms, pneumonia_ms, nodule_ms = [], [], []
    for i in range(rounds):
        data = files[i % len(files)].read_bytes()
        started = time.perf_counter()
        pixels = decode_image(data).pixels
        decoded = time.perf_counter()
        pneumonia.predict(pixels)
        middle = time.perf_counter()
        nodule.predict(pixels)
        done = time.perf_counter()
        decode_ms.append((decoded - started) * 1e3)
        pneumonia_ms.append((middle - decoded) * 1e3)
        nodule_ms.append((done - middle) * 1e3)
    both = [p + n for p, n in zip(pneumonia_ms, nodule_ms, strict=True)]
    return {
        "decode_ms": statistics.median(decode_ms),
        "pneumonia_ms": statistics.median(pneumonia_ms),
        "nodule_ms": statistics.median(nodule_ms),
        "both_models_ms": statistics.median(both),
        "both_models_ms_max": max(both),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/nodule.pt"))
    parser.add_argument("--pneumonia", type=Path, default=Path("models/pneumonia.pt"))
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/nih-nodule-boxes"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runtime", default="torch", help="torch | onnxruntime | openvino, for both models")
    parser.add_argument("--precision", default="fp32", help="fp32 | int8 (int8 graphs: python -m mlops.export_runtime)")
    parser.add_argument("--out", type=Path, default=Path("bench/measured"))
    args = parser.parse_args()
    settings = get_settings()
    checkpoint = load_checkpoint(args.checkpoint)
    runtime = {
        "runtime": args.runtime,
        "precision": args.precision,
        "runtime_cache_dir": settings.resolved_runtime_cache_dir,
    }
    nodule = NodulePredictor(checkpoint, threads=settings.torch_threads, cache_size=1, **runtime)
    samples = [s for s in load_boxed_set(args.data) if s.split == args.split]
    films = score_films(nodule, samples)
    figures = summarise(films, float(checkpoint.extra.get("location_threshold", 0.5)))
    args.out.mkdir(parents=True, exist_ok=True)
    plot_froc(films, args.out / "nodule-froc.png", f"{checkpoint.version} ({args.split}, {figures['boxes']} boxes)")
    pneumonia_checkpoint = load_checkpoint(args.pneumonia)
    pneumonia = Predictor(pneumonia_checkpoint, threads=settings.torch_threads, cache_size=1, gate=False, **runtime)
    cost = time_both(pneumonia, nodule, [s.path for s in samples], args.rounds)
    cost["runtime"] = f"{args.runtime}-{args.precision}"
    result = {"model_version": checkpoint.version, "split": args.split, **figures, "cost": cost}
    result["froc"] = [[p.false_positives_per_film, p.sensitivity, p.threshold] for p in froc(films)]
    json_path = args.out / f"nodule-{cost['runtime']}.json"
    json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    lo, hi = figures["auroc_ci"]
    print(f"{checkpoint.version} on {args.split}: {figures['films']} films, {figures['boxes']} boxes")
    boxed_only = figures["auroc_boxed_only"]
    print(f"image AUROC {figures['auroc']:.3f} (95% CI {lo:.3f}-{hi:.3f}); boxed films only {boxed_only:.3f}")
    for budget in ("0.5", "1"):
        low, high = figures[f"sensitivity_at_{budget}_fp_ci"]
        value = figures[f"sensitivity_at_{budget}_fp"]
        print(f"sensitivity at {budget} false marks/film: {value:.3f} (95% CI {low:.3f}-{high:.3f})")
    timings = {k: round(v, 1) for k, v in cost.items() if isinstance(v, float)}
    print(f"per film at batch 1, {cost['runtime']} (median ms): {json.dumps(timings)}")
    print(f"wrote {args.out / 'nodule-froc.png'} and {json_path}")


if __name__ == "__main__":
    main()
