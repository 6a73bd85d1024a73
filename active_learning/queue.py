"""The queue and its claims, inside a write transaction the caller (active_learning/loop.py) holds.

A claim locks a case for one annotator until it expires. Two backend processes never get the same case:
- PostgreSQL: the queue item's row is taken with `SELECT ... FOR UPDATE SKIP LOCKED` (a process skips a case another
  is claiming instead of waiting for it), then the case's claims are checked again under that lock (read committed:
  a claim committed meanwhile is seen) before the new claim is inserted;
- SQLite: `Database.transaction()` begins with BEGIN IMMEDIATE, so the whole check-then-insert holds the write lock.
Behind both, a partial unique index allows one `active` claim per case. An expired claim stays `active` in the table
until the case is claimed again (it is then marked `expired`); every check compares `expires_at` with the clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from active_learning.errors import (
    ClaimExpiredError,
    ClaimNotFoundError,
    InvalidAnnotationError,
    NotYourClaimError,
    QueueItemNotFoundError,
)
from active_learning.models import (
    ACTIVE,
    ADJUDICATION,
    EXPIRED,
    FINAL,
    OPEN,
    RELEASED,
    AnnotationRow,
    ClaimRow,
    FinalLabelRow,
    QueueItemRow,
    is_current_read,
)
from active_learning.records import Claim, QueueItem, QueuePage, QueuePolicy, QueueReason, ReviewReason
from active_learning.strategies import Candidate, Strategy
from storage import Case, CaseNotFoundError

QUEUE_STATES = (OPEN, ADJUDICATION, FINAL)
MAX_NOTE_LENGTH = 2000
MAX_PAGE_SIZE = 500


# --- sending cases --------------------------------------------------------------------------------------------------


def enqueue(
    session: Session,
    case_id: str,
    reason: ReviewReason | str,
    requested_by: str | None,
    note: str | None,
    now: datetime,
) -> QueueItemRow:
    """The case's queue item, created or given one more reason (a reason already given by the same person is not
    repeated). A final case keeps its label: the reason is recorded, the case is not read again."""
    code = _reason(reason)
    note = _note(note)
    if session.get(Case, case_id) is None:
        raise CaseNotFoundError(f"No case with id {case_id}.")
    entry = {"code": code.value, "requested_by": requested_by, "at": now.isoformat()}
    item = _item_for_update(session, case_id)
    if item is None:
        try:
            with session.begin_nested():  # another process may insert the same case's item at the same moment
                item = QueueItemRow(case_id=case_id, state=OPEN, reasons=[entry], note=note, created_at=now)
                session.add(item)
            return item
        except IntegrityError:
            item = _item_for_update(session, case_id)
            assert item is not None  # the other insert committed
    if not any((r["code"], r["requested_by"]) == (code.value, requested_by) for r in item.reasons):
        item.reasons = [*item.reasons, entry]
    item.note = note or item.note
    item.updated_at = now
    return item


def _reason(reason: ReviewReason | str) -> ReviewReason:
    try:
        return ReviewReason(reason)
    except ValueError:
        choices = ", ".join(r.value for r in ReviewReason)
        raise InvalidAnnotationError(f"Unknown review reason {reason!r}; choose one of {choices}.") from None


def _note(note: str | None) -> str | None:
    if note is not None and not isinstance(note, str):
        raise InvalidAnnotationError("The note must be text.")
    note = (note or "").strip()
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidAnnotationError(f"The note is longer than {MAX_NOTE_LENGTH} characters.")
    return note or None


def _item_for_update(session: Session, case_id: str) -> QueueItemRow | None:
    return session.scalar(select(QueueItemRow).where(QueueItemRow.case_id == case_id).with_for_update())


def item_for_update(session: Session, case_id: str) -> QueueItemRow:
    """The case's queue item, locked for this transaction (QueueItemNotFoundError when the case was never sent)."""
    item = _item_for_update(session, case_id)
    if item is None:
        raise QueueItemNotFoundError(f"Case {case_id} is not in the review queue.")
    return item


# --- listing ----------------------------------------------------------------------------------------------------------


