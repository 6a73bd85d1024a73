"""Retraining (issue 14): job state in the database, the head-only retrain and its promotion gate, and the runner.

Jobs: one active job at most, across processes (a UNIQUE column only active jobs fill), on SQLite and PostgreSQL;
a runner takes a job atomically, beats, and a stale job is taken over and finished by another runner.
Retrain: the shipped model, Kermany reference films, and RSNA adult films standing in for a new hospital's expert
labels; labels that agree with the truth give a promoted challenger and a moved `champion` alias, flipped labels a
rejected one whose reason names the failed comparison.
"""

from __future__ import annotations

import base64
import random
import shutil
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
from active_learning import (
    JobAlreadyActiveError,
    JobLostError,
    JobRecord,
    JobState,
    LearningLoop,
    QueuePolicy,
    RetrainingJobError,
    RetrainingJobs,
    ReviewReason,
)
from active_learning.jobs import STALE_BEATS
from api.case_media import CaseMedia
from api.retraining import STEPS, Promotion, RetrainingRunner, StepListener, carry_library_over
from case_retrieval import CaseLibrary, IndexPolicy, new_entry
from imaging import decode_image
from inference import Predictor, load_checkpoint
from mlops import registry, retrain
from monitoring import AuditFilter, AuditTrail
from settings import PROJECT_ROOT, Settings, get_settings
from storage import (
    Database,
    NewCase,
    PatientInfo,
    Storage,
    init_storage,
    migrate,
    migrate_database,
    schema_revision,
)
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
PHI_TEST_KEY = base64.urlsafe_b64encode(b"cxr-workstation-retraining-tests").decode()


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
        patch.setenv("PHI_ENCRYPTION_KEY", PHI_TEST_KEY)  # fixed: patient pseudonyms, hence the held-back split
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
    assert challenger.same_backbone_versions == (challenger.version, champion.version)


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


# --- the runner ------------------------------------------------------------------------------------------------------

HEARTBEAT_S = 0.5  # a job is stale 3 s after its runner's last beat


@dataclass
class Workstation:
    """One backend's worth of the pieces the runner works with, on its own database."""

    settings: Settings
    storage: Storage
    loop: LearningLoop
    media: CaseMedia
    audit: AuditTrail
    promotions: list[Promotion]

    def runner(self, name: str, predictor: Predictor, on_step: StepListener | None = None) -> RetrainingRunner:
        return RetrainingRunner(
            self.settings,
            jobs=RetrainingJobs(self.storage.database),
            loop=self.loop,
            storage=self.storage,
            media=self.media,
            audit=self.audit,
            serving_predictor=lambda: predictor,
            on_promotion=self.promotions.append,
            policy=TEST_POLICY,
            registry_name=name,
            on_step=on_step,
        )


def open_workstation(settings: Settings) -> Workstation:
    storage = init_storage(settings)
    return Workstation(
        settings,
        storage,
        LearningLoop(storage.database, QueuePolicy.from_settings(settings)),
        CaseMedia(storage.images, storage.artifacts),
        AuditTrail.from_settings(settings, storage.database),
        [],
    )


