"""Backend CPU time of one "Run AI analysis" click, as the workstation UI makes it, against a real uvicorn.

A click is what the UI sends: the upload (`POST /v1/dicom/inspect` when the file is chosen, then
`POST /v1/studies`), then the case image, the raw heatmap, the similar cases and their thumbnails. Then, on a
freshly started backend (empty caches), one report and one similar-case request of an existing case. The CPU time
is read from the uvicorn process (user + system, all threads) before and after each step.

    python -m bench.click [--films 8] [--library-images 300] [--dicom-side 2800]

With `--dicom-side N` each film is sent as a 12-bit uncompressed DICOM of N x N pixels (the size a digital
radiography detector writes), where every extra decode of the upload costs real time.

Needs ../shared/datasets/kermany-pneumonia (CXR_DATA_DIR) and the shipped model.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil

from imaging import decode_image
from settings import get_settings
from tests.factories import dicom_bytes, to_stored
from tests.live_server import running_api

BENCH_ADMIN = {"ADMIN_USERNAME": "bench-admin", "ADMIN_PASSWORD": "Bench-Only-" + secrets.token_urlsafe(12)}


def backend_process() -> psutil.Process:
    """The uvicorn child this process started."""
    for child in psutil.Process().children(recursive=True):
        if "uvicorn" in " ".join(child.cmdline()):
            return child
    raise RuntimeError("no uvicorn child process found")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measured(process: psutil.Process, action: Callable[[], object]) -> float:
    before = cpu_seconds(process)
    action()
    return cpu_seconds(process) - before


@contextmanager
def backend(var_dir: Path) -> Iterator[tuple[httpx.Client, psutil.Process]]:
    env = {"VAR_DIR": str(var_dir), "DATABASE_URL": "", "RATE_LIMIT": "100000/minute", **BENCH_ADMIN}
    with running_api(env) as base, httpx.Client(base_url=base, timeout=120) as client:
        login = {"username": BENCH_ADMIN["ADMIN_USERNAME"], "password": BENCH_ADMIN["ADMIN_PASSWORD"]}
        token = client.post("/v1/auth/login", json=login).raise_for_status().json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, backend_process()


def upload_bytes(film: Path, dicom_side: int) -> bytes:
    if not dicom_side:
        return film.read_bytes()
    pixels = cv2.resize(decode_image(film.read_bytes()).pixels, (dicom_side, dicom_side), interpolation=cv2.INTER_CUBIC)
    return dicom_bytes(to_stored(np.clip(pixels, 0, 1), bits=12), bits_stored=12)


def click(client: httpx.Client, name: str, data: bytes) -> str:
    """One click as the UI makes it; returns the case id."""
    files = {"file": (name, data, "application/octet-stream")}
    inspected = client.post("/v1/dicom/inspect", files=files).raise_for_status().json()
    patient = {"patient": json.dumps({"name": "Bench Patient", "age": 5})}
    if inspected.get("upload_id"):  # the backend kept the upload: the bytes are not sent twice
        answer = client.post("/v1/studies", data={**patient, "upload_id": inspected["upload_id"]})
    else:
        answer = client.post("/v1/studies", files=files, data=patient)
    case_id = str(answer.raise_for_status().json()["case_id"])
    client.get(f"/v1/cases/{case_id}/image").raise_for_status()
    client.get(f"/v1/cases/{case_id}/heatmap", params={"format": "raw"}).raise_for_status()
    similar = client.get(f"/v1/cases/{case_id}/similar", params={"k": 5}).raise_for_status().json()
    for neighbour in similar["neighbours"]:
        client.get(neighbour["thumbnail_url"]).raise_for_status()
    return case_id


def fresh_backend_cost(var_dir: Path, paths: list[str]) -> list[float]:
    with backend(var_dir) as (client, process):
        return [measured(process, lambda path=path: client.get(path).raise_for_status()) for path in paths]


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.click", description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=8)
    parser.add_argument("--library-images", type=int, default=300)
    parser.add_argument("--dicom-side", type=int, default=0, help="send each film as an N x N 12-bit DICOM")
    args = parser.parse_args(argv)
    data = Path(get_settings().cxr_data_dir) / "kermany-pneumonia"
    paths = sorted((data / "test" / "PNEUMONIA").glob("*.jp*g"))[: args.films]
    films = [(path.name, upload_bytes(path, args.dicom_side)) for path in paths]
    with tempfile.TemporaryDirectory(prefix="bench-click-") as tmp:
        var_dir = Path(tmp)
        build = [sys.executable, "-m", "case_retrieval", "build", "--data", str(data), "--split", "train"]
        build += ["--limit", str(args.library_images)]
        subprocess.run(build, check=True, env={**os.environ, "VAR_DIR": str(var_dir)})
        with backend(var_dir) as (client, process):
            click(client, *films[0])  # warm-up: first Grad-CAM, first FAISS search
            clicks = [measured(process, lambda film=film: click(client, *film)) for film in films]
            case_ids = [click(client, *film) for film in films[:3]]
        # Each on a freshly started backend (empty caches), so neither profits from the other's forward pass.
        similar = fresh_backend_cost(var_dir, [f"/v1/cases/{c}/similar" for c in case_ids])
        reports = fresh_backend_cost(var_dir, [f"/v1/cases/{c}/report" for c in case_ids])
    print(f"one click ({len(films)} films, warm backend): backend CPU {summary(clicks)}")
    print(f"report on a fresh backend: backend CPU {summary(reports)}")
    print(f"similar cases on a fresh backend: backend CPU {summary(similar)}")


if __name__ == "__main__":
    main()
