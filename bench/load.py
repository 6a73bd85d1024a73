"""Served throughput and latency under concurrency, against the bare model's own ceiling, measured in one run.

    python bench/load.py [--runtime openvino] [--precision fp32] [--clients 1 8 32] [--duration 20]

Starts the real backend (uvicorn, tests/live_server.py) with the chosen runtime, then:
1. start to ready: seconds from launching uvicorn to the first 200 from GET /ready (ONNX graphs exported first into
   the runtime cache, so this is a normal restart; the one-off export time is printed separately);
2. the ceiling: the bare runtime on preprocessed films in this process while the server idles, at batch 1
   (p50 forward) and at MAX_BATCH_SIZE (images per second), with the server's thread count;
3. locust (headless, FastHttpUser, no think time) at each client count, against `POST /predict` and
   `POST /v1/studies`: throughput, p50/p95/p99 latency, failures; the backend's peak RSS (psutil) meanwhile;
4. `POST /predict/batch` of 64 films: images per second.
Every request sends a different Kermany film (test and train splits), so the result cache never answers.
Results: printed as a Markdown table, written to bench/results/load-<runtime>-<precision>.json and .png.

The load generator shares the machine with the server (2 cores here): its own CPU is part of the figures. Rerun
on a quiet machine for clean numbers; the script prints the load average it started under.
"""

# ruff: noqa: E402 (gevent must patch the standard library before anything imports ssl or socket)
from __future__ import annotations

import sys
from pathlib import Path

# The project root instead of bench/ on the path: bench/click.py would shadow the `click` package flask imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from gevent import monkey

monkey.patch_all()

import argparse
import base64
import itertools
import json
import os
import platform
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import gevent
import httpx
import numpy as np
import psutil
from locust import FastHttpUser, constant, task
from locust.env import Environment

from imaging import decode_image, preprocess
from inference import RUNTIMES, load_checkpoint
from inference.runtimes import RuntimeRequest, create_runtime
from mlops.export_runtime import CALIBRATION_IMAGES, export
from settings import get_settings
from tests.live_server import running_api

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCH_ENDPOINT_IMAGES = 64
BOUNDARY = "cxr-load-boundary"


@dataclass
class Scenario:
    endpoint: str
    clients: int
    requests: int
    failures: int
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    peak_rss_mb: float
    server_cpu_ms_per_request: float  # CPU seconds the backend spent, all threads: robust to a busy machine
    client_cpu_ms_per_request: float  # the load generator's own CPU (it shares the machine)


