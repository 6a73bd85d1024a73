"""Serving speed without changing a single answer (issue 17): micro-batching, the ONNX runtimes, int8, the batch
endpoint and cancellation when a client goes away.

Speed itself is measured by bench/load.py, never here. These tests check what a radiologist would notice if the
speed-ups were wrong: a different probability, someone else's error, a lost or reordered answer, an abandoned
request still taking model time.
"""

from __future__ import annotations

import base64
import io
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from imaging import PreprocessSpec, decode_image, preprocess
from inference import (
    BatchPolicy,
    ModelCheckpoint,
    PredictionCancelled,
    Predictor,
    RuntimeSetupError,
    UncertaintyPolicy,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from inference.batching import MicroBatcher
from inference.export import onnx_path, quantize_int8
from inference.uncertainty import mc_dropout_logits, uncertainties_from_logits
from mlops.evaluate import evaluation_samples, task_options
from mlops.export_runtime import CALIBRATION_IMAGES, export
from tests.live_server import running_api

ONNX_RUNTIMES = ("onnxruntime", "openvino")


def tiny_checkpoint(input_size: int = 64, version: str = "tiny-serving", seed: int = 0) -> ModelCheckpoint:
    torch.manual_seed(seed)
    model = create_model("test_resnet", 2, drop_rate=0.2)
    return ModelCheckpoint(
        architecture="test_resnet",
        task="pneumonia",
        class_names=["NORMAL", "PNEUMONIA"],
        preprocess=PreprocessSpec(input_size=input_size),
        state_dict=model.state_dict(),
        threshold=0.3,
        temperature=1.5,
        version=version,
        model_kwargs={"drop_rate": 0.2},
    )


def radiograph_like(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.1, 0.4, (96, 96)).astype(np.float32)
    image[:, 40:56] += 0.3 + 0.02 * (seed % 10)
    return np.clip(image, 0, 1)


def predictor(checkpoint: ModelCheckpoint, **kwargs: object) -> Predictor:
    return Predictor(checkpoint, threads=1, cache_size=1, uncertainty=UncertaintyPolicy(passes=8), gate=False, **kwargs)


def in_threads(work: list, *args: object) -> list:
    """Call each function of `work` at the same moment from its own thread; their results (or errors) in order."""
    results: list = [None] * len(work)
    start = threading.Barrier(len(work))

    def call(i: int) -> None:
        start.wait()
        try:
            results[i] = work[i](*args)
        except Exception as exc:  # the test inspects whatever each call raised
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


# --- micro-batching -------------------------------------------------------------------------------------------------


def test_concurrent_requests_share_passes_and_get_the_answers_they_would_get_alone() -> None:
    checkpoint = tiny_checkpoint()
    alone = predictor(checkpoint)
    batched = predictor(checkpoint, batching=BatchPolicy(enabled=True, max_batch_size=8, wait_ms=200))
    images = [radiograph_like(i) for i in range(8)]
    expected = [alone.predict(image) for image in images]
    answers = in_threads([lambda i=i: batched.predict(images[i]) for i in range(8)])
    assert batched._batcher.rows_run == 8 and batched._batcher.batches_run < 8  # they did share passes
    for got, want in zip(answers, expected, strict=True):
        assert abs(got.positive_probability - want.positive_probability) < 1e-5
        assert got.label == want.label
        assert got.uncertainty.std == pytest.approx(want.uncertainty.std, abs=1e-5)
        assert np.allclose(got.embedding, want.embedding, atol=1e-5)
    batched.close()


def test_a_batch_of_64_runs_as_model_batches_not_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    forward = Predictor._forward

    def counted(self: Predictor, batch: np.ndarray) -> tuple:
        sizes.append(len(batch))
        return forward(self, batch)

    monkeypatch.setattr(Predictor, "_forward", counted)
    for batching in (
        BatchPolicy(enabled=False, max_batch_size=32),
        BatchPolicy(enabled=True, max_batch_size=32, wait_ms=200),
    ):
        model = predictor(tiny_checkpoint(), batching=batching)
        sizes.clear()
        results = model.predict_batch([radiograph_like(i) for i in range(64)], [None] * 64)
        assert len(results) == 64
        assert sizes == [32, 32], batching
        model.close()


def test_rows_run_in_arrival_order_and_each_request_gets_its_own_result() -> None:
    release, seen = threading.Event(), []

    def run_batch(batch: np.ndarray) -> list[float]:
        release.wait(10)  # hold the first batch so that the rest queue up behind it
        seen.extend(float(row[0]) for row in batch)
        return [float(row[0]) * 10 for row in batch]

    batcher = MicroBatcher(run_batch, BatchPolicy(enabled=True, max_batch_size=4, wait_ms=0))
    futures = [batcher.submit(np.array([i], dtype=np.float32)) for i in range(10)]
    release.set()
    assert [f.result(10) for f in futures] == [i * 10.0 for i in range(10)]
    assert seen == [float(i) for i in range(10)]
    batcher.close()


def test_one_bad_image_fails_alone_and_its_neighbours_are_answered() -> None:
    def run_batch(batch: np.ndarray) -> list[float]:
        if np.isnan(batch).any():
            raise ValueError("the model cannot read NaN pixels")
        return [float(row.sum()) for row in batch]

    batcher = MicroBatcher(run_batch, BatchPolicy(enabled=True, max_batch_size=8, wait_ms=200))
    rows = [np.ones(3, np.float32), np.full(3, np.nan, np.float32), np.full(3, 2, np.float32)]
    futures = [batcher.submit(row) for row in rows]
    assert futures[0].result(10) == 3.0
    assert futures[2].result(10) == 6.0
    with pytest.raises(ValueError, match="cannot read NaN"):
        futures[1].result(10)
    batcher.close()


def test_a_cancelled_request_never_reaches_the_model() -> None:
    release, seen = threading.Event(), []

    def run_batch(batch: np.ndarray) -> list[float]:
        release.wait(10)
        seen.extend(float(row[0]) for row in batch)
        return [0.0] * len(batch)

    batcher = MicroBatcher(run_batch, BatchPolicy(enabled=True, max_batch_size=1, wait_ms=0))
    busy = batcher.submit(np.array([1.0], np.float32))  # the worker is held inside this one
    time.sleep(0.2)
    gone, kept = threading.Event(), batcher.submit(np.array([3.0], np.float32))
    abandoned = batcher.submit(np.array([2.0], np.float32), cancel=gone)
    gone.set()  # its client disconnected while it waited
    release.set()
    busy.result(10), kept.result(10)
    with pytest.raises(PredictionCancelled):
        abandoned.result(10)
    assert seen == [1.0, 3.0]
    batcher.close()


def test_the_predictor_drops_a_cancelled_request_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    model = predictor(tiny_checkpoint(), batching=BatchPolicy(enabled=True))
    monkeypatch.setattr(Predictor, "_forward", lambda *_: pytest.fail("a cancelled request ran the model"))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PredictionCancelled):
        model.predict(radiograph_like(0), "sha-of-image", cancel)
    model.close()


