"""The validated scope: is this film from a population the model was validated on?

The pneumonia model is validated on frontal films of children at the Kermany hospital and of adults at the NIH
Clinical Center. A film outside both still gets an analysis, but marked `outside_validated` with the reason, counted
as uncertain and sent for expert review. Two signals, because many uploads carry no age:
1. Age (DICOM tag or form), when known: each population has a validated age range; 6-17 years is in neither.
2. The film itself: for each population, the class-conditional Mahalanobis distance of the model's embedding to
   that population's training embeddings (inference.ood's reference, fitted per population), with a threshold at a
   high percentile of held-out patients of the same population. Inside any population's threshold (among those
   the age allows) is in scope. Cost: one small matrix product on the embedding the prediction already computed.

The populations, their age ranges and references are fitted by `python -m mlops.fit_scope` and stored in the
checkpoint (`extra["scope"]`), because serving reads everything from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.checkpoint import ModelCheckpoint
from inference.ood import MahalanobisReference, OODError

SCOPE_EXTRA_KEY = "scope"
VALIDATED = "validated"
OUTSIDE_VALIDATED = "outside_validated"
UNCHECKED = "unchecked"  # the checkpoint states no scope: nothing can be said either way


@dataclass(frozen=True)
class PopulationScope:
    name: str  # e.g. "children"
    description: str  # for people: "children (0-5 years) at the Kermany hospital"
    min_age: int
    max_age: int
    reference: MahalanobisReference

    def admits_age(self, age: int | None) -> bool:
        return age is None or self.min_age <= age <= self.max_age

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "min_age": self.min_age,
            "max_age": self.max_age,
            "reference": self.reference.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PopulationScope:
        try:
            return cls(
                name=str(data["name"]),
                description=str(data["description"]),
                min_age=int(data["min_age"]),
                max_age=int(data["max_age"]),
                reference=MahalanobisReference.from_dict(data["reference"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OODError(f"The checkpoint's scope is malformed ({type(exc).__name__}).") from None


@dataclass(frozen=True)
class ScopeResult:
    scope: str  # VALIDATED, OUTSIDE_VALIDATED or UNCHECKED
    reason: str = ""  # why it is outside, for people; empty otherwise
    population: str | None = None  # the validated population the film belongs to (the nearest in scope)

    @property
    def outside(self) -> bool:
        return self.scope == OUTSIDE_VALIDATED


class ScopeCheck:
    """Stateless after construction: safe to share between threads."""

    def __init__(self, populations: tuple[PopulationScope, ...]) -> None:
        self.populations = populations

    def check(self, embedding: np.ndarray, age: int | None = None) -> ScopeResult:
        if not self.populations:
            return ScopeResult(UNCHECKED)
        allowed = [p for p in self.populations if p.admits_age(age)]
        if not allowed:
            return ScopeResult(OUTSIDE_VALIDATED, f"age {age} years is outside the validated ages ({self.ages()})")
        scores = {p.name: float(p.reference.distances(embedding)[0]) / p.reference.threshold for p in allowed}
        nearest = min(scores, key=scores.__getitem__)
        if scores[nearest] <= 1.0:
            return ScopeResult(VALIDATED, population=nearest)
        names = " or ".join(p.description for p in allowed)
        return ScopeResult(OUTSIDE_VALIDATED, f"the film does not resemble the validated populations ({names})")

    def ages(self) -> str:
        return "; ".join(f"{p.name} {p.min_age}-{p.max_age}" for p in self.populations)

    def to_dict(self) -> dict[str, Any]:
        return {"populations": [p.to_dict() for p in self.populations]}

    @classmethod
    def from_checkpoint(cls, checkpoint: ModelCheckpoint) -> ScopeCheck:
        """The stored scope (none: every film is `unchecked`); refuses references fitted on other weights."""
        raw = checkpoint.extra.get(SCOPE_EXTRA_KEY)
        if raw is None:
            return cls(())
        populations = tuple(PopulationScope.from_dict(p) for p in raw.get("populations", ()))
        stale = [p.name for p in populations if p.reference.model_version not in checkpoint.same_backbone_versions]
        if stale:
            raise OODError(f"The scope of {', '.join(stale)} was fitted on another model; run mlops.fit_scope again.")
        return cls(populations)


def with_scope(checkpoint: ModelCheckpoint, scope: ScopeCheck) -> ModelCheckpoint:
    """A copy of the checkpoint whose `extra` carries the scope (weights and everything else unchanged)."""
    return ModelCheckpoint(**{**checkpoint.__dict__, "extra": {**checkpoint.extra, SCOPE_EXTRA_KEY: scope.to_dict()}})
