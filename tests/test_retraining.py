"""Retraining (issue 14): job state in the database, the head-only retrain and its promotion gate, and the runner.

Jobs: one active job at most, across processes (a UNIQUE column only active jobs fill), on SQLite and PostgreSQL;
a runner takes a job atomically, beats, and a stale job is taken over and finished by another runner.
Retrain: the shipped model, Kermany reference films, and RSNA adult films standing in for a new hospital's expert
labels; labels that agree with the truth give a promoted challenger and a moved `champion` alias, flipped labels a
rejected one whose reason names the failed comparison.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from active_learning import JobAlreadyActiveError, JobLostError, JobState, RetrainingJobError, RetrainingJobs
from settings import PROJECT_ROOT
from storage import Database, migrate, migrate_database, schema_revision
from storage.migrate import acquire_migration_lock, alembic_config
from tests.conftest import DATABASES, postgres_schema


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        migrate(url)
        yield url
        return
    with postgres_schema(request.getfixturevalue("postgres_server"), "test_retraining") as url:
        migrate(url)
        yield url


@pytest.fixture
def jobs(database_url: str) -> Iterator[RetrainingJobs]:
    database = Database(database_url)
    yield RetrainingJobs(database)
    database.dispose()


# --- jobs ------------------------------------------------------------------------------------------------------------


def test_a_second_job_is_refused_while_one_is_active_and_allowed_once_it_is_final(jobs: RetrainingJobs) -> None:
    first = jobs.start("admin", "ada", note="new site data")
    assert (first.state, first.trigger, first.requested_by) == (JobState.QUEUED, "admin", "ada")
    with pytest.raises(JobAlreadyActiveError, match=f"job {first.id}, queued"):
        jobs.start("labels", None)
    with pytest.raises(RetrainingJobError, match="Unknown retraining trigger 'cron'"):
        jobs.start("cron", None)

    taken = jobs.claim_due("runner-1", heartbeat_s=10)
    assert taken is not None and (taken.id, taken.state, taken.owner, taken.attempts) == (
        first.id,
        "running",
        "runner-1",
        1,
    )
    assert jobs.claim_due("runner-2", heartbeat_s=10) is None  # it is beating: nobody else takes it
    with pytest.raises(JobAlreadyActiveError):
        jobs.start("labels", None)
    done = jobs.finish(first.id, "runner-1", JobState.REJECTED, reason="worse on the fixed test split")
    assert done.to_dict()["state"] == "rejected" and done.reason == "worse on the fixed test split"
    assert done.finished_at is not None and not done.active

    second = jobs.start("labels", None)
    assert jobs.active() == second
    assert [job.id for job in jobs.list().jobs] == [second.id, first.id] and jobs.list().total == 2


def test_two_processes_starting_a_job_at_once_make_exactly_one(database_url: str) -> None:
    # Each child imports everything, says ready, waits for "go": both inserts race.
    code = (
        "import sys\n"
        "from active_learning import JobAlreadyActiveError, RetrainingJobs\n"
        "from storage import Database\n"
        f"jobs = RetrainingJobs(Database({database_url!r}))\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "try:\n"
        "    print('started', jobs.start('labels', None).id)\n"
        "except JobAlreadyActiveError:\n"
        "    print('refused')\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    answers = []
    for child in children:
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
        answers.append(stdout.split()[0])
    assert sorted(answers) == ["refused", "started"]
    database = Database(database_url)
    try:
        assert RetrainingJobs(database).list().total == 1
    finally:
        database.dispose()


def test_a_job_whose_runner_stopped_beating_is_taken_over_and_the_old_runner_is_told(jobs: RetrainingJobs) -> None:
    job = jobs.start("admin", "ada")
    assert jobs.claim_due("runner-1", heartbeat_s=0.05) is not None
    jobs.record_step(job.id, "runner-1", "champion", path="champion.pt", registry_version=1)
    assert jobs.claim_due("runner-2", heartbeat_s=0.05) is None  # it just beat
    time.sleep(0.5)  # more than 6 beats of 0.05 s without a word from runner-1

    taken = jobs.claim_due("runner-2", heartbeat_s=0.05)
    assert taken is not None and (taken.owner, taken.attempts) == ("runner-2", 2)
    assert taken.steps_done == ["champion"] and taken.progress["champion"]["registry_version"] == 1
    with pytest.raises(JobLostError, match="no longer run by runner-1"):
        jobs.heartbeat(job.id, "runner-1")
    with pytest.raises(JobLostError):
        jobs.finish(job.id, "runner-1", JobState.PROMOTED, reason="stale runner")
    assert jobs.finish(job.id, "runner-2", JobState.FAILED, error="no data").error == "no data"


def test_the_jobs_revision_downgrades_and_upgrades_again(database_url: str) -> None:
    database = Database(database_url)
    try:
        RetrainingJobs(database).start("admin", "ada")
        with database.write_connection() as connection:
            acquire_migration_lock(connection)
            command.downgrade(alembic_config(connection), "0007_learning_loop")
        assert schema_revision(database) == "0007_learning_loop"
        assert "retraining_jobs" not in inspect(database.engine).get_table_names()
        migrate_database(database)
        assert RetrainingJobs(database).list().total == 0
        assert RetrainingJobs(database).start("labels", None).state == JobState.QUEUED
    finally:
        database.dispose()