@pytest.fixture(scope="module")
def labelled_database(
    retrain_settings: Settings,
    expert_films: list[ExpertFilm],
    serving_predictor: Predictor,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A database whose 70 RSNA cases were each read alike by two experts (made once, copied for each test)."""
    path = tmp_path_factory.mktemp("labelled") / "cxr.db"
    made = open_workstation(retrain_settings.model_copy(update={"database_url": f"sqlite:///{path}"}))
    try:
        read_by_two_experts(made, expert_films, serving_predictor.version)
        with made.storage.database.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # the copy must hold every commit
    finally:
        made.storage.close()
    return path


@pytest.fixture
def workstation(retrain_settings: Settings, labelled_database: Path, tmp_path: Path) -> Iterator[Workstation]:
    """A backend on its own copy of the labelled database, with a fast heartbeat and a 60-label trigger."""
    shutil.copyfile(labelled_database, tmp_path / "cxr.db")
    settings = retrain_settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'cxr.db'}",
            "retrain_heartbeat_s": HEARTBEAT_S,
            "retrain_min_new_labels": 60,
            "retrain_check_interval_s": 0,  # a started runner looks for work once, then only when woken
        }
    )
    opened = open_workstation(settings)
    yield opened
    opened.storage.close()


def read_by_two_experts(ws: Workstation, films: list[ExpertFilm], version: str) -> dict[str, str]:
    """Each film becomes a case analysed by `version`, queued, and read alike by two annotators (-> final label).
    Every tenth case has no stored embedding: the runner computes it from the case's kept pixels."""
    truth = {}
    for i, film in enumerate(films):
        record = ws.storage.cases.create_case(
            NewCase(
                image_sha256=ws.storage.images.put(film.path.read_bytes()),
                image_format="JPEG",
                task="pneumonia",
                prediction="PNEUMONIA",
                confidence=0.5,
                probabilities={"NORMAL": 0.5, "PNEUMONIA": 0.5},
                model_version=version,
                patient=PatientInfo(patient_id=film.patient_id),
                embedding=None if i % 10 == 9 else film.embedding.astype(np.float32).tobytes(),
            )
        )
        ws.media.keep_pixels(record.id, film.pixels)
        ws.loop.enqueue(record.id, ReviewReason.UNCERTAIN)
        truth[record.id] = film.truth
    for annotator in ("reader-1", "reader-2"):
        while (claim := ws.loop.claim_next(annotator)) is not None:
            ws.loop.submit(annotator, claim.case_id, label=truth[claim.case_id], confidence=4)
    assert ws.loop.count_final_labels() == len(films)
    return truth


def wait_until_final(ws: Workstation, job_id: str, timeout_s: float = 300) -> JobRecord:
    jobs, deadline = RetrainingJobs(ws.storage.database), time.monotonic() + timeout_s
    while (job := jobs.get(job_id)).active and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


def retraining_steps(ws: Workstation, job_id: str) -> list[str]:
    events = ws.audit.events(AuditFilter(action="retraining"), limit=100)
    return [event.detail["step"] for event in reversed(events) if event.target_id == job_id]


def test_new_expert_labels_start_a_job_that_ends_with_the_challenger_served(
    workstation: Workstation, expert_films: list[ExpertFilm], serving_predictor: Predictor, tmp_path: Path
) -> None:
    name = "test-runner-promoted"
    runner = workstation.runner(name, serving_predictor)

    job = runner.run_once()  # 70 new final labels >= RETRAIN_MIN_NEW_LABELS (60): a job starts and runs
    assert job is not None and job.trigger == "labels" and job.note == "70 new final expert labels (threshold 60)"
    assert job.state == JobState.PROMOTED, job.reason or job.error
    assert job.reason is not None and job.reason.startswith("promoted: test AUROC")
    assert job.champion_version == serving_predictor.version
    assert job.challenger_version is not None and job.challenger_version.endswith(job.id[:8])
    held_back = len(workstation.loop.final_labels(split="val"))
    assert job.progress["labels"] == {**job.progress["labels"], "train": 70 - held_back, "val": held_back}
    assert job.metrics["holdout"]["n"] == held_back >= 10 and job.mlflow_run_id
    assert retraining_steps(workstation, job.id) == ["queued", "taken", *STEPS, "promoted"]

    assert registry.get_alias(name) == 2
    tags = registry.get_version(name, 2).tags  # the registry keeps who moved the alias and why
    assert tags["promoted_by"] == f"retraining job {job.id}" and tags["promotion_reason"] == job.reason[:500]
    [promotion] = workstation.promotions
    assert (promotion.job_id, promotion.champion_version) == (job.id, serving_predictor.version)
    challenger = load_checkpoint(promotion.checkpoint_path)
    assert challenger.version == job.challenger_version == promotion.challenger_version

    # The similar-case library of the champion serves the challenger as it is: same backbone, same vectors.
    folder = tmp_path / "library"
    library = CaseLibrary.create(folder, serving_predictor.version, len(expert_films[0].embedding))
    entries = [
        new_entry(f"ref-{i}", film.truth, "reference", confirmed=True, dataset="rsna", reference_file=film.path.name)
        for i, film in enumerate(expert_films[:6])
    ]
    library.add_many(
        entries, np.stack([f.embedding for f in expert_films[:6]]), model_version=serving_predictor.version
    )
    library.save()
    carried = carry_library_over(folder, challenger, IndexPolicy())
    assert carried is not None and carried.model_version == challenger.version and len(carried) == 6
    reopened = CaseLibrary.load(folder, model_version=challenger.version)
    query = Predictor(challenger, threads=1, cache_size=1, gate=False).predict(expert_films[3].pixels).embedding
    assert reopened.search(query, 1, model_version=challenger.version)[0].entry.entry_id == "ref-3"

    assert runner.run_once() is None  # no new labels since that job: nothing starts
    assert RetrainingJobs(workstation.storage.database).list().total == 1


def test_a_job_with_too_few_held_back_labels_ends_after_counting_them(
    workstation: Workstation, serving_predictor: Predictor
) -> None:
    runner = workstation.runner("test-runner-too-few", serving_predictor)
    runner.policy = replace(TEST_POLICY, min_holdout_labels=1000)
    job = runner.run_once()
    assert job is not None and job.state == JobState.REJECTED
    held_back = len(workstation.loop.final_labels(split="val"))
    assert job.reason == (
        f"not promoted: only {held_back} held-back expert labels, at least 1000 are needed to show a challenger is "
        "not worse on them (stopped before training)"
    )
    assert job.steps_done == ["champion", "labels"] and job.challenger_version is None
    assert retraining_steps(workstation, job.id) == ["queued", "taken", "champion", "labels", "rejected"]


def test_a_runner_stopped_mid_job_is_taken_over_after_a_restart_and_the_job_finishes(
    workstation: Workstation, expert_films: list[ExpertFilm], serving_predictor: Predictor
) -> None:
    name = "test-runner-takeover"
    job = RetrainingJobs(workstation.storage.database).start("admin", "test-admin")

    def stop_after_registration(current: JobRecord, step: str) -> None:
        if step == "registered":
            first.stop()  # as a backend shut down between two steps

    first = workstation.runner(name, serving_predictor, on_step=stop_after_registration)
    left = first.run_once()
    assert left is not None and left.state == JobState.RUNNING and left.attempts == 1
    assert left.steps_done == ["champion", "labels", "features", "challenger", "registered"]
    assert registry.get_alias(name) == 1  # registered as v2, not yet judged into place

    restarted = open_workstation(workstation.settings)  # a new backend process on the same database
    try:
        second = restarted.runner(name, serving_predictor)
        assert second.run_once() is None  # the first runner's last beat is fresh: not taken yet
        time.sleep(STALE_BEATS * HEARTBEAT_S + 0.3)
        second.start().wake()  # the backend's thread, woken as the retraining route does
        done = wait_until_final(restarted, job.id)
        second.stop()
        assert done.state == JobState.PROMOTED, done.error
        assert done.attempts == 2 and done.steps_done == list(STEPS)
        taken = [e.detail for e in restarted.audit.events(AuditFilter(action="retraining")) if e.target_id == job.id]
        assert [d["resuming_after"] for d in taken if d["step"] == "taken"] == [["registered"], []]
        assert [v.version for v in registry.list_versions(name)] == [1, 2]  # the challenger is registered once
        assert done.challenger_version == left.challenger_version and done.mlflow_run_id == left.mlflow_run_id
        assert registry.get_alias(name) == 2 and len(restarted.promotions) == 1 and not workstation.promotions
    finally:
        restarted.storage.close()


def test_a_job_that_cannot_run_fails_with_the_error_and_frees_the_slot(
    workstation: Workstation, serving_predictor: Predictor, tmp_path: Path
) -> None:
    settings = workstation.settings.model_copy(update={"cxr_data_dir": tmp_path / "no-datasets"})
    broken = replace(workstation, settings=settings)
    jobs = RetrainingJobs(workstation.storage.database)
    job = jobs.start("admin", "test-admin")
    failed = broken.runner("test-runner-failed", serving_predictor).run_once()
    assert failed is not None and failed.id == job.id and failed.state == JobState.FAILED
    assert failed.error is not None and failed.error.startswith("features: RetrainError: The training data of")
    assert "no-datasets/kermany-pneumonia is absent" in failed.error
    assert retraining_steps(workstation, job.id) == ["taken", "champion", "labels", "failed"]
    assert jobs.start("admin", "test-admin").state == JobState.QUEUED  # a failed job does not block the next