# --- runtimes on a tiny model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_onnx_runtimes_answer_like_torch_and_cache_the_export_by_weights(runtime: str, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint()
    images = [radiograph_like(i) for i in range(4)]
    expected = predictor(checkpoint).predict_batch(images, [None] * 4)
    served = predictor(checkpoint, runtime=runtime, runtime_cache_dir=tmp_path)
    for got, want in zip(served.predict_batch(images, [None] * 4), expected, strict=True):
        assert abs(got.positive_probability - want.positive_probability) < 1e-4
        assert got.uncertainty.std == pytest.approx(want.uncertainty.std, abs=1e-4)
    assert not served.model.training  # exporting left the torch model that Grad-CAM copies in eval mode
    exported = onnx_path(checkpoint, tmp_path)
    assert exported.is_file() and exported.name.startswith("tiny-serving-")
    written = exported.stat().st_mtime_ns
    predictor(checkpoint, runtime=runtime, runtime_cache_dir=tmp_path)  # a second start reuses the graph
    assert exported.stat().st_mtime_ns == written
    retrained = tiny_checkpoint(seed=1)  # same version string, other weights: never the old graph
    assert onnx_path(retrained, tmp_path) != exported


def test_runtime_settings_that_cannot_work_say_how_to_fix_them(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSetupError, match="choose one of torch, onnxruntime, openvino"):
        predictor(tiny_checkpoint(), runtime="tensorrt")
    with pytest.raises(RuntimeSetupError, match="torch runtime serves fp32 only"):
        predictor(tiny_checkpoint(), precision="int8")
    with pytest.raises(RuntimeSetupError, match=r"python -m mlops\.export_runtime"):
        predictor(tiny_checkpoint(), runtime="openvino", precision="int8", runtime_cache_dir=tmp_path)


# --- runtimes on the shipped model and real films -------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtimes")


