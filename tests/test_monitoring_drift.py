"""Drift as the admin relies on it: shifted sets of real films (inverted, blurred, 16-bit, adult NIH films) are
flagged with the statistic that moved; fresh samples of the same films raise an alarm at most `alpha` of the time.
Real films come from ../shared/datasets (skipped here without them, failed under CI=true)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from monitoring.drift import ImageStats, compare_images, image_stats, main, mmd_test, read_image_stats
from tests.conftest import make_tiny_checkpoint
from tests.monitoring_support import in_process_api

ALPHA = 0.05
DRAWS = 200


@pytest.fixture(scope="module")
def kermany_films(kermany_dir: Path) -> list[Path]:
    paths = sorted(p for p in (kermany_dir / "train").rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    rng = np.random.default_rng(15)
    return [paths[i] for i in rng.choice(len(paths), 600, replace=False)]


@pytest.fixture(scope="module")
def kermany_stats(kermany_films: list[Path]) -> list[ImageStats]:
    return [read_image_stats(path) for path in kermany_films]


def test_fresh_samples_of_the_same_films_rarely_alarm(kermany_stats: list[ImageStats]) -> None:
    rng = np.random.default_rng(0)
    alarms = 0
    for _ in range(DRAWS):
        order = rng.permutation(len(kermany_stats))
        baseline, new = [kermany_stats[i] for i in order[:100]], [kermany_stats[i] for i in order[100:200]]
        alarms += compare_images(baseline, new, ALPHA).detected
    assert alarms / DRAWS <= ALPHA, f"{alarms} false alarms in {DRAWS} draws"


def _shifted(kind: str, films: list[Path], nodule_dir: Path) -> list[ImageStats]:
    if kind == "adult NIH films":
        return [read_image_stats(path) for path in sorted((nodule_dir / "images").glob("*"))[:150]]
    arrays = [np.asarray(Image.open(path).convert("L")) for path in films[300:450]]
    if kind == "inverted":
        return [image_stats(255 - a, 8, "JPEG") for a in arrays]
    if kind == "blurred":
        return [
            image_stats(np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(2))), 8, "JPEG") for a in arrays
        ]
    return [image_stats(a.astype(np.uint16) * 257, 16, "JPEG") for a in arrays]  # the same films at 16 bits


@pytest.mark.parametrize(
    ("kind", "moved"),
    [
        ("inverted", "intensity_mean"),
        ("blurred", "sharpness"),
        ("16 bits", "bit_depth"),
        ("adult NIH films", "width"),
    ],
)
def test_shifted_sets_are_detected(
    kind: str, moved: str, kermany_films: list[Path], kermany_stats: list[ImageStats], nodule_dir: Path
) -> None:
    report = compare_images(kermany_stats[:150], _shifted(kind, kermany_films, nodule_dir), ALPHA)
    assert report.detected and moved in [test.feature for test in report.drifted], report


def test_embedding_mmd_false_alarms_and_detection() -> None:
    rng = np.random.default_rng(1)
    alarms = sum(
        mmd_test(rng.normal(size=(60, 32)), rng.normal(size=(60, 32)), permutations=100, seed=i).p_value < ALPHA
        for i in range(60)
    )
    assert alarms / 60 <= ALPHA + 0.05  # 60 draws: allow the binomial spread around 5 %
    shifted = mmd_test(rng.normal(size=(60, 32)), rng.normal(0.4, 1.0, size=(60, 32)), permutations=100)
    assert shifted.p_value < ALPHA


def _write(folder: Path, films: list[Path], bits: int) -> None:
    folder.mkdir()
    for index, path in enumerate(films):
        pixels = np.asarray(Image.open(path).convert("L"))
        image = Image.fromarray(pixels.astype(np.uint16) * 257) if bits == 16 else Image.fromarray(pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        (folder / f"{index:03}.png").write_bytes(buffer.getvalue())


def test_command_line(tmp_path: Path, kermany_films: list[Path]) -> None:
    _write(tmp_path / "baseline", kermany_films[:60], 8)
    _write(tmp_path / "same", kermany_films[60:120], 8)
    _write(tmp_path / "deeper", kermany_films[60:120], 16)
    same, deeper = io.StringIO(), io.StringIO()
    assert main(["--baseline", str(tmp_path / "baseline"), "--new", str(tmp_path / "same")], same) == 0
    assert same.getvalue().splitlines()[-1] == "drift detected: none"
    assert main(["--baseline", str(tmp_path / "baseline"), "--new", str(tmp_path / "deeper")], deeper) == 1
    assert deeper.getvalue().splitlines()[-1].startswith("drift detected: ")
    assert "bit_depth" in deeper.getvalue().splitlines()[-1]
    assert main(["--baseline", str(tmp_path / "baseline"), "--new", str(tmp_path / "nothing")], io.StringIO()) == 2


def test_drift_endpoint_and_alert_on_recent_cases(tmp_path: Path, kermany_films: list[Path]) -> None:
    _write(tmp_path / "baseline", kermany_films[:40], 8)
    _write(tmp_path / "incoming", kermany_films[40:65], 16)  # the same kind of films, now from a 16-bit source
    model = make_tiny_checkpoint(tmp_path / "tiny.pt", threshold=0.3)
    api = in_process_api(tmp_path / "var", model, drift_baseline_dir=tmp_path / "baseline", drift_min_cases=20,
                         alert_interval_s=0.5, drift_check_interval_s=0)  # fmt: skip
    with api.client() as http:
        empty = http.get("/v1/monitoring/drift").json()
        assert empty["detected"] is None
        assert empty["reason"] == "no data: 0 recent cases, 20 needed (DRIFT_MIN_CASES)"
        for path in sorted((tmp_path / "incoming").iterdir()):
            created = http.post("/v1/studies", files={"file": (path.name, path.read_bytes(), "image/png")})
            assert created.status_code == 201, created.text
        drift = http.get("/v1/monitoring/drift", params={"window": 25}).json()
        assert drift["detected"] is True and (drift["baseline_size"], drift["new_size"]) == (40, 25)
        drifted = {test["feature"] for test in drift["tests"] if test["drifted"]}
        assert "bit_depth" in drifted and drift["reason"].endswith(
            f"drift: {', '.join(sorted(drifted, key=order(drift)))}"
        )
        deadline, rules = time.time() + 60, {}
        while time.time() < deadline and "drift_detected" not in rules:
            rules = {alert["rule"]: alert for alert in http.get("/v1/alerts").json()["alerts"]}
            time.sleep(0.3)
        assert rules["drift_detected"]["state"] == "firing"
        assert rules["drift_detected"]["message"] == "input drift detected"


def order(drift: dict) -> Callable[[str], int]:
    names = [test["feature"] for test in drift["tests"]]
    return names.index
