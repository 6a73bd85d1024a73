"""Selection strategies: which waiting cases an expert should read first.

One interface (`Strategy`: a `name`, `info()` for people, `rank(candidates, k)`), as MONAI Label keeps its
`Strategy` apart from the implementations, and the variants registered by name in `STRATEGIES`; the setting
ACTIVE_LEARNING_STRATEGY names one and `make_strategy` builds it.

- uncertainty: the model is least sure first. The score is the MC-dropout mutual information when every candidate
  has one (it separates what more data can fix from plain ambiguity), else the stored predictive entropy when every
  candidate has one, else the entropy computed from the probabilities for all. One scale for the whole ranking: the
  MI of one case is never compared with the entropy of another (MI is at most the entropy, so mixing them would push
  the cases that have MI down), nor a stored entropy (the serving path stores it normalised to [0, 1]) with one in
  nats computed here.
- margin: the smallest gap between the two most probable classes first.
- random: a seeded shuffle, reproducible (the same seed and the same cases give the same order, whatever order the
  cases came in): the baseline that the others have to beat.
- diversity: uncertainty order, but a candidate whose embedding lies within `min_distance` (cosine distance,
  1 - cos) of an already picked one is held back, so one batch does not spend its reads on near-duplicates.
  Candidates without an embedding are never held back. If holding back leaves fewer than k picks, the held-back
  candidates fill up the batch after the diverse picks (in uncertainty order): an annotator is never left idle
  while cases wait.

Ties (equal scores) go to the case waiting longest (`waiting_since` older first; unknown waiting time last), then
to the key, so the order is the same on every call.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

__all__ = [
    "STRATEGIES",
    "Candidate",
    "Diversity",
    "Margin",
    "RandomOrder",
    "Strategy",
    "Uncertainty",
    "make_strategy",
]


@dataclass(frozen=True)
class Candidate:
    """One case waiting for expert reads, with what the model said about it."""

    key: str  # queue item id (or any id in the bench)
    probabilities: Mapping[str, float]  # the model's class probabilities of the case
    entropy: float | None = None  # predictive entropy (nats) if the case has it
    mutual_information: float | None = None  # MC-dropout BALD score if the case has it
    embedding: np.ndarray | None = field(default=None, compare=False)  # float32 pooled features
    waiting_since: datetime | None = None


class Strategy(ABC):
    """Orders candidates for expert reading; `rank` returns the best first, at most k of them."""

    name: str
    description: str

    def info(self) -> str:
        """One sentence for the UI and the docs."""
        return self.description

    @abstractmethod
    def rank(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]: ...


def entropy_of(probabilities: Mapping[str, float]) -> float:
    """Shannon entropy in nats of a class-probability mapping (zero probabilities contribute nothing)."""
    return -sum(p * math.log(p) for p in probabilities.values() if p > 0)


def _checked_k(k: int) -> int:
    if k < 0:
        raise ValueError(f"Cannot pick {k} cases: the number of picks must be zero or more.")
    return k


def _waiting_key(candidate: Candidate) -> tuple[bool, float, str]:
    """Longest waiting first, unknown waiting time last, then the key (a stable order on every call)."""
    since = candidate.waiting_since
    return (since is None, since.timestamp() if since is not None else 0.0, candidate.key)


def _by_score(candidates: Sequence[Candidate], score: Callable[[Candidate], float]) -> list[Candidate]:
    """Highest score first; ties by waiting time."""
    return sorted(candidates, key=lambda c: (-score(c), *_waiting_key(c)))


def uncertainty_order(candidates: Sequence[Candidate]) -> list[Candidate]:
    """All candidates, most uncertain first (mutual information when every one has it, else entropy)."""
    if candidates and all(c.mutual_information is not None for c in candidates):
        return _by_score(candidates, lambda c: float(c.mutual_information or 0.0))
    if candidates and all(c.entropy is not None for c in candidates):
        return _by_score(candidates, lambda c: float(c.entropy or 0.0))
    return _by_score(candidates, lambda c: entropy_of(c.probabilities))


class Uncertainty(Strategy):
    name = "uncertainty"
    description = (
        "Cases the model is least sure about first (MC-dropout mutual information, else predictive entropy); "
        "ties go to the case waiting longest."
    )

    def rank(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        return uncertainty_order(candidates)[: _checked_k(k)]


def _margin(candidate: Candidate) -> float:
    top = sorted(candidate.probabilities.values(), reverse=True)[:2]
    return top[0] - (top[1] if len(top) > 1 else 0.0) if top else 0.0


class Margin(Strategy):
    name = "margin"
    description = "Cases whose two most probable classes are closest first; ties go to the case waiting longest."

    def rank(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        return _by_score(candidates, lambda c: -_margin(c))[: _checked_k(k)]


class RandomOrder(Strategy):
    name = "random"
    description = "Cases in a random (seeded, reproducible) order: the baseline the other strategies have to beat."

    def __init__(self, seed: int = 0):
        self.seed = seed

    def rank(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        # Sorted by key first so that the order does not depend on the order the database returned the rows in.
        ordered = sorted(candidates, key=lambda c: c.key)
        permutation = np.random.default_rng(self.seed).permutation(len(ordered))
        return [ordered[i] for i in permutation[: _checked_k(k)]]


def _unit(embedding: np.ndarray | None) -> np.ndarray | None:
    """The embedding scaled to length 1, or None when there is none (or it is all zeros: it has no direction)."""
    if embedding is None:
        return None
    vector = np.asarray(embedding, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else None


class Diversity(Strategy):
    name = "diversity"
    description = (
        "Uncertain cases first, but no two picks of a batch closer than a set distance in the model's embedding "
        "space (near-duplicates fill up the batch only when nothing else is left)."
    )

    def __init__(self, min_distance: float = 0.1):
        if not 0 <= min_distance <= 2:
            raise ValueError(f"The minimum cosine distance must lie between 0 and 2, not {min_distance}.")
        self.min_distance = min_distance

    def rank(self, candidates: Sequence[Candidate], k: int) -> list[Candidate]:
        k = _checked_k(k)
        picked: list[Candidate] = []
        held_back: list[Candidate] = []
        picked_units: list[np.ndarray] = []
        for candidate in uncertainty_order(candidates):
            if len(picked) == k:
                break
            unit = _unit(candidate.embedding)
            if unit is not None and picked_units and self._too_close(unit, np.stack(picked_units)):
                held_back.append(candidate)
                continue
            picked.append(candidate)
            if unit is not None:
                picked_units.append(unit)
        return picked + held_back[: k - len(picked)]

    def _too_close(self, unit: np.ndarray, picked_units: np.ndarray) -> bool:
        if picked_units.shape[1] != unit.shape[0]:
            raise ValueError(f"Embeddings of different lengths ({picked_units.shape[1]} and {unit.shape[0]}).")
        return bool(np.min(1.0 - picked_units @ unit) < self.min_distance)


# name -> factory; every factory takes the same keyword options and uses the ones it needs.
STRATEGIES: Mapping[str, Callable[..., Strategy]] = {
    "uncertainty": lambda *, min_distance=0.1, seed=0: Uncertainty(),
    "margin": lambda *, min_distance=0.1, seed=0: Margin(),
    "random": lambda *, min_distance=0.1, seed=0: RandomOrder(seed=seed),
    "diversity": lambda *, min_distance=0.1, seed=0: Diversity(min_distance=min_distance),
}


def make_strategy(name: str, *, min_distance: float = 0.1, seed: int = 0) -> Strategy:
    """The strategy registered under `name`; an unknown name raises ValueError listing the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown selection strategy {name!r}; expected one of: {', '.join(sorted(STRATEGIES))}.")
    return STRATEGIES[name](min_distance=min_distance, seed=seed)
