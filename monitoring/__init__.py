"""monitoring: how the workstation is doing, and what it has done.

Public surface:
- `system_stats(disk_path) -> SystemStats` (CPU, memory, disk, process memory and uptime via psutil)
- Readiness (monitoring/health.py): `ComponentCheck(name, ok, detail, required)`, `check_database`,
  `check_schema`, `check_image_store`, `check_disk(path, min_free_gb)`, `is_ready(checks)`
- Metrics (monitoring/metrics.py): `record_request(method, route, status, seconds)`,
  `record_predictions([PredictionSample])`, `render_metrics(state) -> (body, content type)` with the gauges
  `state()` returns as `Gauge`s; `mark_process_dead()`; `UNMATCHED_ROUTE`; multiprocess mode through
  PROMETHEUS_MULTIPROC_DIR
"""

from monitoring.health import (
    ComponentCheck,
    check_database,
    check_disk,
    check_image_store,
    check_schema,
    is_ready,
)
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
    "ComponentCheck",
    "Gauge",
    "PredictionSample",
    "SystemStats",
    "check_database",
    "check_disk",
    "check_image_store",
    "check_schema",
    "is_ready",
    "mark_process_dead",
    "multiprocess_dir",
    "record_predictions",
    "record_request",
    "render_metrics",
    "system_stats",
]
