"""Retraining (issue 14): job state in the database, the head-only retrain and its promotion gate, and the runner.

Jobs: one active job at most, across processes (a UNIQUE column only active jobs fill), on SQLite and PostgreSQL;
a runner takes a job atomically, beats, and a stale job is taken over and finished by another runner.
Retrain: the shipped model, Kermany reference films, and RSNA adult films standing in for a new hospital's expert
labels; labels that agree with the truth give a promoted challenger and a moved `champion` alias, flipped labels a
rejected one whose reason names the failed comparison.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from alembic import command
from sqlalchemy import inspect

import labelled_data
from active_learning import JobAlreadyActiveError, JobLostError, JobState, RetrainingJobError, RetrainingJobs
from imaging import decode_image
from inference import Predictor, load_checkpoint
from mlops import registry, retrain
from settings import PROJECT_ROOT, Settings, get_settings
from storage import Database, migrate, migrate_database, schema_revision
from storage.migrate import acquire_migration_lock, alembic_config
from tests.conftest import DATABASES, postgres_schema, require_dataset


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


# --- the retrain and its gate ----------------------------------------------------------------------------------------

# Small enough for the default suite: 150 training + 50 validation reference films, 120 test films (features cached
# once per session), RSNA adult films as the new hospital's expert labels.
TEST_POLICY = retrain.RetrainPolicy(max_reference_images=200, max_test_images=120, threads=1)
EXPERT_FILMS_PER_CLASS = 35


@dataclass(frozen=True)
class ExpertFilm:
    path: Path
    truth: str
    patient_id: str
    pixels: np.ndarray
    embedding: np.ndarray  # under the shipped model


@pytest.fixture(scope="module")
def retrain_settings(
    tmp_path_factory: pytest.TempPathFactory, shipped_model: Path, kermany_dir: Path
) -> Iterator[Settings]:
    """Settings of a workstation serving the shipped model with its own var dir and MLflow store (module-wide: the
    feature cache and the MLflow database are made once)."""
    var_dir = tmp_path_factory.mktemp("retrain-var")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAR_DIR", str(var_dir))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{var_dir / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT", "test-retraining")
        patch.setenv("MODEL_PATH", str(shipped_model))
        patch.setenv("MODEL_ALIAS", "")
        patch.setenv("CXR_DATA_DIR", str(kermany_dir.parent))
        get_settings.cache_clear()
        yield get_settings()
        mlflow.set_tracking_uri(None)  # forget the temporary store before the environment is restored
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def serving_predictor(shipped_model: Path) -> Predictor:
    return Predictor(load_checkpoint(shipped_model), threads=1, cache_size=1, gate=False)


@pytest.fixture(scope="module")
def expert_films(serving_predictor: Predictor) -> list[ExpertFilm]:
    """RSNA adult films (a population the shipped model was not trained on), half normal, half pneumonia."""
    rsna = require_dataset("rsna-pneumonia-adult")
    pool = [
        s for s in labelled_data.load_samples(rsna, labelled_data.DataOptions()) if s.label in ("NORMAL", "PNEUMONIA")
    ]
    rng = random.Random(1)
    chosen = [
        s
        for label in ("NORMAL", "PNEUMONIA")
        for s in rng.sample([s for s in pool if s.label == label], EXPERT_FILMS_PER_CLASS)
    ]
    pixels = [decode_image(s.path.read_bytes()).pixels for s in chosen]
    predictions = serving_predictor.predict_batch(pixels, [None] * len(pixels))
    return [
        ExpertFilm(s.path, s.label, s.patient_id, image, p.embedding)
        for s, image, p in zip(chosen, pixels, predictions, strict=True)
    ]


def flipped(label: str) -> str:
    return "NORMAL" if label == "PNEUMONIA" else "PNEUMONIA"


def as_examples(films: list[ExpertFilm], *, flip: bool) -> list[retrain.ExpertExample]:
    """Expert labels: 3 films in 10 held back (split val), the truth or its opposite."""
    return [
        retrain.ExpertExample(
            str(f.path), flipped(f.truth) if flip else f.truth, "val" if i % 10 < 3 else "train", f.embedding
        )
        for i, f in enumerate(films)
    ]


def test_expert_labels_that_agree_with_the_truth_give_a_promoted_challenger(
    retrain_settings: Settings, shipped_model: Path, expert_films: list[ExpertFilm], tmp_path: Path
) -> None:
    name = "test-retrain-agree"
    result = retrain.retrain(
        shipped_model, as_examples(expert_films, flip=False), retrain_settings.cxr_data_dir, retrain_settings.var_dir,
        TEST_POLICY, registry_name=name,
    )  # fmt: skip
    assert result.promote, result.reason
    assert result.reason.startswith("promoted: test AUROC")
    assert registry.get_alias(name) == result.registry_version == 2  # v1: the serving model, registered as champion
    held = result.metrics["holdout"]
    assert held["metric"] == "auroc" and held["n"] == 21 and held["challenger"] >= held["champion"]
    challenger = load_checkpoint(registry.resolve_checkpoint(name, "champion"))
    champion = load_checkpoint(shipped_model)
    assert challenger.version == result.challenger_version != champion.version
    assert challenger.metrics["test"]["n_images"] == 120 and challenger.extra["retrained_from"] == champion.version
    # Same backbone: every weight but the head is the champion's, so its embeddings are the champion's.
    changed = [k for k in champion.state_dict if not torch.equal(champion.state_dict[k], challenger.state_dict[k])]
    assert changed == ["fc.weight", "fc.bias"]
    assert retrain.backbone_versions(challenger) == [challenger.version, champion.version]


def test_flipped_expert_labels_are_rejected_on_the_test_split_and_the_champion_stays(
    retrain_settings: Settings, shipped_model: Path, expert_films: list[ExpertFilm]
) -> None:
    name = "test-retrain-flipped"
    result = retrain.retrain(
        shipped_model, as_examples(expert_films, flip=True), retrain_settings.cxr_data_dir, retrain_settings.var_dir,
        TEST_POLICY, registry_name=name,
    )  # fmt: skip
    assert not result.promote
    assert result.reason.startswith("not promoted: worse on the fixed test split: test AUROC")
    test = result.metrics["test"]
    assert test["champion"] - test["challenger"] > TEST_POLICY.test_tolerance
    assert registry.get_alias(name) == 1 != result.registry_version  # registered, but not the champion
    assert registry.get_version(name, result.registry_version).tags["test_auroc"]  # the MLflow run logged it


def test_too_few_held_back_labels_refuse_promotion_and_say_so(
    retrain_settings: Settings, shipped_model: Path, expert_films: list[ExpertFilm]
) -> None:
    champion = load_checkpoint(shipped_model)
    reference = retrain.reference_features(
        champion, retrain_settings.cxr_data_dir, retrain_settings.var_dir, TEST_POLICY
    )
    assert reference.seconds == 0.0  # the features of this backbone came from the cache the first retrain filled
    examples = [replace(e, split="train") for e in as_examples(expert_films, flip=False)]
    examples[:4] = [replace(e, split="val") for e in examples[:4]]
    challenger = retrain.train_challenger(champion, reference, examples, TEST_POLICY, "pneumonia-test-few")
    judgement = retrain.judge(
        retrain.scorer_of(champion), challenger.scorer, reference.test, challenger.holdout, 2, TEST_POLICY
    )
    assert not judgement.promote
    assert judgement.reason.startswith("not promoted: only 4 held-back expert labels, at least 10 are needed")
    assert judgement.metrics["holdout"]["metric"] == "accuracy"  # the 4 are all NORMAL: no AUROC
    with pytest.raises(retrain.RetrainError, match="Expert labels OTHER are not classes of the model"):
        retrain.train_challenger(champion, reference, [replace(examples[0], label="OTHER")], TEST_POLICY, "x")
