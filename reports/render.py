"""One entry point for all report kinds, and the download file name."""

from __future__ import annotations

import re
from collections.abc import Callable

from reports.clinical import render_clinical_report
from reports.errors import UnknownReportKindError
from reports.patient import render_patient_report
from reports.radiologist import render_radiologist_report
from reports.records import REPORT_KINDS, ReportCase, ReportContext, ReportKind

RENDERERS: dict[ReportKind, Callable[[ReportCase, ReportContext], bytes]] = {
    "radiologist": render_radiologist_report,
    "clinical": render_clinical_report,
    "patient": render_patient_report,
}
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _checked_kind(kind: str) -> ReportKind:
    if kind not in RENDERERS:
        raise UnknownReportKindError(f"Unknown report kind {kind!r}; expected one of: {', '.join(REPORT_KINDS)}.")
    return kind  # type: ignore[return-value]


def render_report(kind: ReportKind, case: ReportCase, context: ReportContext | None = None) -> bytes:
    """The PDF bytes of one report kind for one case.

    Raises UnknownReportKindError for a kind outside REPORT_KINDS and ReportInputError for an unreadable image.
    """
    return RENDERERS[_checked_kind(kind)](case, context or ReportContext())


def report_filename(kind: ReportKind, case: ReportCase) -> str:
    """`cxr-radiologist-report_<case id>_<YYYYMMDD>.pdf`: ASCII only, and no patient data (file names leak)."""
    safe_case_id = _UNSAFE_FILENAME_CHARS.sub("-", case.case_id).strip("-.") or "case"
    return f"cxr-{_checked_kind(kind)}-report_{safe_case_id[:64]}_{case.created_at:%Y%m%d}.pdf"
