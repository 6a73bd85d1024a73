"""The audit trail's PDF export: the matching records and the chain's verification, handed to reports' renderer as
plain records (reports imports no other room; monitoring owns the trail, not the page layout)."""

from __future__ import annotations

from datetime import UTC, datetime

from api.analysis import report_context
from monitoring import AuditFilter, AuditTrail
from reports import AuditExport, AuditRecord, render_audit_report
from settings import Settings


def describe_filter(where: AuditFilter) -> tuple[str, str]:
    """(period, other filters) in words for the PDF's first page."""
    start, end = where.date_from, where.date_to
    if start and end:
        period = f"{start.isoformat()} to {end.isoformat()} (UTC, inclusive)"
    elif start or end:
        period = f"from {start.isoformat()}" if start else f"up to {end.isoformat() if end else ''}"
    else:
        period = "all records"
    named = [("user", where.actor), ("action", where.action), ("patient ID", where.patient_id)]
    return period, ", ".join(f"{name} {value}" for name, value in named if value) or "none"


def audit_pdf(audit: AuditTrail, where: AuditFilter, settings: Settings) -> bytes:
    """The matching records, oldest first, as a PDF with the whole chain's verification on the first page."""
    verification = audit.verify()
    records = [
        AuditRecord(record_id=row.id, at=row.at, action=row.action, outcome=row.outcome, actor=row.actor_name,
                    role=row.actor_role, target=row.target_id, model_version=row.model_version, client=row.client)
        for row in audit.matching(where)
    ]  # fmt: skip
    period, filters = describe_filter(where)
    export = AuditExport(
        records=records,
        chain_intact=verification.intact,
        chain_records=verification.records,
        head_hash=verification.head_hash,
        verification=verification.problem.message if verification.problem else "intact",
        created_at=datetime.now(UTC),
        period=period,
        filters=filters,
    )
    return render_audit_report(export, report_context(settings))
