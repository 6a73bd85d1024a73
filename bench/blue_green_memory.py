"""What blue-green costs in memory: the resident set (psutil RSS) of this process with one serving Predictor loaded
and warmed as the backend loads it (Predictor.from_settings + one prediction), then with a second version beside it
(the previous champion the backend keeps warm for an instant rollback), then with the Grad-CAM copy of each.

    python bench/blue_green_memory.py [--checkpoint models/pneumonia.pt]

The second version is the same checkpoint under another version string (a recalibrated site version has exactly
the shipped model's size); prints one Markdown table in MiB.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from inference import Predictor, load_checkpoint, save_checkpoint  # noqa: E402
from settings import get_settings  # noqa: E402


def rss_mib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def warm(path: Path) -> Predictor:
    checkpoint = load_checkpoint(path)
    predictor = Predictor.from_settings(checkpoint, get_settings())
    size = checkpoint.preprocess.input_size
    predictor.predict(np.full((size, size), 0.5, dtype=np.float32), None)
    return predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/pneumonia.pt"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        second = load_checkpoint(args.checkpoint)
        second.version += "-blue-green"
        second_path = Path(tmp) / "second.pt"
        save_checkpoint(second, second_path)
        rows = [("imports only", rss_mib())]
        first_model = warm(args.checkpoint)
        rows.append(("one version served", rss_mib()))
        second_model = warm(second_path)
        rows.append(("two versions (blue-green)", rss_mib()))
        first_model.explainer(), second_model.explainer()
        rows.append(("two versions + Grad-CAM copies", rss_mib()))
    print("| state | RSS MiB | vs one version |\n| --- | ---: | ---: |")
    for name, value in rows:
        print(f"| {name} | {value:.0f} | {value - rows[1][1]:+.0f} |")


if __name__ == "__main__":
    main()
