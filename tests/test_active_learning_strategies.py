"""Which case an expert reads next: each selection strategy's order, stated as the queue would show it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from active_learning import STRATEGIES, Candidate, Strategy, make_strategy

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def binary(key: str, p: float, **fields: object) -> Candidate:
    return Candidate(key=key, probabilities={"NORMAL": 1 - p, "PNEUMONIA": p}, **fields)  # type: ignore[arg-type]


def keys(candidates: list[Candidate]) -> list[str]:
    return [c.key for c in candidates]


def test_uncertainty_puts_the_coin_flip_first_and_the_sure_case_last() -> None:
    cases = [binary("sure", 0.99), binary("coin-flip", 0.5), binary("fairly-sure", 0.9)]
    assert keys(make_strategy("uncertainty").rank(cases, 3)) == ["coin-flip", "fairly-sure", "sure"]
    assert keys(make_strategy("uncertainty").rank(cases, 2)) == ["coin-flip", "fairly-sure"]


def test_uncertainty_prefers_mutual_information_when_every_case_has_it() -> None:
    # By entropy "a" (p=0.5) would come first; the MC-dropout disagreement says "b" is the one more data would fix.
    cases = [binary("a", 0.5, mutual_information=0.01), binary("b", 0.8, mutual_information=0.2)]
    assert keys(make_strategy("uncertainty").rank(cases, 2)) == ["b", "a"]


def test_uncertainty_uses_entropy_for_all_when_one_case_lacks_mutual_information() -> None:
    cases = [binary("a", 0.5), binary("b", 0.8, mutual_information=0.2)]
    assert keys(make_strategy("uncertainty").rank(cases, 2)) == ["a", "b"]


def test_a_stored_entropy_is_used_rather_than_recomputed() -> None:
    # The stored entropy (e.g. averaged over several passes) can differ from that of the mean probabilities.
    cases = [binary("a", 0.5, entropy=0.1), binary("b", 0.9, entropy=0.6)]
    assert keys(make_strategy("uncertainty").rank(cases, 2)) == ["b", "a"]


def test_a_case_without_stored_entropy_puts_every_case_on_the_computed_scale() -> None:
    # A stored entropy normalised to [0, 1] (0.7) must not beat a coin flip whose entropy is only known in nats.
    cases = [binary("stored", 0.8, entropy=0.7), binary("coin-flip", 0.5)]
    assert keys(make_strategy("uncertainty").rank(cases, 2)) == ["coin-flip", "stored"]


def test_equally_uncertain_cases_go_to_the_one_waiting_longest_and_unknown_waiting_last() -> None:
    cases = [
        binary("unknown", 0.7),
        binary("new", 0.7, waiting_since=T0 + timedelta(hours=2)),
        binary("old", 0.7, waiting_since=T0),
        binary("sure-but-oldest", 0.95, waiting_since=T0 - timedelta(days=3)),
    ]
    assert keys(make_strategy("uncertainty").rank(cases, 4)) == ["old", "new", "unknown", "sure-but-oldest"]


def test_margin_reads_the_gap_between_the_two_most_probable_of_three_classes() -> None:
    cases = [
        Candidate("clear", {"NORMAL": 0.80, "BACTERIAL": 0.15, "VIRAL": 0.05}),  # gap 0.65
        Candidate("torn", {"NORMAL": 0.10, "BACTERIAL": 0.46, "VIRAL": 0.44}),  # gap 0.02
        Candidate("spread", {"NORMAL": 0.40, "BACTERIAL": 0.30, "VIRAL": 0.30}),  # gap 0.10, but highest entropy
    ]
    assert keys(make_strategy("margin").rank(cases, 3)) == ["torn", "spread", "clear"]
    assert keys(make_strategy("uncertainty").rank(cases, 1)) == ["spread"]


def test_random_order_is_the_same_for_the_same_seed_whatever_order_the_cases_come_in() -> None:
    cases = [binary(f"case-{i:02d}", 0.5) for i in range(30)]
    first = keys(make_strategy("random", seed=7).rank(cases, 10))
    again = keys(make_strategy("random", seed=7).rank(list(reversed(cases)), 10))
    other_seed = keys(make_strategy("random", seed=8).rank(cases, 10))
    assert first == again
    assert first != other_seed
    assert first != keys(cases[:10])  # a shuffle, not the input order
    assert len(set(first)) == 10


def test_diversity_picks_only_one_of_two_near_identical_films_first() -> None:
    twin = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    cases = [
        binary("twin-a", 0.50, embedding=twin),
        binary("twin-b", 0.52, embedding=twin * 3 + np.float32([0, 0.01, 0])),  # same direction, other length
        binary("different", 0.70, embedding=np.array([0.0, 1.0, 0.0], dtype=np.float32)),
    ]
    assert keys(make_strategy("uncertainty").rank(cases, 2)) == ["twin-a", "twin-b"]
    assert keys(make_strategy("diversity", min_distance=0.1).rank(cases, 2)) == ["twin-a", "different"]
    # When nothing else is left, the held-back twin fills up the batch after the diverse picks.
    assert keys(make_strategy("diversity", min_distance=0.1).rank(cases, 3)) == ["twin-a", "different", "twin-b"]


def test_diversity_never_holds_back_a_case_without_embedding_and_zero_distance_is_plain_uncertainty() -> None:
    twin = np.array([0.6, 0.8], dtype=np.float32)
    cases = [
        binary("twin-a", 0.50, embedding=twin),
        binary("no-embedding", 0.51),
        binary("twin-b", 0.52, embedding=twin),
        binary("far", 0.90, embedding=np.array([0.8, -0.6], dtype=np.float32)),
    ]
    assert keys(make_strategy("diversity").rank(cases, 3)) == ["twin-a", "no-embedding", "far"]
    assert keys(make_strategy("diversity", min_distance=0.0).rank(cases, 3)) == ["twin-a", "no-embedding", "twin-b"]


def test_unknown_strategy_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        make_strategy("entropy")
    assert str(error.value) == (
        "Unknown selection strategy 'entropy'; expected one of: diversity, margin, random, uncertainty."
    )


def test_bad_options_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="between 0 and 2"):
        make_strategy("diversity", min_distance=3)
    with pytest.raises(ValueError, match="zero or more"):
        make_strategy("margin").rank([binary("a", 0.5)], -1)


def test_every_registered_strategy_has_its_name_a_sentence_and_copes_with_an_empty_queue() -> None:
    assert sorted(STRATEGIES) == ["diversity", "margin", "random", "uncertainty"]
    for name in STRATEGIES:
        strategy = make_strategy(name)
        assert isinstance(strategy, Strategy)
        assert strategy.name == name
        assert strategy.info().endswith(".")
        assert strategy.rank([], 5) == []
        assert len(strategy.rank([binary("a", 0.5), binary("b", 0.6)], 5)) == 2