def list_queue(
    session: Session,
    strategy: Strategy,
    policy: QueuePolicy,
    now: datetime,
    *,
    state: str | None,
    limit: int,
    offset: int,
) -> QueuePage:
    """Open cases in the strategy's order (the order claims follow), then cases awaiting adjudication (oldest
    first), then final ones (newest first)."""
    if state is not None and state not in QUEUE_STATES:
        raise InvalidAnnotationError(f"Unknown queue state {state!r}; choose one of {', '.join(QUEUE_STATES)}.")
    if not 1 <= limit <= MAX_PAGE_SIZE or offset < 0:
        raise InvalidAnnotationError(f"limit must be 1 to {MAX_PAGE_SIZE} and offset at least 0.")
    query = select(QueueItemRow).where(QueueItemRow.state == state) if state else select(QueueItemRow)
    rows = list(session.scalars(query))
    open_rows = ranked_open_items(session, strategy, [row for row in rows if row.state == OPEN])
    disputed = sorted((row for row in rows if row.state == ADJUDICATION), key=lambda row: row.created_at)
    final = sorted((row for row in rows if row.state == FINAL), key=lambda row: row.created_at, reverse=True)
    page = [*open_rows, *disputed, *final][offset : offset + limit]
    return QueuePage(items=item_records(session, page, policy, now), total=len(rows))


def ranked_open_items(session: Session, strategy: Strategy, items: Sequence[QueueItemRow]) -> list[QueueItemRow]:
    """`items` in the strategy's order, judged on what the model said about each case."""
    if not items:
        return []
    by_id = {item.id: item for item in items}
    model_output = session.execute(
        select(Case.id, Case.probabilities, Case.uncertainty, Case.embedding).where(
            Case.id.in_([item.case_id for item in items])
        )
    )
    outputs = {row.id: row for row in model_output}
    candidates = [candidate(item, outputs[item.case_id]) for item in items]
    return [by_id[picked.key] for picked in strategy.rank(candidates, len(candidates))]


def candidate(item: QueueItemRow, case: Any) -> Candidate:
    """What a strategy ranks: the stored uncertainty is on the log(K) scale (inference/uncertainty.py), the
    strategies work in nats, so it is scaled back by log(K)."""
    probabilities = dict(case.probabilities)
    nats = math.log(len(probabilities)) if len(probabilities) > 1 else 1.0
    stored = case.uncertainty or {}

    def in_nats(key: str) -> float | None:
        value = stored.get(key)
        return float(value) * nats if isinstance(value, int | float) and math.isfinite(value) else None

    embedding = np.frombuffer(case.embedding, dtype=np.float32) if case.embedding else None
    return Candidate(
        key=item.id,
        probabilities=probabilities,
        entropy=in_nats("entropy"),
        mutual_information=in_nats("mutual_information"),
        embedding=embedding,
        waiting_since=item.created_at,
    )


def item_records(
    session: Session, items: Sequence[QueueItemRow], policy: QueuePolicy, now: datetime
) -> list[QueueItem]:
    """Records of `items` with their read counts, current holders and final labels (three queries in all)."""
    case_ids = [item.case_id for item in items]
    reads: dict[str, int] = dict(
        session.execute(
            select(AnnotationRow.case_id, func.count())
            .where(AnnotationRow.case_id.in_(case_ids), is_current_read())
            .group_by(AnnotationRow.case_id)
        ).all()
    )
    holders = dict(
        session.execute(
            select(ClaimRow.case_id, ClaimRow.annotator_id).where(
                ClaimRow.case_id.in_(case_ids), ClaimRow.state == ACTIVE, ClaimRow.expires_at > now
            )
        ).all()
    )
    final_query = select(FinalLabelRow.case_id, FinalLabelRow.label).where(FinalLabelRow.case_id.in_(case_ids))
    finals = dict(session.execute(final_query).all())
    return [
        QueueItem(
            id=item.id,
            case_id=item.case_id,
            state=item.state,
            reasons=tuple(_queue_reason(reason) for reason in item.reasons),
            reads=int(reads.get(item.case_id, 0)),
            reads_needed=policy.reads_per_case,
            waiting_since=item.created_at,
            claimed_by=holders.get(item.case_id),
            final_label=finals.get(item.case_id),
            note=item.note,
        )
        for item in items
    ]


def _queue_reason(reason: dict[str, Any]) -> QueueReason:
    return QueueReason(ReviewReason(reason["code"]), reason.get("requested_by"), datetime.fromisoformat(reason["at"]))


# --- claims -----------------------------------------------------------------------------------------------------------


