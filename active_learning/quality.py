"""Quality of the expert labels and of the model against them: reads, agreement, Cohen's kappa, time per read, and
the model's accuracy, sensitivity and specificity on final labels per model version.

Cohen's kappa for two label sequences a and b over the same n cases: kappa = (p_o - p_e) / (1 - p_e), with p_o the
share of cases where they agree and p_e = sum over labels k of (n_a(k) / n) * (n_b(k) / n), the agreement expected by
chance from each side's label frequencies. It is undefined (None here) when p_e = 1: both sides gave one and the same
label to every case, so chance explains everything.

Between readers the pairs are (first read, second read) of each case read twice; against final labels, (this
annotator's read, the final label). The model is judged on final labels it could have given: OTHER and UNGRADABLE
finals are left out and counted as `excluded`. The positive class of a case is the class whose probability is the
case's `positive_probability` (the model's last class: PNEUMONIA), read from the values rather than from the key order
(PostgreSQL's JSONB does not keep it).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from active_learning.models import AnnotationRow, FinalLabelRow
from active_learning.records import NOT_COMPARABLE
from storage import Case


@dataclass(frozen=True)
class AnnotatorStats:
    annotator: str
    reads: int  # cases read (a corrected read counts once)
    agreement_rate: float | None  # share of their reads that match the other reader's, on cases read twice
    kappa_vs_final: float | None  # their reads against the final labels
    mean_seconds: float | None  # claim to submission
    median_seconds: float | None


@dataclass(frozen=True)
class OverallStats:
    reads: int
    final_labels: int
    double_read_cases: int
    agreement_rate: float | None  # share of cases read twice whose reads agree
    kappa_between_readers: float | None
    mean_seconds: float | None
    median_seconds: float | None


@dataclass(frozen=True)
class ModelVersionStats:
    model_version: str
    positive_class: str
    n: int  # final labels the model's answer is judged against
    excluded: int  # OTHER and UNGRADABLE final labels
    accuracy: float | None
    sensitivity: float | None
    specificity: float | None


@dataclass(frozen=True)
class AnnotationStats:
    overall: OverallStats
    annotators: tuple[AnnotatorStats, ...]
    models: tuple[ModelVersionStats, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Read:
    case_id: str
    annotator: str
    label: str
    started: datetime  # when the first version of this read was submitted: its place in the reading order


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of (a, b) label pairs (see the module docstring); None for no pairs or when undefined."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    count_a, count_b = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(count_a[label] * count_b[label] for label in count_a) / n**2
    return None if expected == 1 else (observed - expected) / (1 - expected)


def positive_class(probabilities: Mapping[str, float], positive_probability: float | None) -> str:
    classes = list(probabilities)
    matching = [name for name in classes if probabilities[name] == positive_probability]
    return matching[0] if len(matching) == 1 else classes[-1]


def annotation_stats(session: Session, annotator_id: str | None) -> AnnotationStats:
    """Statistics of every annotator (or only `annotator_id`'s row), overall, and per model version."""
    reads, seconds = _reads_and_times(session)
    finals = {row.case_id: row.label for row in session.execute(select(FinalLabelRow.case_id, FinalLabelRow.label))}
    by_case: dict[str, list[_Read]] = defaultdict(list)
    for read in sorted(reads, key=lambda read: read.started):
        by_case[read.case_id].append(read)
    double_read = [case_reads for case_reads in by_case.values() if len(case_reads) >= 2]
    everyone = sorted({read.annotator for read in reads} | set(seconds))
    chosen = everyone if annotator_id is None else [annotator_id]
    overall = OverallStats(
        reads=len(reads),
        final_labels=len(finals),
        double_read_cases=len(double_read),
        agreement_rate=_share(len({read.label for read in case_reads}) == 1 for case_reads in double_read),
        kappa_between_readers=cohen_kappa([(case_reads[0].label, case_reads[1].label) for case_reads in double_read]),
        mean_seconds=_mean([s for times in seconds.values() for s in times]),
        median_seconds=_median([s for times in seconds.values() for s in times]),
    )
    annotators = tuple(_annotator_stats(name, reads, double_read, finals, seconds.get(name, [])) for name in chosen)
    return AnnotationStats(overall=overall, annotators=annotators, models=tuple(model_stats(session)))


def _reads_and_times(session: Session) -> tuple[list[_Read], dict[str, list[float]]]:
    """The current reads (latest version of each), and every annotator's claim-to-submission times of first reads."""
    rows = session.execute(
        select(
            AnnotationRow.id,
            AnnotationRow.supersedes_id,
            AnnotationRow.case_id,
            AnnotationRow.annotator_id,
            AnnotationRow.label,
            AnnotationRow.claimed_at,
            AnnotationRow.created_at,
        )
    ).all()
    by_id = {row.id: row for row in rows}
    replaced = {row.supersedes_id for row in rows if row.supersedes_id}

    def first_version(row: Any) -> Any:
        while row.supersedes_id is not None:
            row = by_id[row.supersedes_id]
        return row

    reads = [
        _Read(row.case_id, row.annotator_id, row.label, first_version(row).created_at)
        for row in rows
        if row.id not in replaced
    ]
    seconds: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.claimed_at is not None:
            seconds[row.annotator_id].append((row.created_at - row.claimed_at).total_seconds())
    return reads, seconds


def _annotator_stats(
    name: str,
    reads: Sequence[_Read],
    double_read: Sequence[Sequence[_Read]],
    finals: Mapping[str, str],
    seconds: Sequence[float],
) -> AnnotatorStats:
    theirs = [read for read in reads if read.annotator == name]
    agreements = [
        mine.label == other.label
        for case_reads in double_read
        for mine in case_reads
        if mine.annotator == name
        for other in case_reads
        if other.annotator != name
    ]
    return AnnotatorStats(
        annotator=name,
        reads=len(theirs),
        agreement_rate=_share(agreements),
        kappa_vs_final=cohen_kappa([(read.label, finals[read.case_id]) for read in theirs if read.case_id in finals]),
        mean_seconds=_mean(seconds),
        median_seconds=_median(seconds),
    )


def model_stats(session: Session) -> list[ModelVersionStats]:
    """The model's answers against the final labels, per model version (newest labels do not weigh more)."""
    rows = session.execute(
        select(
            FinalLabelRow.model_version,
            FinalLabelRow.prediction,
            FinalLabelRow.label,
            Case.probabilities,
            Case.positive_probability,
        ).join(Case, Case.id == FinalLabelRow.case_id)
    ).all()
    by_version: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_version[row.model_version].append(row)
    return [_version_stats(version, by_version[version]) for version in sorted(by_version)]


def _version_stats(version: str, rows: Sequence[Any]) -> ModelVersionStats:
    judged = [row for row in rows if row.label not in NOT_COMPARABLE]
    positives = [positive_class(row.probabilities, row.positive_probability) for row in judged]
    truth = [row.label == positive for row, positive in zip(judged, positives, strict=True)]
    said = [row.prediction == positive for row, positive in zip(judged, positives, strict=True)]
    return ModelVersionStats(
        model_version=version,
        positive_class=Counter(positives).most_common(1)[0][0] if positives else "",
        n=len(judged),
        excluded=len(rows) - len(judged),
        accuracy=_share(row.prediction == row.label for row in judged),
        sensitivity=_share(s for s, t in zip(said, truth, strict=True) if t),
        specificity=_share(not s for s, t in zip(said, truth, strict=True) if not t),
    )


def expert_feedback(session: Session, limit: int) -> list[tuple[str, str]]:
    """(the model's answer, the final expert label) of the `limit` most recent final labels the model could have
    given (OTHER and UNGRADABLE left out): what the accuracy-on-expert-feedback alert rule reads."""
    rows = session.execute(
        select(FinalLabelRow.prediction, FinalLabelRow.label)
        .where(FinalLabelRow.label.not_in(sorted(NOT_COMPARABLE)))
        .order_by(FinalLabelRow.finalized_at.desc(), FinalLabelRow.case_id)
        .limit(limit)
    )
    return [(row.prediction, row.label) for row in rows]


def _share(flags: Iterable[bool]) -> float | None:
    values = list(flags)
    return sum(values) / len(values) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
