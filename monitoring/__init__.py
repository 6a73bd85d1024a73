"""monitoring: how the workstation is doing, and what it has done.

Public surface:
- `system_stats(disk_path) -> SystemStats` (CPU, memory, disk, process memory and uptime via psutil)
- Audit trail (monitoring/audit.py): `AuditTrail(database, key)` / `.from_settings`: `record(AuditEntry)`,
  `verify() -> Verification` (first altered/inserted/deleted record), `events(AuditFilter)`, `export_csv`;
  `REQUEST_CONTEXT` / `RequestContext` (request id and client of the current request);
  `python -m monitoring.audit verify | export`
- History (monitoring/history.py): `HISTORY` (buffers this process's requests and predictions; `attach(database,
  flush_interval_s, retention_days)`, `flush()`, `prune()`, `detach()`), `summarize(database, window) -> Summary`
  with `Figures` in total and per time bucket
- Readiness (monitoring/health.py): `ComponentCheck(name, ok, detail, required)`, `check_database`,
  `check_schema`, `check_image_store`, `check_disk(path, min_free_gb)`, `is_ready(checks)`
- Metrics (monitoring/metrics.py): `record_request(method, route, status, seconds)`,
  `record_predictions([PredictionSample])`, `render_metrics(state) -> (body, content type)` with the gauges
  `state()` returns as `Gauge`s; `mark_process_dead()`; `UNMATCHED_ROUTE`; multiprocess mode through
  PROMETHEUS_MULTIPROC_DIR
"""

from monitoring.audit import (
    REQUEST_CONTEXT,
    AuditEntry,
    AuditFilter,
    AuditTrail,
    ChainProblem,
    RequestContext,
    Verification,
)
from monitoring.health import (
    ComponentCheck,
    check_database,
    check_disk,
    check_image_store,
    check_schema,
    is_ready,
)
from monitoring.history import HISTORY, WINDOWS, Figures, Summary, summarize
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
    "HISTORY",
    "REQUEST_CONTEXT",
    "UNMATCHED_ROUTE",
    "WINDOWS",
    "AuditEntry",
    "AuditFilter",
    "AuditTrail",
    "ChainProblem",
    "ComponentCheck",
    "Figures",
    "Gauge",
    "PredictionSample",
    "RequestContext",
    "Summary",
    "SystemStats",
    "Verification",
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
    "summarize",
    "system_stats",
]
