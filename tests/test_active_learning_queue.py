"""The annotation queue and its claims on real SQLite files and real PostgreSQL schemas: one item per case with its
reasons, the strategy's order, expiring claims (a clock the test moves), and two OS processes claiming at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from active_learning import (
    ClaimExpiredError,
    ClaimNotFoundError,
    InvalidAnnotationError,
    NotYourClaimError,
    QueuePolicy,
    ReviewReason,
)
from storage import CaseNotFoundError
from tests.active_learning_support import (
    PATIENT_NAME,
    Clock,
    LoopDatabase,
    make_case,
    open_loop_database,
    queued_cases,
    race_claims,
)
from tests.conftest import DATABASES

READ = {"label": "PNEUMONIA", "confidence": 4}


@pytest.fixture(params=DATABASES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopDatabase]:
    yield from open_loop_database(request, tmp_path)


def test_a_case_is_queued_once_with_every_reason(db: LoopDatabase) -> None:
    clock = Clock()
    loop = db.loop(clock)
    case = make_case(db.cases)
    loop.enqueue(case.id, ReviewReason.UNCERTAIN)
    clock.advance(60)
    loop.enqueue(case.id, ReviewReason.MANUAL, requested_by="dr.house", note=f"{PATIENT_NAME}: check the apex")
    loop.enqueue(case.id, ReviewReason.UNCERTAIN)  # the same reason again changes nothing

    page = loop.list_queue()
    assert page.total == 1
    item = page.items[0]
    assert [(r.code, r.requested_by) for r in item.reasons] == [("uncertain", None), ("manual", "dr.house")]
    assert item.reasons[1].at - item.reasons[0].at == timedelta(seconds=60)
    assert (item.state, item.reads, item.reads_needed, item.claimed_by) == ("open", 0, 2, None)
    assert item.waiting_s(clock.advance(30)) == 90.0
    assert item.note == f"{PATIENT_NAME}: check the apex" and "note" not in item.to_dict()
    with db.database.engine.connect() as connection:
        stored = connection.execute(text("SELECT note FROM queue_items")).scalar_one()
    assert PATIENT_NAME not in stored  # free text is encrypted at rest


def test_enqueue_refuses_unknown_cases_and_reasons(db: LoopDatabase) -> None:
    loop = db.loop()
    with pytest.raises(CaseNotFoundError):
        loop.enqueue("no-such-case", ReviewReason.UNCERTAIN)
    with pytest.raises(InvalidAnnotationError, match="Unknown review reason 'bored'; choose one of uncertain, ood"):
        loop.enqueue(make_case(db.cases).id, "bored")


def test_claims_follow_the_strategy_and_lock_the_case(db: LoopDatabase) -> None:
    loop = db.loop(Clock(), strategy="uncertainty")
    sure, doubtful, middling = (make_case(db.cases, pneumonia=p).id for p in (0.97, 0.52, 0.75))
    for case_id in (sure, doubtful, middling):
        loop.enqueue(case_id, ReviewReason.UNCERTAIN)

    assert [item.case_id for item in loop.list_queue().items] == [doubtful, middling, sure]
    first = loop.claim_next("ann")
    assert first is not None and first.case_id == doubtful
    assert loop.claim_next("ann") == first  # one claim at a time: asking again gives the same one
    second = loop.claim_next("bea")
    assert second is not None and second.case_id == middling  # the doubtful case is locked for ann
    holders = {item.case_id: item.claimed_by for item in loop.list_queue().items}
    assert holders == {doubtful: "ann", middling: "bea", sure: None}


def test_claims_expire_renew_and_release(db: LoopDatabase) -> None:
    clock = Clock()
    loop = db.loop(clock, claim_ttl_s=60)
    (case_id,) = queued_cases(db, loop, 1)
    claim = loop.claim_next("ann")
    assert claim is not None and (claim.expires_at - claim.claimed_at).total_seconds() == 60
    assert loop.claim_next("bea") is None  # the only case is locked

    clock.advance(50)
    renewed = loop.renew(claim.id, "ann")
    assert renewed.expires_at == clock.now + timedelta(seconds=60)
    clock.advance(50)  # 100 s after the claim, 50 s after the renewal: still held
    assert loop.claim_next("bea") is None
    with pytest.raises(NotYourClaimError):
        loop.renew(claim.id, "bea")
    with pytest.raises(ClaimNotFoundError):
        loop.renew("no-such-claim", "ann")

    clock.advance(11)  # the renewed claim has lapsed: the case is free again
    taken = loop.claim_next("bea")
    assert taken is not None and taken.case_id == case_id
    with pytest.raises(ClaimExpiredError, match="has expired"):
        loop.renew(claim.id, "ann")
    with pytest.raises(ClaimExpiredError, match="claim the case again"):
        loop.submit("ann", case_id, **READ)

    loop.release(taken.id, "bea")
    loop.release(taken.id, "bea")  # releasing twice is harmless
    with pytest.raises(ClaimExpiredError, match="was released"):
        loop.submit("bea", case_id, **READ)
    again = loop.claim_next("ann")
    assert again is not None and again.case_id == case_id and again.id != claim.id


def test_reading_without_a_claim_is_refused(db: LoopDatabase) -> None:
    loop = db.loop()
    (case_id,) = queued_cases(db, loop, 1)
    with pytest.raises(ClaimNotFoundError, match="claim it from the queue first"):
        loop.submit("ann", case_id, **READ)


def test_two_processes_claiming_at_once_get_different_cases(db: LoopDatabase) -> None:
    queued = set(queued_cases(db, db.loop(), 20))
    got = race_claims(db, processes=2, claims_each=10)
    assert len(got) == 20 and None not in got
    assert set(got) == queued  # 20 claims, 20 different cases
    with db.database.engine.connect() as connection:
        active = connection.execute(text("SELECT count(DISTINCT case_id), count(*) FROM queue_claims")).one()
    assert tuple(active) == (20, 20)


def test_the_policy_comes_from_settings_and_is_checked() -> None:
    from settings import Settings

    policy = QueuePolicy.from_settings(Settings(active_learning_strategy="margin", claim_ttl_s=120, reads_per_case=3))
    assert (policy.strategy, policy.claim_ttl_s, policy.reads_per_case) == ("margin", 120, 3)
    with pytest.raises(ValueError, match="Unknown selection strategy 'clever'"):
        QueuePolicy(strategy="clever")
    with pytest.raises(ValueError, match="expert_holdout_fraction"):
        QueuePolicy(expert_holdout_fraction=1.0)
