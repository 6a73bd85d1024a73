"""Write the three reports of the synthetic sample case, to review the layout.

python -m reports sample --out /tmp/report-preview [--signed] [--logo PATH] [--institution NAME]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from reports.records import REPORT_KINDS, ReportContext
from reports.render import render_report, report_filename
from reports.samples import sample_case


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m reports", description="Preview the PDF reports.")
    commands = parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser("sample", help="write the three reports of a synthetic sample case")
    sample.add_argument("--out", type=Path, required=True, help="folder for the PDFs (created if missing)")
    sample.add_argument("--signed", action="store_true", help="sign the sample case")
    sample.add_argument("--logo", type=Path, default=None, help="institution logo (PNG/JPEG)")
    sample.add_argument("--institution", default="CXR Workstation", help="institution name")
    args = parser.parse_args()

    case = sample_case()
    if args.signed:
        case = replace(case, signed_by="Dr. Ana Radiologist", signed_at=datetime(2026, 3, 14, 11, 5, tzinfo=UTC))
    context = ReportContext(institution_name=args.institution, logo_path=args.logo)
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in REPORT_KINDS:
        path = args.out / report_filename(kind, case)
        path.write_bytes(render_report(kind, case, context))
        print(path)


if __name__ == "__main__":
    main()