@pytest.fixture(scope="module")
def test_films(kermany_dir: Path) -> list[np.ndarray]:
    files = (
        sorted((kermany_dir / "test" / "NORMAL").glob("*.jpg"))[:3]
        + sorted((kermany_dir / "test" / "PNEUMONIA").glob("*.jpg"))[:3]
    )
    return [decode_image(f.read_bytes()).pixels for f in files]


@pytest.fixture(scope="module")
def torch_answers(shipped_model: Path, test_films: list[np.ndarray]) -> list:
    model = Predictor(load_checkpoint(shipped_model), threads=1, cache_size=1)
    return model.predict_batch(test_films, [None] * len(test_films))


@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_fp32_runtimes_match_torch_on_real_films(
    runtime: str, shipped_model: Path, runtime_dir: Path, test_films: list[np.ndarray], torch_answers: list
) -> None:
    checkpoint = load_checkpoint(shipped_model)
    served = Predictor(checkpoint, threads=1, cache_size=1, runtime=runtime, runtime_cache_dir=runtime_dir)
    answers = served.predict_batch(test_films, [None] * len(test_films))
    for got, want in zip(answers, torch_answers, strict=True):
        assert abs(got.positive_probability - want.positive_probability) < 1e-3
        assert got.label == want.label and got.ood == want.ood
    # MC dropout: the torch head resampled on this runtime's embedding, exactly as inference.uncertainty does it
    head, policy = served.model.get_classifier(), served.policy
    for got, film in zip(answers, test_films, strict=True):
        embedding = served.runtime.run(preprocess(film, checkpoint.preprocess)[None])[0]
        with torch.inference_mode():
            sampled = mc_dropout_logits(head, torch.from_numpy(embedding), policy.passes, 0.2, policy.seed).numpy()
        assert got.uncertainty == uncertainties_from_logits(sampled, checkpoint.temperature, "mc_dropout")[0]
    for got, want in zip(answers, torch_answers, strict=True):
        assert got.uncertainty.std == pytest.approx(want.uncertainty.std, abs=1e-3)


def test_int8_changes_probabilities_only_slightly_on_real_films(
    shipped_model: Path, kermany_dir: Path, runtime_dir: Path, test_films: list[np.ndarray], torch_answers: list
) -> None:
    """Fast version: calibrated on 16 training films; the full check (test-split AUROC) is the slow test below."""
    checkpoint = load_checkpoint(shipped_model)
    calibration_files = sorted((kermany_dir / "train").glob("*/*.jpg"))[::200][:16]
    calibration = np.stack(
        [preprocess(decode_image(f.read_bytes()).pixels, checkpoint.preprocess) for f in calibration_files]
    )
    fp32 = Predictor(checkpoint, threads=1, cache_size=1, runtime="onnxruntime", runtime_cache_dir=runtime_dir)
    quantize_int8(onnx_path(checkpoint, runtime_dir), calibration, onnx_path(checkpoint, runtime_dir, "int8"))
    assert fp32.runtime.label == "onnxruntime-fp32"
    for runtime in ONNX_RUNTIMES:
        int8 = Predictor(
            checkpoint, threads=1, cache_size=1, runtime=runtime, precision="int8", runtime_cache_dir=runtime_dir
        )
        answers = int8.predict_batch(test_films, [None] * len(test_films))
        drift = max(
            abs(a.positive_probability - b.positive_probability) for a, b in zip(answers, torch_answers, strict=True)
        )
        assert drift < 0.05, (runtime, drift)


# --- over HTTP --------------------------------------------------------------------------------------------------