class Films:
    """A thread-safe (greenlet-safe) supply of distinct film bytes; never hands out the same film twice."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = iter(paths)
        self._lock = threading.Lock()
        self.handed_out = 0

    def next(self) -> bytes:
        with self._lock:
            path = next(self._paths, None)
            self.handed_out += 1
        if path is None:
            raise RuntimeError("out of distinct films: lower --duration")
        return path.read_bytes()


def multipart(fields: dict[str, tuple[str, bytes, str]]) -> bytes:
    """A multipart/form-data body (FastHttpUser sends bytes; building it here keeps the client's CPU small)."""
    parts = []
    for name, (filename, payload, content_type) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
        parts.append(head.encode() + payload + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def user_class(endpoint: str, films: Films, token: str) -> type[FastHttpUser]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    class Radiologist(FastHttpUser):
        wait_time = constant(0)

        @task
        def send(self) -> None:
            fields = {"file": ("film.jpg", films.next(), "image/jpeg")}
            if endpoint == "/v1/studies":
                patient = json.dumps({"patient_id": f"LOAD-{uuid.uuid4().hex[:8]}", "age": 5})
                fields["patient"] = ("", patient.encode(), "application/json")
            self.client.post(endpoint, data=multipart(fields), headers=headers, name=endpoint)

    return Radiologist


def run_scenario(
    base: str, endpoint: str, clients: int, seconds: float, films: Films, token: str, pid: int
) -> Scenario:
    env = Environment(user_classes=[user_class(endpoint, films, token)], host=base)
    runner = env.create_local_runner()
    peak = [0.0]

    def sample_memory() -> None:
        process = psutil.Process(pid)
        while runner.state not in ("stopped", "stopping"):
            peak[0] = max(peak[0], process.memory_info().rss / 2**20)
            gevent.sleep(0.25)

    server = psutil.Process(pid)
    server_cpu, client_cpu, started = sum(server.cpu_times()[:2]), time.process_time(), time.perf_counter()
    runner.start(clients, spawn_rate=clients)
    gevent.spawn(sample_memory)
    gevent.spawn_later(seconds, runner.quit)
    runner.greenlet.join()
    elapsed = time.perf_counter() - started
    server_cpu, client_cpu = sum(server.cpu_times()[:2]) - server_cpu, time.process_time() - client_cpu
    total = env.stats.total
    per_request = 1000 / max(1, total.num_requests)
    return Scenario(
        endpoint=endpoint,
        clients=clients,
        requests=total.num_requests,
        failures=total.num_failures,
        throughput_rps=round(total.num_requests / elapsed, 2),
        p50_ms=total.get_response_time_percentile(0.5),
        p95_ms=total.get_response_time_percentile(0.95),
        p99_ms=total.get_response_time_percentile(0.99),
        peak_rss_mb=round(peak[0], 1),
        server_cpu_ms_per_request=round(server_cpu * per_request, 1),
        client_cpu_ms_per_request=round(client_cpu * per_request, 1),
    )


def ceiling(args: argparse.Namespace, cache_dir: Path, films: list[Path], threads: int, batch: int) -> dict[str, float]:
    """Bare runtime: p50 forward at batch 1, and images per second at `batch`, on preprocessed films."""
    checkpoint = load_checkpoint(args.checkpoint)
    request = RuntimeRequest(checkpoint, checkpoint.build_model(), args.precision, cache_dir, threads)
    runtime = create_runtime(args.runtime, request)
    inputs = np.stack([preprocess(decode_image(f.read_bytes()).pixels, checkpoint.preprocess) for f in films])
    for _ in range(3):
        runtime.run(inputs[:1])
        runtime.run(inputs[:batch])
    single = []
    for row in inputs[: args.single_passes]:
        started = time.perf_counter()
        runtime.run(row[None])
        single.append((time.perf_counter() - started) * 1000)
    started, cpu, done = time.perf_counter(), time.process_time(), 0
    for _ in range(args.batch_passes):
        runtime.run(inputs[:batch])
        done += batch
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "forward_b1_p50_ms": round(float(np.percentile(single, 50)), 2),
        "forward_b1_p95_ms": round(float(np.percentile(single, 95)), 2),
        "batched_img_per_s": round(done / elapsed, 2),
        "batched_cpu_ms_per_img": round(1000 * cpu / done, 1),
        "batch_size": batch,
    }


def batch_endpoint(base: str, token: str, films: Films, rounds: int) -> float:
    """Images per second of POST /predict/batch with 64 distinct films each round."""
    elapsed, images = 0.0, 0
    with httpx.Client(base_url=base, timeout=600, headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(rounds):
            body = {"images": [base64.b64encode(films.next()).decode() for _ in range(BATCH_ENDPOINT_IMAGES)]}
            started = time.perf_counter()
            answer = client.post("/predict/batch", json=body).raise_for_status().json()
            elapsed += time.perf_counter() - started
            images += answer["batch_size"]
    return round(images / elapsed, 2)


def wait_idle(pid: int, timeout_s: float = 60) -> None:
    """Until the backend's start-up work (Grad-CAM warm-up, library loading) is over: under 5 % of a core for 1 s."""
    process, deadline = psutil.Process(pid), time.time() + timeout_s
    while process.cpu_percent(interval=1.0) > 5 and time.time() < deadline:
        pass


def warm_up(base: str, token: str, films: Films, endpoints: list[str]) -> dict[str, float]:
    """One untimed request per endpoint (first-request costs: connection pools, lazy imports); their latency."""
    latencies = {}
    with httpx.Client(base_url=base, timeout=600, headers={"Authorization": f"Bearer {token}"}) as client:
        for endpoint in endpoints:
            data = {"patient": json.dumps({"patient_id": "LOAD-WARM", "age": 5})} if endpoint == "/v1/studies" else {}
            started = time.perf_counter()
            client.post(
                endpoint, files={"file": ("film.jpg", films.next(), "image/jpeg")}, data=data
            ).raise_for_status()
            latencies[endpoint] = round((time.perf_counter() - started) * 1000, 1)
    return latencies


def server_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    for connection in psutil.net_connections(kind="tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
            return int(connection.pid)
    raise RuntimeError(f"no process listens on port {port}")


def wait_ready(base: str, timeout_s: float = 120) -> None:
    deadline, answer = time.time() + timeout_s, ""
    while time.time() < deadline:
        try:
            response = httpx.get(f"{base}/ready", timeout=2)
            if response.status_code == 200:
                return
            answer = response.text
        except httpx.HTTPError as exc:
            answer = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"the backend never became ready: {answer[:2000]}")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; load avg {load}"


def film_paths(data_dir: Path) -> list[Path]:
    """Test films first, then train films: every request of the run gets a film no other request sent."""
    kermany = data_dir / "kermany-pneumonia"
    return sorted((kermany / "test").rglob("*.jpg")) + sorted((kermany / "train").rglob("*.jpg"))


def markdown(results: dict) -> str:
    bare = results["ceiling"]
    ceiling_rps = bare["batched_img_per_s"]
    lines = [
        f"runtime {results['runtime']}-{results['precision']} on {results['machine']}",
        f"bare forward b1 p50 {bare['forward_b1_p50_ms']} ms; bare batched ({bare['batch_size']}) {ceiling_rps} img/s,"
        f" {bare['batched_cpu_ms_per_img']} CPU ms/img; start to ready {results['start_to_ready_s']} s;"
        f" /predict/batch of 64: {results['batch_endpoint_img_per_s']} img/s",
        "",
        "| endpoint | clients | req/s | % of bare batched | p50 ms | p95 ms | p99 ms | errors | peak RSS MB "
        "| server CPU ms/req (bare: share) | client CPU ms/req |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in results["scenarios"]:
        share = 100 * s["throughput_rps"] / ceiling_rps
        cpu_share = 100 * bare["batched_cpu_ms_per_img"] / max(1e-9, s["server_cpu_ms_per_request"])
        lines.append(
            f"| {s['endpoint']} | {s['clients']} | {s['throughput_rps']} | {share:.0f} % | {s['p50_ms']:.0f} | "
            f"{s['p95_ms']:.0f} | {s['p99_ms']:.0f} | {s['failures']}/{s['requests']} | {s['peak_rss_mb']:.0f} | "
            f"{s['server_cpu_ms_per_request']} ({cpu_share:.0f} %)"
            f" | {s['client_cpu_ms_per_request']} |"
        )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib  # only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for endpoint in dict.fromkeys(s["endpoint"] for s in results["scenarios"]):
        rows = [s for s in results["scenarios"] if s["endpoint"] == endpoint]
        clients = [s["clients"] for s in rows]
        left.plot(clients, [s["throughput_rps"] for s in rows], marker="o", label=endpoint)
        right.plot(clients, [s["p50_ms"] for s in rows], marker="o", label=f"{endpoint} p50")
        right.plot(clients, [s["p99_ms"] for s in rows], marker="x", linestyle="--", label=f"{endpoint} p99")
    left.axhline(results["ceiling"]["batched_img_per_s"], color="grey", linestyle=":", label="bare model, batched")
    left.set(xscale="log", xlabel="concurrent clients", ylabel="requests / s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms", title="Latency")
    for axis in (left, right):
        axis.set_xticks(results["clients"], [str(c) for c in results["clients"]])
        axis.legend(fontsize=8)
    figure.suptitle(f"{results['runtime']}-{results['precision']}: {results['machine']}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=list(RUNTIMES), default=settings.inference_runtime)
    parser.add_argument("--precision", choices=["fp32", "int8"], default=settings.inference_precision)
    parser.add_argument("--checkpoint", type=Path, default=settings.model_path)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--endpoints", nargs="+", default=["/predict", "/v1/studies"])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--threads", type=int, default=settings.torch_threads)
    parser.add_argument("--max-batch-size", type=int, default=settings.max_batch_size)
    parser.add_argument("--batch-wait-ms", type=float, default=settings.batch_wait_ms)
    parser.add_argument("--batching", choices=["true", "false"], default="true")
    parser.add_argument("--single-passes", type=int, default=30)
    parser.add_argument("--batch-passes", type=int, default=5)
    parser.add_argument("--batch-rounds", type=int, default=3, help="POST /predict/batch calls of 64 films")
    args = parser.parse_args()

    paths = film_paths(settings.cxr_data_dir)
    cache_dir = settings.resolved_runtime_cache_dir
    started = time.perf_counter()
    if args.runtime != "torch":
        checkpoint = load_checkpoint(args.checkpoint)
        export(checkpoint, cache_dir, settings.cxr_data_dir / "kermany-pneumonia",
               CALIBRATION_IMAGES if args.precision == "int8" else 0)  # fmt: skip
    export_s = round(time.perf_counter() - started, 1)
    results: dict = {"runtime": args.runtime, "precision": args.precision, "machine": machine(), "export_s": export_s}
    results |= {"clients": args.clients, "max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms}
    results["batching"] = args.batching
    admin = ("load-admin", "Load-Only-" + secrets.token_urlsafe(12))
    with tempfile.TemporaryDirectory() as var_dir:
        env = {
            "MODEL_PATH": str(args.checkpoint.resolve()),
            "VAR_DIR": var_dir,
            "RUNTIME_CACHE_DIR": str(cache_dir),
            "INFERENCE_RUNTIME": args.runtime,
            "INFERENCE_PRECISION": args.precision,
            "TORCH_THREADS": str(args.threads),
            "ENABLE_BATCHING": args.batching,
            "MAX_BATCH_SIZE": str(args.max_batch_size),
            "BATCH_WAIT_MS": str(args.batch_wait_ms),
            "ADMIN_USERNAME": admin[0],
            "ADMIN_PASSWORD": admin[1],
            "RATE_LIMIT": "100000000/minute",
            "REQUEST_TIMEOUT_S": "600",
        }
        launched = time.perf_counter()
        with running_api(env) as base:
            wait_ready(base)
            results["start_to_ready_s"] = round(time.perf_counter() - launched, 2)
            login = {"username": admin[0], "password": admin[1]}
            token = httpx.post(f"{base}/v1/auth/login", json=login, timeout=60).raise_for_status().json()
            token = token["access_token"]
            pid = server_pid(base)
            results["idle_rss_mb"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
            wait_idle(pid)
            before = ceiling(args, cache_dir, paths[-64:], args.threads, args.max_batch_size)
            films = Films(paths[:-64])
            results["first_requests_ms"] = warm_up(base, token, films, args.endpoints)
            results["scenarios"] = [
                asdict(run_scenario(base, endpoint, clients, args.duration, films, token, pid))
                for endpoint, clients in itertools.product(args.endpoints, args.clients)
            ]
            results["batch_endpoint_img_per_s"] = batch_endpoint(base, token, films, args.batch_rounds)
            results["distinct_films_sent"] = films.handed_out
            wait_idle(pid)
            after = ceiling(args, cache_dir, paths[-64:], args.threads, args.max_batch_size)
    # the machine is shared: the bare model is measured before and after the load, and the faster figures count
    results["ceiling"] = {key: min(before[key], after[key]) if "ms" in key else max(before[key], after[key])
                          for key in before}  # fmt: skip
    results["ceiling_runs"] = [before, after]
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"load-{args.runtime}-{args.precision}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, stem.with_suffix(".png"))
    print(markdown(results))
    print(f"written: {stem}.json, {stem}.png")


if __name__ == "__main__":
    main()
