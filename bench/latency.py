"""End-to-end `/predict` latency (p50/p95, batch 1) versus the bare model forward, measured in one run.

    python bench/latency.py [--requests 100] [--checkpoint models/pneumonia.pt]

Every request sends a different real radiograph from the Kermany test split, so the result cache never answers.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imaging import decode_image, preprocess
from inference import load_checkpoint
from settings import get_settings
from tests.live_server import running_api


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def bare_forward_ms(checkpoint_path: Path, images: list[bytes], threads: int) -> list[float]:
    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.build_model()
    inputs = [torch.from_numpy(preprocess(decode_image(b).pixels, checkpoint.preprocess))[None] for b in images]
    timings = []
    with torch.inference_mode():
        for _ in range(5):
            model(inputs[0])
        for tensor in inputs:
            started = time.perf_counter()
            model(tensor)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


BENCH_ADMIN = {"ADMIN_USERNAME": "bench-admin", "ADMIN_PASSWORD": "Bench-Only-" + secrets.token_urlsafe(12)}


def api_latency_ms(base_url: str, images: list[bytes]) -> list[float]:
    timings = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        login = {"username": BENCH_ADMIN["ADMIN_USERNAME"], "password": BENCH_ADMIN["ADMIN_PASSWORD"]}
        token = client.post("/v1/auth/login", json=login).raise_for_status().json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        for i in range(3):  # warm the connection and the server
            client.post("/predict", files={"file": (f"warm{i}.jpg", images[-1 - i], "image/jpeg")})
        for i, payload in enumerate(images[:-3]):
            started = time.perf_counter()
            response = client.post("/predict", files={"file": (f"{i}.jpg", payload, "image/jpeg")})
            timings.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--checkpoint", type=Path, default=get_settings().model_path)
    args = parser.parse_args()
    test_dir = Path(get_settings().cxr_data_dir) / "kermany-pneumonia" / "test"
    files = sorted(test_dir.rglob("*.jpg"))[: args.requests + 3]
    images = [f.read_bytes() for f in files]
    threads = get_settings().torch_threads

    with tempfile.TemporaryDirectory() as var_dir:
        env = {
            "MODEL_PATH": str(args.checkpoint.resolve()),
            "VAR_DIR": var_dir,
            "TORCH_THREADS": str(threads),
            **BENCH_ADMIN,
        }
        with running_api(env) as base_url:
            api_ms = api_latency_ms(base_url, images)
    forward_ms = bare_forward_ms(args.checkpoint, images[: len(api_ms)], threads)

    api_p50, api_p95 = percentiles(api_ms)
    fwd_p50, fwd_p95 = percentiles(forward_ms)
    print(f"checkpoint: {args.checkpoint} ({load_checkpoint(args.checkpoint).version}); torch threads {threads}")
    print(f"bare forward (batch 1):  p50 {fwd_p50:7.1f} ms   p95 {fwd_p95:7.1f} ms   n={len(forward_ms)}")
    print(f"POST /predict end-to-end: p50 {api_p50:7.1f} ms   p95 {api_p95:7.1f} ms   n={len(api_ms)}")
    print(f"ratio end-to-end / forward: p50 {api_p50 / fwd_p50:.2f}x   p95 {api_p95 / fwd_p95:.2f}x")


if __name__ == "__main__":
    main()
