"""The campaign's population report: the hidden-failure share and the radiologist boxes it scores heatmaps on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelled_data import Sample
from mlops.population_report import Scored, confident_wrong_share, opacity_boxes


def scored(probs: list[float], labels: list[int], flagged: list[bool]) -> Scored:
    probs_array = np.array(probs)
    confidence = np.where(probs_array >= 0.5, probs_array, 1 - probs_array)
    samples = [Sample(Path(f"{i}.png"), "X", "val", str(i)) for i in range(len(probs))]
    return Scored(samples, np.array(labels), probs_array, confidence, np.array(flagged))


def test_confident_wrong_counts_only_unflagged_confident_errors() -> None:
    # film 0: wrong at 0.97, unflagged -> counted; film 1: wrong at 0.97 but flagged; film 2: wrong at 0.8;
    # film 3: right at 0.99.
    result = scored([0.97, 0.97, 0.8, 0.99], [0, 0, 0, 1], [False, True, False, False])
    assert confident_wrong_share(result, 0.5, np.ones(4, dtype=bool)) == 0.25
    # the threshold decides "wrong": at 0.98 film 0 is answered NORMAL (right), with confidence 0.97 in PNEUMONIA
    assert confident_wrong_share(result, 0.98, np.ones(4, dtype=bool)) == 0.0


def test_opacity_boxes_are_read_per_file(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        'file,opacity_bboxes_xywh\nPNEUMONIA/a.jpg,"10,20,30,40;50.5,60,7,8"\nNORMAL/b.jpg,\n', encoding="utf-8"
    )
    assert opacity_boxes(manifest) == {"PNEUMONIA/a.jpg": [(10.0, 20.0, 30.0, 40.0), (50.5, 60.0, 7.0, 8.0)]}
