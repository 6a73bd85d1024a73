"""Start the real API (uvicorn in a subprocess) on a free port: used by the HTTP tests and the benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(process: subprocess.Popen, base: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited ({process.returncode}): {log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    output = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"API did not become healthy in {timeout_s:.0f}s: {output}")


@contextmanager
def running_api(env: dict[str, str], startup_timeout_s: float = 300) -> Iterator[str]:
    """Yield the base URL of `uvicorn api.main:app` started with `env` on top of this process's environment.

    The server's output goes to a log file (a pipe nobody reads would fill up and stall the server).
    """
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="cxr-api-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, base, log_path, startup_timeout_s)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log_path.unlink(missing_ok=True)
