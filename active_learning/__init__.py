"""active_learning: the learning loop (which cases experts read, and in what order).

Public surface:
- selection strategies (active_learning.strategies): `Strategy` (name, `info()`, `rank(candidates, k)`),
  `Candidate`, `STRATEGIES` ("uncertainty", "margin", "random", "diversity"), `make_strategy(name, *,
  min_distance, seed)`
"""

from active_learning.strategies import STRATEGIES, Candidate, Strategy, make_strategy

__all__ = [
    "STRATEGIES",
    "Candidate",
    "Strategy",
    "make_strategy",
]
