"""Monitoring: `GET /metrics` (Prometheus text; an API key or loopback, see api/permissions.py) and the audit trail
(`GET /v1/audit`, `GET /v1/audit/verify`, `GET /v1/audit/export`), the summary of recent activity
(`GET /v1/monitoring/summary`) and input drift (`GET /v1/monitoring/drift`)."""

from __future__ import annotations

import io
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.audit_export import audit_pdf
from api.drift import DriftDep
from api.schemas import (
    AuditEventOut,
    AuditPageOut,
    AuditVerifyOut,
    DriftOut,
    EmbeddingDriftOut,
    FeatureTestOut,
    FiguresOut,
    MonitoringSummaryOut,
    SeriesPointOut,
)
from api.services import Services, ServicesDep
from inference import ModelCheckpoint
from monitoring import HISTORY, AuditFilter, Figures, Gauge, render_metrics, summarize, system_stats

router = APIRouter(tags=["monitoring"])


def workstation_gauges(services: Services) -> list[Gauge]:
    """The present state, read on each scrape: served models, review queue, machine and this process."""
    served = services.served_models()
    gauges = [
        Gauge("cxr_model_info", "The model each task serves (value 1)", 1.0, _model_labels(task, model.checkpoint))
        for task, model in served.items()
    ]
    for task in sorted({*served, *services.model_errors}):
        loaded = 1.0 if task in served else 0.0
        gauges.append(
            Gauge("cxr_model_loaded", "1 when the task's model is loaded, 0 when it failed", loaded, {"task": task})
        )
    for state in ("open", "adjudication"):
        waiting = float(services.learning.list_queue(state=state, limit=1).total)
        help_text = "Cases waiting in the experts' queue, by state (open: reads missing; adjudication: a senior's)"
        gauges.append(Gauge("cxr_review_queue_length", help_text, waiting, {"state": state}))
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


def _model_labels(task: str, checkpoint: ModelCheckpoint) -> dict[str, str]:
    return {"task": task, "version": checkpoint.version, "architecture": checkpoint.architecture}


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    body, content_type = render_metrics(lambda: workstation_gauges(services))
    return Response(body, media_type=content_type)


# --- audit trail ----------------------------------------------------------------------------------------------------


def audit_filter(
    user: str | None = Query(None, max_length=128, description="User id or username"),
    action: str | None = Query(None, max_length=64, examples=["case.view"]),
    patient_id: str | None = Query(None, max_length=64),
    date_from: date | None = Query(None, description="First day included (UTC)"),
    date_to: date | None = Query(None, description="Last day included (UTC)", le=date(9999, 12, 30)),
) -> AuditFilter:
    return AuditFilter(actor=user, action=action, patient_id=patient_id, date_from=date_from, date_to=date_to)


AuditFilterDep = Annotated[AuditFilter, Depends(audit_filter)]


@router.get("/v1/audit", response_model=AuditPageOut, summary="Audit events, newest first, with filters")
def audit_events(
    services: ServicesDep,
    where: AuditFilterDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=1_000_000_000),
) -> AuditPageOut:
    rows = services.audit.events(where, limit=limit, offset=offset)
    return AuditPageOut(items=[AuditEventOut.model_validate(row) for row in rows], limit=limit, offset=offset)


@router.get("/v1/audit/verify", response_model=AuditVerifyOut, summary="Check the audit trail's hash chain")
def verify_audit(services: ServicesDep) -> AuditVerifyOut:
    result = services.audit.verify()
    problem = result.problem
    return AuditVerifyOut(
        intact=result.intact,
        records=result.records,
        head_hash=result.head_hash,
        problem=problem.message if problem else None,
        problem_kind=problem.kind if problem else None,
        problem_record=problem.record_id if problem else None,
    )


@router.get(
    "/v1/audit/export",
    summary="The filtered audit events, oldest first: CSV with their hashes, or a PDF with the chain's verification",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/pdf": {}}}},
)
async def export_audit(
    services: ServicesDep,
    where: AuditFilterDep,
    format: Literal["csv", "pdf"] = Query("csv", description="csv: re-verifiable copy; pdf: printable, page-numbered"),
) -> Response:
    if format == "pdf":
        pdf = await run_in_threadpool(audit_pdf, services.audit, where, services.settings)
        headers = {"Content-Disposition": 'attachment; filename="audit.pdf"', "Cache-Control": "no-store"}
        return Response(pdf, media_type="application/pdf", headers=headers)
    buffer = io.StringIO()
    await run_in_threadpool(services.audit.export_csv, where, buffer)
    headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


# --- summary --------------------------------------------------------------------------------------------------------


def figures_out(figures: Figures) -> FiguresOut:
    return FiguresOut.model_validate(figures, from_attributes=True)


@router.get(
    "/v1/monitoring/summary",
    response_model=MonitoringSummaryOut,
    summary="Latency percentiles, throughput, error rate and prediction mix over the last 1 h, 24 h or 7 d",
)
def monitoring_summary(services: ServicesDep, window: Literal["1h", "24h", "7d"] = "24h") -> MonitoringSummaryOut:
    HISTORY.flush()  # this process's latest events; other processes' arrive within MONITORING_FLUSH_INTERVAL_S
    summary = summarize(services.storage.database, window)
    return MonitoringSummaryOut(
        window=window,
        start=summary.start,
        end=summary.end,
        throughput_per_min=summary.throughput_per_min,
        totals=figures_out(summary.totals),
        series=[SeriesPointOut(start=start, figures=figures_out(figures)) for start, figures in summary.series],
    )


# --- drift ----------------------------------------------------------------------------------------------------------


@router.get("/v1/monitoring/drift", response_model=DriftOut, summary="Recent cases' films against the baseline films")
def monitoring_drift(drift: DriftDep, window: int = Query(200, ge=10, le=1000)) -> DriftOut:
    result = drift.check(window)
    report = result.report
    tests = [] if report is None else report.tests
    drifted = [] if report is None else report.drifted
    return DriftOut(
        at=result.at,
        detected=None if report is None else report.detected,
        reason=result.reason,
        alpha=None if report is None else report.alpha,
        threshold=None if report is None else report.threshold,
        baseline_size=0 if report is None else report.baseline_size,
        new_size=0 if report is None else report.new_size,
        tests=[FeatureTestOut(**vars(test), drifted=test in drifted) for test in tests],
        embedding=None if result.embedding is None else EmbeddingDriftOut.model_validate(result.embedding),
    )
