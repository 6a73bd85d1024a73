"""monitoring: how the workstation is doing, and what it has done.

Public surface:
- `system_stats(disk_path) -> SystemStats` (CPU, memory, disk, process memory and uptime via psutil)
- Audit trail (monitoring/audit.py): `AuditTrail(database, key)` / `.from_settings`: `record(AuditEntry)`,
  `verify() -> Verification` (first altered/inserted/deleted record), `events(AuditFilter)`, `matching`
  (oldest first), `export_csv`;
  `REQUEST_CONTEXT` / `RequestContext` (request id and client of the current request);
  `python -m monitoring.audit verify | export`
- History (monitoring/history.py): `HISTORY` (buffers this process's requests and predictions; `attach(database,
  flush_interval_s, retention_days)`, `flush()`, `prune()`, `detach()`), `summarize(database, window) -> Summary`
  with `Figures` in total and per time bucket
- Alerts (monitoring/alerts.py): `RULES` by name, `Observations`, `Thresholds`, `AlertStore` (states firing ->
  acknowledged -> resolved, dedup, cooldown, across processes), `AlertEngine`, `AlertScheduler`, `channel_check`;
  `ExpertLabels` / `LabelledPrediction` / `no_expert_labels` (the learning loop plugs its final labels in here)
- Alert channels (monitoring/alert_channels.py): `AlertChannel` with `WebhookChannel`, `SlackChannel`,
  `SmtpChannel` registered by name in `CHANNELS`; `channels_from_settings`, `deliver` (retry with backoff)
- Drift (monitoring/drift.py): `ImageStats`, `image_stats`, `stats_from_bytes`, `read_folder`, `sample_paths`,
  `compare_images(baseline, new, alpha, embeddings) -> DriftReport` (KS / chi-square per statistic, PSI, the
  embeddings' permutation MMD, one Bonferroni family), `mmd_test(embeddings_a, embeddings_b)`;
  `python -m monitoring.drift --baseline DIR --new DIR [--embeddings A.npy B.npy]`
- Logs (monitoring/logs.py): `configure_logging(level, log_dir, max_bytes, backups)` (JSON lines with the request
  id to stdout and a rotating file), `JsonFormatter`
- Readiness (monitoring/health.py): `ComponentCheck(name, ok, detail, required)`, `check_database`,
  `check_schema`, `check_image_store`, `check_disk(path, min_free_gb)`, `is_ready(checks)`
- Metrics (monitoring/metrics.py): `record_request(method, route, status, seconds)`,
  `record_predictions([PredictionSample])`, `render_metrics(state) -> (body, content type)` with the gauges
  `state()` returns as `Gauge`s; `mark_process_dead()`; `UNMATCHED_ROUTE`; multiprocess mode through
  PROMETHEUS_MULTIPROC_DIR
"""

from monitoring.alert_channels import (
    CHANNELS,
    AlertChannel,
    DeliveryError,
    DeliveryOutcome,
    Notification,
    SlackChannel,
    SmtpChannel,
    WebhookChannel,
    channels_from_settings,
    deliver,
)
from monitoring.alerts import (
    ACKNOWLEDGED,
    FIRING,
    RESOLVED,
    RULES,
    AlertEngine,
    AlertNotFoundError,
    AlertScheduler,
    AlertStore,
    ExpertLabels,
    LabelledPrediction,
    Observations,
    Thresholds,
    channel_check,
    no_expert_labels,
)
from monitoring.audit import (
    REQUEST_CONTEXT,
    AuditEntry,
    AuditFilter,
    AuditTrail,
    ChainProblem,
    RequestContext,
    Verification,
)
from monitoring.drift import (
    DriftReport,
    FeatureTest,
    ImageStats,
    compare_images,
    image_stats,
    mmd_test,
    read_folder,
    sample_paths,
    stats_from_bytes,
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
from monitoring.logs import JsonFormatter, configure_logging
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
    "ACKNOWLEDGED",
    "CHANNELS",
    "FIRING",
    "HISTORY",
    "REQUEST_CONTEXT",
    "RESOLVED",
    "RULES",
    "UNMATCHED_ROUTE",
    "WINDOWS",
    "AlertChannel",
    "AlertEngine",
    "AlertNotFoundError",
    "AlertScheduler",
    "AlertStore",
    "AuditEntry",
    "AuditFilter",
    "AuditTrail",
    "ChainProblem",
    "ComponentCheck",
    "DeliveryError",
    "DeliveryOutcome",
    "DriftReport",
    "ExpertLabels",
    "FeatureTest",
    "Figures",
    "Gauge",
    "ImageStats",
    "JsonFormatter",
    "LabelledPrediction",
    "Notification",
    "Observations",
    "PredictionSample",
    "RequestContext",
    "SlackChannel",
    "SmtpChannel",
    "Summary",
    "SystemStats",
    "Thresholds",
    "Verification",
    "WebhookChannel",
    "channel_check",
    "channels_from_settings",
    "check_database",
    "check_disk",
    "check_image_store",
    "check_schema",
    "compare_images",
    "configure_logging",
    "deliver",
    "image_stats",
    "is_ready",
    "mark_process_dead",
    "mmd_test",
    "multiprocess_dir",
    "no_expert_labels",
    "read_folder",
    "record_predictions",
    "record_request",
    "render_metrics",
    "sample_paths",
    "stats_from_bytes",
    "summarize",
    "system_stats",
]
