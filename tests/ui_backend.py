"""What the UI tests run against: the real backend (shipped checkpoint) and `streamlit run app.py` on a free port."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.live_server import ROOT, free_port

UI_ADMIN = "ui-test-admin"


def backend_env(var_dir: Path, model_path: Path) -> dict[str, str]:
    """Environment of a throw-away backend: its own var dir, one torch thread, a known first admin."""
    return {
        "VAR_DIR": str(var_dir),
        "MODEL_PATH": str(model_path),
        "TORCH_THREADS": "1",
        "ADMIN_USERNAME": UI_ADMIN,
        "ADMIN_PASSWORD": os.environ.get("UI_TEST_ADMIN_PASSWORD") or secrets.token_urlsafe(16),
        "DATABASE_URL": "",
    }


@contextmanager
def running_ui(backend_url: str, startup_timeout_s: float = 60) -> Iterator[str]:
    """`streamlit run app.py` headless on a free port, pointed at `backend_url`; yields the UI's URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        ],
        cwd=ROOT,
        env={**os.environ, "BACKEND_URL": backend_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_timeout_s
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Streamlit exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("Streamlit did not become healthy in time")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
