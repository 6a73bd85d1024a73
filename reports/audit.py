"""The audit trail as a PDF, for an inspector or a data-protection officer: a pure function of plain records.

The first page says what the export covers (period, filters, number of records), whether the hash chain verified
intact when it was made (or the first altered, inserted or deleted record) and the chain's head hash, so a printed
copy can be compared with a later `verify`. Then one table row per record, oldest first: when, who, action and
outcome, case or target, model version, client address. Rendered here with the case reports' fonts, so names in any
script print; the records come from the API (reports imports no other room).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph

from reports.formatting import format_datetime
from reports.layout import NEGATIVE, PANEL, POSITIVE, SIGNED_PANEL, PageDecor, ReportWriter, lay_out, load_logo
from reports.records import ReportContext

TITLE = "Audit trail export"
BASE_SIZE = 9.0
FOOTER = "Audit trail export of the CXR Workstation. Each record is hash-chained to the one before it."
# (header, width in mm) of the table; the widths add up to A4's frame (176 mm) and fit letter's (182 mm)
COLUMNS: tuple[tuple[str, float], ...] = (
    ("#", 8),
    ("When (UTC)", 21),
    ("Who", 22),
    ("Action", 31),  # "annotation.adjudicate" on one line
    ("Outcome", 16),
    ("Case / target", 38),  # a case id on two lines
    ("Model", 19),
    ("Client", 21),  # an IPv4 address on one line
)


@dataclass(frozen=True)
class AuditRecord:
    record_id: int
    at: datetime
    action: str
    outcome: str
    actor: str | None = None  # the user's name
    role: str | None = None
    target: str | None = None  # the case id, or another target (a user, a model version, an alert)
    model_version: str | None = None
    client: str | None = None


@dataclass(frozen=True)
class AuditExport:
    records: Sequence[AuditRecord]  # oldest first
    chain_intact: bool
    chain_records: int  # records in the whole trail when it was verified
    head_hash: str
    verification: str  # in words: "intact", or the first problem
    created_at: datetime
    period: str = "all records"
    filters: str = "none"


def render_audit_report(export: AuditExport, context: ReportContext | None = None) -> bytes:
    """The PDF of an audit export (A4 or letter portrait, numbered pages)."""
    writer = ReportWriter(context or ReportContext(), BASE_SIZE)
    story: list[Flowable] = [writer.para(TITLE, writer.styles.title), *_summary(writer, export)]
    # not a section heading: those keep with the next flowable, which would push the whole table off page one
    heading = writer.rich(f"<b>Records ({len(export.records)}, oldest first)</b>", writer.styles.body)
    story += [writer.spacer(), heading, _table(writer, export.records)]
    decor = PageDecor(
        writer=writer,
        title=TITLE,
        report_id=f"head {export.head_hash[:16]}",
        created=format_datetime(export.created_at),
        signed_note=None,
        logo=load_logo(writer.context.logo_path),
        footer_size=7.5,
        footer_text=FOOTER,
    )
    return lay_out(decor, f"Audit trail, {export.period}", story)


def _summary(writer: ReportWriter, export: AuditExport) -> list[Flowable]:
    fields = writer.fields_table(
        [
            ("Period", export.period),
            ("Filters", export.filters),
            ("Records exported", str(len(export.records))),
            ("Created", format_datetime(export.created_at)),
        ]
    )
    verdict = (
        f"Chain verified intact: {export.chain_records} records."
        if export.chain_intact
        else f"Chain verification FAILED: {export.verification}."
    )
    head = writer.rich(f"Head hash: {writer.m(export.head_hash)}", writer.wrap_anywhere(writer.styles.small))
    color, background = (NEGATIVE, SIGNED_PANEL) if export.chain_intact else (POSITIVE, PANEL)
    panel = writer.callout([writer.para(verdict, writer.styles.finding), head], color, background)
    return [*([fields] if fields is not None else []), writer.spacer(0.6), panel]


def _table(writer: ReportWriter, records: Sequence[AuditRecord]) -> Flowable:
    if not records:
        return writer.para("No audit records match this export.", writer.styles.muted)
    header = [writer.rich(f"<b>{name}</b>", writer.styles.label) for name, _ in COLUMNS]
    rows: list[list[Any]] = [header] + [_row(writer, record) for record in records]
    return writer.grid_table(rows, [width * mm for _, width in COLUMNS])


def _row(writer: ReportWriter, record: AuditRecord) -> list[Paragraph]:
    who = " ".join(part for part in (record.actor or "-", f"({record.role})" if record.role else "") if part)
    cells = (
        str(record.record_id),
        record.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        who,
        record.action,
        record.outcome,
        record.target or "-",
        record.model_version or "-",
        record.client or "-",
    )
    # ids, hashes and addresses have no spaces: let them break anywhere rather than run into the next column
    style = writer.wrap_anywhere(writer.styles.caption)
    return [writer.rich(writer.m(cell), style) for cell in cells]
