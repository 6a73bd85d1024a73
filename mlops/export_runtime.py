"""Export a checkpoint for the fast CPU runtimes: `python -m mlops.export_runtime --checkpoint FILE [--int8]`.

Writes the fp32 ONNX graph (embedding + logits outputs, see inference.export) into RUNTIME_CACHE_DIR under a name
keyed by the checkpoint's version and weights sha, where INFERENCE_RUNTIME=onnxruntime|openvino finds it. With
`--int8` it also writes the static int8 graph, calibrated on `--calibration-images` training films of `--data`
(evenly spread over the sorted train split of the checkpoint's own task definition, both classes), and prints the
int8 graph's largest probability change against fp32 on those films.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import labelled_data as datasets
from imaging import decode_image, preprocess
from inference import ModelCheckpoint, is_nodule_checkpoint, load_checkpoint
from inference.export import ensure_fp32_onnx, onnx_path, quantize_int8
from mlops.evaluate import task_options
from settings import get_settings

CALIBRATION_IMAGES = 256


def calibration_images(checkpoint: ModelCheckpoint, data_dir: Path, count: int, split: str = "train") -> np.ndarray:
    """(N, 1, S, S) preprocessed training films, evenly spaced over the sorted split (deterministic); a nodule
    model calibrates on its own boxed set (`--data .../nih-nodule-boxes`)."""
    if is_nodule_checkpoint(checkpoint):
        files = [s.path for s in datasets.load_boxed_set(data_dir) if s.split == split]
    else:
        options = task_options(checkpoint, data_dir)
        files = [s.path for s in datasets.select(datasets.load_samples(data_dir, options), split)]
    samples = sorted(files, key=str)
    if not samples:
        raise SystemExit(f"no images in split {split!r} of {data_dir}")
    chosen = [samples[int(i)] for i in np.linspace(0, len(samples) - 1, min(count, len(samples)))]
    return np.stack([preprocess(decode_image(path.read_bytes()).pixels, checkpoint.preprocess) for path in chosen])


def export(checkpoint: ModelCheckpoint, cache_dir: Path, data_dir: Path | None, int8_images: int) -> list[Path]:
    """The fp32 graph, and the int8 one when `int8_images` > 0 (calibrated on that many films of `data_dir`)."""
    fp32 = ensure_fp32_onnx(checkpoint, checkpoint.build_model(), cache_dir)
    if int8_images <= 0:
        return [fp32]
    if data_dir is None:
        raise SystemExit("--int8 needs --data (the training images calibrate the activation ranges)")
    calibration = calibration_images(checkpoint, data_dir, int8_images)
    int8 = quantize_int8(fp32, calibration, onnx_path(checkpoint, cache_dir, "int8"))
    return [fp32, int8]


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=settings.model_path)
    parser.add_argument("--cache-dir", type=Path, default=settings.resolved_runtime_cache_dir)
    parser.add_argument("--int8", action="store_true", help="also write the int8 graph (needs --data)")
    parser.add_argument("--data", type=Path, default=settings.cxr_data_dir / "kermany-pneumonia")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    paths = export(checkpoint, args.cache_dir, args.data, args.calibration_images if args.int8 else 0)
    for path in paths:
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
