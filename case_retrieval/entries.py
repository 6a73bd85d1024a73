"""What the library stores per entry and what a search returns."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from case_retrieval.errors import InvalidInputError

# Entry ids name thumbnail files and appear in URLs: keep them to a safe alphabet.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class EntrySource(StrEnum):
    REFERENCE = "reference"  # labelled image of a reference dataset
    CONFIRMED_CASE = "confirmed_case"  # a workstation case whose diagnosis an expert confirmed


@dataclass(frozen=True)
class LibraryEntry:
    entry_id: str
    label: str
    source: EntrySource
    confirmed: bool  # only confirmed entries are ever returned as precedent
    case_id: str | None = None  # workstation case id (source CONFIRMED_CASE)
    reference_file: str | None = None  # path inside its dataset folder (source REFERENCE)
    dataset: str | None = None  # dataset folder name (source REFERENCE)
    split: str | None = None  # dataset split (source REFERENCE)
    image_sha256: str | None = None  # of the original image bytes, to recognise the same image again
    added_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["source"] = self.source.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LibraryEntry:
        return cls(
            entry_id=str(data["entry_id"]),
            label=str(data["label"]),
            source=EntrySource(data["source"]),
            confirmed=bool(data["confirmed"]),
            case_id=_optional_str(data.get("case_id")),
            reference_file=_optional_str(data.get("reference_file")),
            dataset=_optional_str(data.get("dataset")),
            split=_optional_str(data.get("split")),
            image_sha256=_optional_str(data.get("image_sha256")),
            added_at=str(data.get("added_at", "")),
        )

    def confirmed_as(self, label: str) -> LibraryEntry:
        return replace(self, label=validate_label(label), confirmed=True)


@dataclass(frozen=True)
class Neighbour:
    """One similar entry: cosine similarity in [-1, 1] (1 = same direction) and its 1-based rank."""

    entry: LibraryEntry
    similarity: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "similarity": round(self.similarity, 6), **self.entry.to_dict()}


def new_entry(
    entry_id: str,
    label: str,
    source: EntrySource | str,
    *,
    confirmed: bool,
    case_id: str | None = None,
    reference_file: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    image_sha256: str | None = None,
) -> LibraryEntry:
    """A validated entry stamped with the current time."""
    try:
        source = EntrySource(source)
    except ValueError:
        choices = ", ".join(s.value for s in EntrySource)
        raise InvalidInputError(f"Unknown entry source {source!r}; expected one of: {choices}.") from None
    if source is EntrySource.REFERENCE and not confirmed:
        raise InvalidInputError("Reference images are labelled data: add them with confirmed=True.")
    if source is EntrySource.CONFIRMED_CASE and (not case_id or entry_id != case_entry_id(case_id)):
        raise InvalidInputError("A case entry needs its case id and the entry id `case-<case id>`.")
    return LibraryEntry(
        entry_id=validate_entry_id(entry_id),
        label=validate_label(label),
        source=source,
        confirmed=confirmed,
        case_id=case_id,
        reference_file=reference_file,
        dataset=dataset,
        split=split,
        image_sha256=image_sha256,
        added_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def case_entry_id(case_id: str) -> str:
    """The entry id under which a workstation case is stored."""
    return validate_entry_id(f"case-{case_id}")


def reference_entry_id(image_sha256: str) -> str:
    """Reference entries are named by content, so the same image is never added twice."""
    return validate_entry_id(f"ref-{image_sha256[:24]}")


def validate_entry_id(entry_id: str) -> str:
    if not isinstance(entry_id, str) or not _ID_PATTERN.match(entry_id):
        raise InvalidInputError(
            f"Invalid entry id {entry_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return entry_id


def validate_label(label: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise InvalidInputError("An entry needs a non-empty label.")
    return label.strip()


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
