"""Helpers of the learning-loop tests (tests/test_active_learning_*.py): a migrated database per backend with a PHI
key, cases made through storage's repository, a clock the tests move, and the child process of the claim race."""

from __future__ import annotations

import hashlib
import multiprocessing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from active_learning import LearningLoop, QueuePolicy, ReviewReason
from storage import (
    CaseRecord,
    CaseRepository,
    Database,
    NewCase,
    PatientInfo,
    PhiCipher,
    configure_phi_cipher,
    generate_phi_key,
    migrate_database,
)
from tests.conftest import postgres_schema

PATIENT_NAME = "Wilhelmina Oakenshield-Brant"
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@dataclass
class Clock:
    """The loop's time, moved by hand (claims expire without sleeping); with `tick`, each reading of it also moves it
    by that many seconds, so that events keep their order as on a real clock."""

    now: datetime = START
    tick: float = 0.0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=self.tick)
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class LoopDatabase:
    url: str
    key: str
    database: Database
    cases: CaseRepository = field(init=False)

    def __post_init__(self) -> None:
        self.cases = CaseRepository(self.database)

    def loop(self, clock: Clock | None = None, **policy: Any) -> LearningLoop:
        return LearningLoop(self.database, QueuePolicy(**policy), clock=clock or Clock(tick=0.001))


def open_loop_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopDatabase]:
    """A migrated database under a fresh PHI key: a new SQLite file, or a new PostgreSQL schema dropped afterwards
    (`request.param`: "sqlite" or "postgresql", from tests.conftest.DATABASES)."""
    key = generate_phi_key()
    configure_phi_cipher(PhiCipher([key]))
    try:
        if request.param == "sqlite":
            yield from _migrated(f"sqlite:///{tmp_path / 'loop.db'}", key)
        else:
            with postgres_schema(request.getfixturevalue("postgres_server"), "test_al") as url:
                yield from _migrated(url, key)
    finally:
        configure_phi_cipher(None)


def _migrated(url: str, key: str) -> Iterator[LoopDatabase]:
    database = Database(url)
    migrate_database(database)
    try:
        yield LoopDatabase(url, key, database)
    finally:
        database.dispose()


def make_case(
    cases: CaseRepository,
    *,
    pneumonia: float = 0.6,
    prediction: str | None = None,
    model_version: str = "pneumonia-v1",
    patient_id: str | None = None,
    embedding: np.ndarray | None = None,
) -> CaseRecord:
    """A stored pneumonia case whose model said P(PNEUMONIA) = `pneumonia` (threshold 0.5 unless `prediction`)."""
    probabilities = {"NORMAL": round(1 - pneumonia, 6), "PNEUMONIA": pneumonia}
    label = prediction or ("PNEUMONIA" if pneumonia >= 0.5 else "NORMAL")
    return cases.create_case(
        NewCase(
            image_sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
            image_format="PNG",
            task="pneumonia",
            prediction=label,
            confidence=probabilities[label],
            probabilities=probabilities,
            positive_probability=pneumonia,
            threshold=0.5,
            model_version=model_version,
            patient=PatientInfo(patient_id=patient_id or f"MRN-{uuid.uuid4().hex[:8]}", name=PATIENT_NAME),
            uncertain=True,
            embedding=None if embedding is None else embedding.astype(np.float32).tobytes(),
        )
    )


def queued_cases(db: LoopDatabase, loop: LearningLoop, count: int, **case_fields: Any) -> list[str]:
    ids = [make_case(db.cases, **case_fields).id for _ in range(count)]
    for case_id in ids:
        loop.enqueue(case_id, ReviewReason.UNCERTAIN)
    return ids


def claim_in_child(url: str, key: str, prefix: str, claims: int, start: Any, results: Any) -> None:
    """Child process of the claim race: its own Database on the same database, `claims` claims by distinct
    annotators once every child is ready (`start`: a barrier); sends back the case ids it got."""
    configure_phi_cipher(PhiCipher([key]))
    database = Database(url)
    loop = LearningLoop(database, QueuePolicy())
    loop.queue_state("warm-up")  # connect before the start, so that the claims themselves race
    start.wait(timeout=120)
    got = []
    for number in range(claims):
        claim = loop.claim_next(f"{prefix}-{number}")
        got.append(None if claim is None else claim.case_id)
    database.dispose()
    results.put(got)


def race_claims(db: LoopDatabase, processes: int, claims_each: int) -> list[str | None]:
    """Start `processes` spawned children that claim at the same moment; every case id they got."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    children = [
        context.Process(target=claim_in_child, args=(db.url, db.key, f"p{n}", claims_each, start, results))
        for n in range(processes)
    ]
    for child in children:
        child.start()
    got = [case_id for _ in children for case_id in results.get(timeout=120)]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    return got
