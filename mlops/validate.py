"""Data validation of a training set before any training: readable files, duplicates, counts, patient leakage.

CLI: `python -m mlops.validate --data DIR [--decode] [--split-column COL]`; exit status 1 when there are errors.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imaging import ImagingError, decode_image
from labelled_data import DataOptions, DatasetError, Sample, load_samples


@dataclass
class ValidationReport:
    total: int = 0
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label -> n
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    duplicate_groups: list[list[Path]] = field(default_factory=list)
    cross_split_duplicates: list[list[Path]] = field(default_factory=list)
    patient_overlap: dict[str, list[str]] = field(default_factory=dict)  # "a/b" -> patient ids in both
    fingerprint: str = ""

    @property
    def unreadable_paths(self) -> set[Path]:
        return {path for path, _ in self.unreadable}

    @property
    def errors(self) -> list[str]:
        """Problems that make training or evaluation untrustworthy (leakage between splits)."""
        problems = []
        if self.total == 0:
            problems.append("no images found")
        if self.cross_split_duplicates:
            problems.append(f"{len(self.cross_split_duplicates)} identical images appear in more than one split")
        return problems

    @property
    def warnings(self) -> list[str]:
        """Worth a look but not blocking: ids parsed from file names may restart per split (as in Kermany, whose
        official split is patient-disjoint although its per-split numbering repeats)."""
        return [
            f"{len(patients)} patient ids occur in splits {pair} (e.g. {', '.join(patients[:3])})"
            for pair, patients in self.patient_overlap.items()
        ]

    def summary_lines(self) -> list[str]:
        lines = [f"{self.total} images; fingerprint {self.fingerprint[:16]}"]
        for split, counts in sorted(self.class_counts.items()):
            lines.append(f"split {split}: " + ", ".join(f"{label}={n}" for label, n in sorted(counts.items())))
        if self.unreadable:
            lines.append(
                f"{len(self.unreadable)} unreadable files (skipped), e.g. {self.unreadable[0][0].name}: "
                f"{self.unreadable[0][1]}"
            )
        if self.duplicate_groups:
            lines.append(f"{len(self.duplicate_groups)} groups of byte-identical files within a split")
        lines.extend(f"WARNING: {warning}" for warning in self.warnings)
        lines.extend(f"ERROR: {problem}" for problem in self.errors)
        return lines


def validate_dataset(samples: Sequence[Sample], decode: bool = False) -> ValidationReport:
    """Hash every file (and with `decode=True` also decode it) and report problems.

    Decoding every file is slow for large sets; training decodes them anyway and skips what fails.
    """
    report = ValidationReport(total=len(samples))
    counts: dict[str, Counter] = defaultdict(Counter)
    by_hash: dict[str, list[Sample]] = defaultdict(list)
    patients: dict[str, set[str]] = defaultdict(set)
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: (s.split, s.label, str(s.path))):
        counts[sample.split][sample.label] += 1
        patients[sample.split].add(sample.patient_id)
        try:
            payload = sample.path.read_bytes()
            if decode:
                decode_image(payload)
        except (OSError, ImagingError) as exc:
            report.unreadable.append((sample.path, str(exc)))
            continue
        file_hash = hashlib.sha256(payload).hexdigest()
        by_hash[file_hash].append(sample)
        digest.update(f"{sample.split}|{sample.label}|{sample.path.name}|{file_hash}\n".encode())
    report.class_counts = {split: dict(c) for split, c in counts.items()}
    for group in by_hash.values():
        if len(group) > 1:
            paths = [s.path for s in group]
            if len({s.split for s in group}) > 1:
                report.cross_split_duplicates.append(paths)
            else:
                report.duplicate_groups.append(paths)
    splits = sorted(patients)
    for i, first in enumerate(splits):
        for second in splits[i + 1 :]:
            shared = sorted(patients[first] & patients[second])
            if shared:
                report.patient_overlap[f"{first}/{second}"] = shared
    report.fingerprint = digest.hexdigest()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops.validate", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (split/CLASS/* or manifest.csv)")
    parser.add_argument("--decode", action="store_true", help="also decode every image (slower, finds corrupt files)")
    parser.add_argument("--split-column", default="", help="manifest column holding the split")
    args = parser.parse_args(argv)
    try:
        samples = load_samples(args.data, DataOptions(split_column=args.split_column))
    except (DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = validate_dataset(samples, decode=args.decode)
    for line in report.summary_lines():
        print(line)
    for path, reason in report.unreadable[:20]:
        print(f"unreadable: {path}: {reason}")
    for group in report.cross_split_duplicates[:20]:
        print("identical across splits: " + ", ".join(str(p) for p in group))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
