"""Monitoring: `GET /metrics` (Prometheus text; an API key or loopback, see api/permissions.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.services import Services, ServicesDep
from monitoring import Gauge, render_metrics, system_stats
from storage import CaseStatus

router = APIRouter(tags=["monitoring"])


def workstation_gauges(services: Services) -> list[Gauge]:
    """The present state, read on each scrape: served models, review queue, machine and this process."""
    gauges = [
        Gauge("cxr_model_info", "The model each task serves (value 1)", 1.0, _model_labels(services, task))
        for task in services.predictors
    ]
    for task in sorted({*services.predictors, *services.model_errors}):
        loaded = 1.0 if task in services.predictors else 0.0
        gauges.append(
            Gauge("cxr_model_loaded", "1 when the task's model is loaded, 0 when it failed", loaded, {"task": task})
        )
    queued = services.storage.cases.list_cases(limit=1, status=CaseStatus.QUEUED_FOR_REVIEW).total
    gauges.append(Gauge("cxr_review_queue_length", "Cases waiting for expert review", float(queued)))
    stats = system_stats(services.settings.var_dir)
    gauges += [
        Gauge("cxr_system_cpu_percent", "CPU use of the machine (percent)", stats.cpu_percent),
        Gauge("cxr_system_memory_percent", "Memory use of the machine (percent)", stats.memory_percent),
        Gauge("cxr_system_disk_percent", "Use of the disk holding VAR_DIR (percent)", stats.disk_percent),
        Gauge("cxr_system_disk_free_bytes", "Free space on the disk holding VAR_DIR", stats.disk_free_gb * 1024**3),
        Gauge(
            "cxr_process_resident_memory_bytes",
            "Memory of the API process that answered",
            stats.process_rss_mb * 1024**2,
        ),
        Gauge("cxr_process_uptime_seconds", "Uptime of the API process that answered", stats.process_uptime_s),
    ]
    return gauges


def _model_labels(services: Services, task: str) -> dict[str, str]:
    checkpoint = services.predictors[task].checkpoint
    return {"task": task, "version": checkpoint.version, "architecture": checkpoint.architecture}


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    body, content_type = render_metrics(lambda: workstation_gauges(services))
    return Response(body, media_type=content_type)
