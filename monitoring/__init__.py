"""monitoring: how the workstation is doing, and what it has done.

Public surface:
- `system_stats(disk_path) -> SystemStats` (CPU, memory, disk, process memory and uptime via psutil)
- Metrics (monitoring/metrics.py): `record_request(method, route, status, seconds)`,
  `record_predictions([PredictionSample])`, `render_metrics(state) -> (body, content type)` with the gauges
  `state()` returns as `Gauge`s; `mark_process_dead()`; `UNMATCHED_ROUTE`; multiprocess mode through
  PROMETHEUS_MULTIPROC_DIR
"""

from monitoring.metrics import (
    UNMATCHED_ROUTE,
    Gauge,
    PredictionSample,
    mark_process_dead,
    multiprocess_dir,
    record_predictions,
    record_request,
    render_metrics,
)
from monitoring.system import SystemStats, system_stats

__all__ = [
    "UNMATCHED_ROUTE",
    "Gauge",
    "PredictionSample",
    "SystemStats",
    "mark_process_dead",
    "multiprocess_dir",
    "record_predictions",
    "record_request",
    "render_metrics",
    "system_stats",
]