def claim_next(
    session: Session, strategy: Strategy, policy: QueuePolicy, annotator_id: str, now: datetime
) -> ClaimRow | None:
    """The annotator's unexpired claim if they hold one, else a claim on the best open case they have not read and
    nobody holds (None: nothing left for them)."""
    held = session.scalar(
        select(ClaimRow)
        .where(ClaimRow.annotator_id == annotator_id, ClaimRow.state == ACTIVE, ClaimRow.expires_at > now)
        .order_by(ClaimRow.claimed_at.desc())
        .limit(1)
    )
    if held is not None:
        return held
    read_by_them = select(AnnotationRow.case_id).where(AnnotationRow.annotator_id == annotator_id)
    held_by_others = select(ClaimRow.case_id).where(ClaimRow.state == ACTIVE, ClaimRow.expires_at > now)
    open_items = session.scalars(
        select(QueueItemRow).where(
            QueueItemRow.state == OPEN,
            QueueItemRow.case_id.not_in(read_by_them),
            QueueItemRow.case_id.not_in(held_by_others),
        )
    ).all()
    for item in ranked_open_items(session, strategy, open_items):
        claim = _try_claim(session, item.id, annotator_id, policy, now)
        if claim is not None:
            return claim
    return None


def _try_claim(
    session: Session, item_id: str, annotator_id: str, policy: QueuePolicy, now: datetime
) -> ClaimRow | None:
    """Claim the item's case unless another process is claiming it or holds it (see the module docstring)."""
    item = session.scalar(
        select(QueueItemRow)
        .where(QueueItemRow.id == item_id, QueueItemRow.state == OPEN)
        .with_for_update(skip_locked=True)
    )
    if item is None:
        return None
    holder = session.scalar(
        select(ClaimRow).where(ClaimRow.case_id == item.case_id, ClaimRow.state == ACTIVE).with_for_update()
    )
    if holder is not None:
        if holder.expires_at > now:
            return None
        holder.state, holder.ended_at = EXPIRED, holder.expires_at
        session.flush()  # the partial unique index must see it gone before the new claim
    claim = ClaimRow(
        item_id=item.id,
        case_id=item.case_id,
        annotator_id=annotator_id,
        state=ACTIVE,
        claimed_at=now,
        expires_at=now + timedelta(seconds=policy.claim_ttl_s),
    )
    session.add(claim)
    session.flush()
    return claim


def renew(session: Session, policy: QueuePolicy, claim_id: str, annotator_id: str, now: datetime) -> ClaimRow:
    claim = _own_claim(session, claim_id, annotator_id)
    _require_live(claim, now)
    claim.expires_at = now + timedelta(seconds=policy.claim_ttl_s)
    return claim


def release(session: Session, claim_id: str, annotator_id: str, now: datetime) -> None:
    """Give the case back; releasing a claim that has already ended changes nothing."""
    claim = _own_claim(session, claim_id, annotator_id)
    if claim.state == ACTIVE:
        claim.state, claim.ended_at = RELEASED, min(now, claim.expires_at)


def live_claim(session: Session, annotator_id: str, case_id: str, now: datetime) -> ClaimRow:
    """The annotator's unexpired claim on the case, which a read needs."""
    claim = session.scalar(
        select(ClaimRow)
        .where(ClaimRow.annotator_id == annotator_id, ClaimRow.case_id == case_id)
        .order_by(ClaimRow.claimed_at.desc())
        .limit(1)
        .with_for_update()
    )
    if claim is None:
        raise ClaimNotFoundError("You hold no claim on this case: claim it from the queue first.")
    _require_live(claim, now)
    return claim


def _own_claim(session: Session, claim_id: str, annotator_id: str) -> ClaimRow:
    claim = session.scalar(select(ClaimRow).where(ClaimRow.id == claim_id).with_for_update())
    if claim is None:
        raise ClaimNotFoundError(f"No claim with id {claim_id}.")
    if claim.annotator_id != annotator_id:
        raise NotYourClaimError("This claim belongs to another annotator.")
    return claim


def _require_live(claim: ClaimRow, now: datetime) -> None:
    if claim.state != ACTIVE or claim.expires_at <= now:
        ended = "has expired" if claim.state in (ACTIVE, EXPIRED) else f"was {claim.state}"
        raise ClaimExpiredError(f"Your claim on this case {ended}: claim the case again to read it.")


def claim_record(claim: ClaimRow) -> Claim:
    return Claim(
        id=claim.id,
        case_id=claim.case_id,
        item_id=claim.item_id,
        annotator_id=claim.annotator_id,
        claimed_at=claim.claimed_at,
        expires_at=claim.expires_at,
    )
