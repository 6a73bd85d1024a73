"""CPU, memory and disk of this machine and this process (psutil), for the admin's Health page."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

_PROCESS = psutil.Process(os.getpid())
_PROCESS.cpu_percent(None)  # the first call only starts the measurement window


@dataclass(frozen=True)
class SystemStats:
    cpu_percent: float
    cpu_count: int
    load_average_1m: float
    memory_percent: float
    memory_used_mb: float
    memory_total_mb: float
    disk_percent: float
    disk_free_gb: float
    process_rss_mb: float
    process_cpu_percent: float
    process_uptime_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def system_stats(disk_path: Path) -> SystemStats:
    """A snapshot; `disk_path` is the folder whose disk matters (where images and the database live)."""
    memory = psutil.virtual_memory()
    path = Path(disk_path)
    disk = psutil.disk_usage(str(path if path.exists() else path.anchor or "/"))
    mb = 1024 * 1024
    return SystemStats(
        cpu_percent=psutil.cpu_percent(interval=0.1),
        cpu_count=psutil.cpu_count() or 1,
        load_average_1m=round(os.getloadavg()[0], 2),
        memory_percent=memory.percent,
        memory_used_mb=round(memory.used / mb, 1),
        memory_total_mb=round(memory.total / mb, 1),
        disk_percent=disk.percent,
        disk_free_gb=round(disk.free / 1024**3, 2),
        process_rss_mb=round(_PROCESS.memory_info().rss / mb, 1),
        process_cpu_percent=_PROCESS.cpu_percent(None),
        process_uptime_s=round(time.time() - _PROCESS.create_time(), 1),
    )