def png(seed: int, side: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((radiograph_like(seed) * 255).astype(np.uint8)).resize((side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def slow_model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A server whose model takes long enough (resnet18 at 192 px, one thread, batches of 8: seconds for 64 images
    even on a quiet machine) that a request queued behind a 64-image batch is still waiting when its client gives
    up."""
    folder = tmp_path_factory.mktemp("slow-model")
    checkpoint = tiny_checkpoint(input_size=192, version="slow-serving")
    checkpoint.architecture = "resnet18"
    torch.manual_seed(0)
    checkpoint.state_dict = create_model("resnet18", 2, drop_rate=0.2).state_dict()
    save_checkpoint(checkpoint, folder / "slow.pt")
    admin = ("perf-admin", secrets.token_urlsafe(18))
    env = {
        "MODEL_PATH": str(folder / "slow.pt"),
        "VAR_DIR": str(folder / "var"),
        "TORCH_THREADS": "1",
        "ADMIN_USERNAME": admin[0],
        "ADMIN_PASSWORD": admin[1],
        "JWT_SECRET": secrets.token_urlsafe(48),
        "RATE_LIMIT": "100000/minute",
        "ENABLE_BATCHING": "true",
        "MAX_BATCH_SIZE": "8",
        "BATCH_MAX": "64",
        "OOD_ENABLED": "false",
        "REQUEST_TIMEOUT_S": "600",
    }
    with running_api(env) as url:
        login = {"username": admin[0], "password": admin[1]}
        token = httpx.post(f"{url}/v1/auth/login", json=login, timeout=60).raise_for_status().json()["access_token"]
        yield url, {"Authorization": f"Bearer {token}"}


def test_batch_endpoint_answers_64_images_in_order(slow_model_server: tuple[str, dict[str, str]]) -> None:
    url, headers = slow_model_server
    images = [png(i) for i in range(63)] + [base64.b64encode(b"not an image").decode()]
    body = {"images": [base64.b64encode(data).decode() for data in images[:63]] + [images[63]]}
    answer = httpx.post(f"{url}/predict/batch", json=body, headers=headers, timeout=300).raise_for_status().json()
    assert answer["batch_size"] == 64
    single = httpx.post(f"{url}/predict", files={"file": ("5.png", png(5))}, headers=headers, timeout=120).json()
    assert answer["predictions"][5]["probabilities"] == single["probabilities"]  # its own answer, in its place
    assert single["cached"] is True  # the batch stored it
    assert answer["predictions"][63]["index"] == 63 and answer["predictions"][63]["status_code"] in (400, 415, 422)


def test_a_client_that_disconnects_is_dropped_from_the_model_queue(
    slow_model_server: tuple[str, dict[str, str]],
) -> None:
    url, headers = slow_model_server
    bodies = [{"images": [base64.b64encode(png(1000 + 64 * r + i)).decode() for i in range(64)]} for r in range(2)]
    ahead = [
        threading.Thread(
            target=lambda body=body: httpx.post(f"{url}/predict/batch", json=body, headers=headers, timeout=300),
            daemon=True,
        )
        for body in bodies
    ]
    for thread in ahead:
        thread.start()  # 16 model batches of 8 images queue up first
    # Long enough for both uploads to reach the model queue on a loaded machine; the second batch alone keeps the
    # model busy for seconds after it on a quiet one.
    time.sleep(1.5)
    impatient = png(4242)
    with pytest.raises(httpx.TimeoutException):  # the client gives up while its film waits behind the batch
        httpx.post(f"{url}/predict", files={"file": ("x.png", impatient)}, headers=headers, timeout=0.3)
    for thread in ahead:
        thread.join(timeout=300)
    again = httpx.post(f"{url}/predict", files={"file": ("x.png", impatient)}, headers=headers, timeout=120)
    assert again.status_code == 200
    assert again.json()["cached"] is False  # the abandoned request never ran (had it run, its answer was cached)


# --- the whole Kermany test split (slow) ----------------------------------------------------------------------------


@pytest.mark.slow
def test_runtimes_on_the_whole_test_split(shipped_model: Path, kermany_dir: Path, tmp_path: Path) -> None:
    """fp32: every probability within 1e-3 of torch; int8 (calibrated on 256 training films, as the export command
    does by default): test AUROC at most 0.005 below torch's."""
    checkpoint = load_checkpoint(shipped_model)
    samples = evaluation_samples(kermany_dir, "test", task_options(checkpoint, kermany_dir)).samples
    films = [decode_image(s.path.read_bytes()).pixels for s in samples]
    labels = np.array([s.label == checkpoint.positive_class for s in samples], dtype=int)
    export(checkpoint, tmp_path, kermany_dir, CALIBRATION_IMAGES)

    def probabilities(runtime: str, precision: str = "fp32") -> np.ndarray:
        served = Predictor(
            checkpoint,
            cache_size=1,
            uncertainty=UncertaintyPolicy(method="none"),
            gate=False,
            runtime=runtime,
            precision=precision,
            runtime_cache_dir=tmp_path,
        )
        return np.array([p.positive_probability for p in served.predict_batch(films, [None] * len(films))])

    reference = probabilities("torch")
    auroc = roc_auc_score(labels, reference)
    for runtime in ONNX_RUNTIMES:
        assert np.abs(probabilities(runtime) - reference).max() < 1e-3, runtime
        assert auroc - roc_auc_score(labels, probabilities(runtime, "int8")) < 0.005, runtime
