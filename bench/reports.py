"""PDF generation time per report kind: median of N warm runs (wall and CPU), and the first, cold run.

    python bench/reports.py [--runs 20] [--image-px 2048] [--history-chars 0]

The case is the complete synthetic sample case (reports.samples): every section filled, five similar cases with
thumbnails. --image-px renders the radiograph and its overlay at a realistic detector size (they are downscaled for
print inside the report, which is part of what is measured). Target: under 1 s per report on the 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reports import REPORT_KINDS, ReportCase, ReportContext, render_report
from reports.samples import sample_case, synthetic_overlay, synthetic_radiograph, to_png


def bench_case(image_px: int, history_chars: int) -> ReportCase:
    case = sample_case()
    if image_px:
        pixels = synthetic_radiograph((image_px, int(image_px * 1.1)))
        case = replace(case, image_png=to_png(pixels), heatmap_png=to_png(synthetic_overlay(pixels)))
    if history_chars:
        sentence = "Productive cough and fever for three days, crackles over the right lower zone. "
        history = (sentence * (history_chars // len(sentence) + 1))[:history_chars]
        case = replace(case, patient=replace(case.patient, clinical_history=history))
    return case


def time_kind(
    kind: str, case: ReportCase, context: ReportContext, runs: int
) -> tuple[float, list[float], list[float], int]:
    """Cold wall time, warm wall times, warm CPU times (rendering is single-threaded, so CPU time is what the wall
    time would be on an idle core), PDF size."""
    started = time.perf_counter()
    size = len(render_report(kind, case, context))  # type: ignore[arg-type]
    cold = time.perf_counter() - started
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        render_report(kind, case, context)  # type: ignore[arg-type]
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return cold, wall, cpu, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="warm runs per kind (default 20)")
    parser.add_argument("--image-px", type=int, default=2048, help="radiograph width in pixels; 0 keeps the sample's")
    parser.add_argument("--history-chars", type=int, default=0, help="clinical history length (0: the sample's)")
    args = parser.parse_args()

    case = bench_case(args.image_px, args.history_chars)
    context = ReportContext(institution_name="Benchmark Hospital")
    history_chars = len(case.patient.clinical_history or "")
    print(f"image {args.image_px or 'sample'} px, history {history_chars} chars, runs {args.runs}")
    print(f"{'kind':<12} {'cold s':>8} {'median s':>9} {'p90 s':>7} {'max s':>7} {'cpu med s':>10} {'PDF KiB':>8}")
    for kind in REPORT_KINDS:
        cold, wall, cpu, size = time_kind(kind, case, context, args.runs)
        p90 = statistics.quantiles(wall, n=10)[-1] if len(wall) > 1 else wall[0]
        print(
            f"{kind:<12} {cold:>8.3f} {statistics.median(wall):>9.3f} {p90:>7.3f} {max(wall):>7.3f} "
            f"{statistics.median(cpu):>10.3f} {size / 1024:>8.0f}"
        )


if __name__ == "__main__":
    main()
