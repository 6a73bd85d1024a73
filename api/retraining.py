"""The retraining runner: a daemon thread of the backend that starts retraining jobs and runs them.

Every RETRAIN_CHECK_INTERVAL_S (and whenever `wake()` is called, e.g. right after an admin queued a job) it
- queues a job with trigger "labels" once RETRAIN_MIN_NEW_LABELS final expert labels exist since the last job
  was created (0: only admins start jobs);
- takes the due job (queued, or running with a heartbeat older than 6 x RETRAIN_HEARTBEAT_S: its runner died,
  e.g. in a backend restart) and runs it, beating while it works.

A job is a fixed list of steps (`STEPS`), each recorded in the job's progress with what the later steps need, so a
runner that takes a job over resumes after the last completed step; the steps that touch MLflow (registration,
the alias move) are therefore done once. Every step is audited (action "retraining", the job id as target).

The ML is `mlops.retrain`. The expert labels are the learning loop's final labels whose label is a class of the
model (OTHER / UNGRADABLE teach nothing here), as of the moment the job read them; their features are the cases'
stored embeddings when the case was analysed by a model with the champion's backbone, else one forward pass of the
champion over the case's kept pixels. On promotion the runner hands a `Promotion` to the callback it was given:
the backend reloads its serving model from `Promotion.checkpoint_path` and carries the similar-case library over
(`carry_library_over`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from active_learning import (
    FinalLabel,
    JobAlreadyActiveError,
    JobLostError,
    JobRecord,
    JobState,
    LearningLoop,
    RetrainingJobs,
)
from api.case_media import CaseMedia
from case_retrieval import CaseLibrary, IndexPolicy
from inference import ModelCheckpoint, Predictor, load_checkpoint
from mlops import retrain
from mlops.registry import resolve_checkpoint, resolve_serving_model
from monitoring import AuditEntry, AuditTrail
from settings import Settings
from storage import CaseRecord, Storage, utcnow

logger = logging.getLogger("cxr.retraining")

STEPS = ("champion", "labels", "features", "challenger", "registered", "decided", "handed_over")
RUNNER_NAME = "retraining-runner"  # the audit trail's actor for what the runner does


@dataclass(frozen=True)
class Promotion:
    """A challenger that became the champion: what the backend must now serve."""

    job_id: str
    registry_name: str
    registry_version: int
    champion_version: str  # the model it replaced
    challenger_version: str
    checkpoint_path: Path


PromotionHandler = Callable[[Promotion], None]
StepListener = Callable[[JobRecord, str], None]


@dataclass
class _Work:
    """What the steps of one job hand each other (rebuilt from the job's progress by a runner that resumes)."""

    job: JobRecord
    champion: retrain.Champion | None = None
    examples: list[retrain.ExpertExample] = field(default_factory=list)
    reference: retrain.Reference | None = None
    challenger_path: Path | None = None
    judgement: retrain.Judgement | None = None
    registry_version: int | None = None


class RetrainingRunner:
    """Construct once per backend process; `start()` in the lifespan, `stop()` at shutdown."""

    def __init__(
        self,
        settings: Settings,
        *,
        jobs: RetrainingJobs,
        loop: LearningLoop,
        storage: Storage,
        media: CaseMedia,
        audit: AuditTrail,
        serving_predictor: Callable[[], Predictor | None],
        on_promotion: PromotionHandler,
        policy: retrain.RetrainPolicy | None = None,
        registry_name: str | None = None,
        on_step: StepListener | None = None,
    ) -> None:
        self.settings, self.jobs, self.loop, self.storage, self.media, self.audit = (
            settings, jobs, loop, storage, media, audit
        )  # fmt: skip
        self.serving_predictor, self.on_promotion, self.on_step = serving_predictor, on_promotion, on_step
        self.policy = policy or retrain.RetrainPolicy.from_settings(settings)
        self.registry_name = registry_name
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    # --- the thread ------------------------------------------------------------------------------------------------

    def start(self) -> RetrainingRunner:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="retraining-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step; a job left running is taken over once its heartbeat is stale."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look for work now instead of at the next interval."""
        self._wake.set()

    def _loop(self) -> None:
        interval = self.settings.retrain_check_interval_s or None  # 0: only when woken
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database away for a moment, a storage error: the thread lives on to the next check
                logger.exception("retraining check failed")
            self._wake.wait(interval)
            self._wake.clear()

    def run_once(self) -> JobRecord | None:
        """One check: queue a job if enough new labels exist, then run the due job, if any (returns it, final)."""
        self.check_trigger()
        if self._stop.is_set():
            return None
        job = self.jobs.claim_due(self.owner, self.settings.retrain_heartbeat_s)
        return self.run(job) if job is not None else None

    def check_trigger(self) -> JobRecord | None:
        """Queue a "labels" job when RETRAIN_MIN_NEW_LABELS final labels exist since the last job was created."""
        needed = self.settings.retrain_min_new_labels
        if needed <= 0 or self.jobs.active() is not None:
            return None
        latest = self.jobs.latest()
        count = self.loop.count_final_labels(since=latest.created_at if latest else None)
        if count < needed:
            return None
        try:
            job = self.jobs.start("labels", None, note=f"{count} new final expert labels (threshold {needed})")
        except JobAlreadyActiveError:  # another process queued one in the meantime
            return None
        self._audit(job, "queued", {"trigger": "labels", "new_labels": count})
        return job

    # --- one job ---------------------------------------------------------------------------------------------------

    def run(self, job: JobRecord) -> JobRecord:
        """Run (or resume) a job this runner has taken; returns it in a final state, or as it was left when this
        runner was stopped or lost the job."""
        work = _Work(job)
        self._audit(job, "taken", {"attempt": job.attempts, "resuming_after": job.steps_done[-1:]})
        with self._beating(job.id):
            try:
                for step in STEPS:
                    if self._stop.is_set():
                        return self.jobs.get(job.id)
                    self._run_step(work, step)
                    if step == "labels" and (too_few := self._too_few_held_back(work)) is not None:
                        return self._finish(work, JobState.REJECTED, too_few)
                state = JobState.PROMOTED if work.judgement and work.judgement.promote else JobState.REJECTED
                return self._finish(work, state, work.job.progress.get("decided", {}).get("reason", ""))
            except JobLostError:
                logger.warning("retraining job %s was taken over by another runner", job.id)
                return self.jobs.get(job.id)
            except Exception as exc:  # mlflow, torch, files, datasets: any failure ends the job as failed, named
                return self._fail(work, exc)

    def _finish(self, work: _Work, state: JobState, reason: str) -> JobRecord:
        final = self.jobs.finish(work.job.id, self.owner, state, reason=reason)
        self._audit(final, state.value, {"reason": reason})
        return final

    def _too_few_held_back(self, work: _Work) -> str | None:
        """The gate's refusal, known once the labels are counted: no challenger could be promoted, so the minutes
        of reference features and training are not spent."""
        held_back = int(work.job.progress["labels"]["val"])
        if held_back >= self.policy.min_holdout_labels:
            return None
        return (
            f"not promoted: only {held_back} held-back expert labels, at least {self.policy.min_holdout_labels} are "
            "needed to show a challenger is not worse on them (stopped before training)"
        )

    def _run_step(self, work: _Work, step: str) -> None:
        done = step in work.job.steps_done
        facts = getattr(self, f"_step_{step}")(work, work.job.progress.get(step) if done else None)
        if not done:
            work.job = self.jobs.record_step(work.job.id, self.owner, step, **facts)
            self._audit(work.job, step, facts)
            if self.on_step is not None:
                self.on_step(work.job, step)

    def _fail(self, work: _Work, exc: Exception) -> JobRecord:
        step = next((s for s in STEPS if s not in work.job.steps_done), STEPS[-1])
        error = f"{step}: {type(exc).__name__}: {exc}"
        logger.exception("retraining job %s failed", work.job.id)
        try:
            final = self.jobs.finish(work.job.id, self.owner, JobState.FAILED, error=error[:2000])
        except JobLostError:
            return self.jobs.get(work.job.id)
        self._audit(final, "failed", {"error": error[:500]}, outcome="failed")
        return final

    @contextmanager
    def _beating(self, job_id: str) -> Iterator[None]:
        """Beat every RETRAIN_HEARTBEAT_S in the background while the job's steps run."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.settings.retrain_heartbeat_s):
                try:
                    self.jobs.heartbeat(job_id, self.owner)
                except JobLostError:
                    return  # the next recorded step finds out and stops
                except SQLAlchemyError as exc:
                    logger.warning("heartbeat of retraining job %s failed: %s", job_id, exc)

        thread = threading.Thread(target=beat, name=f"retraining-heartbeat-{job_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    # --- the steps: with facts=None do the work and return what to record; else rebuild the state from the facts -

    def _step_champion(self, work: _Work, facts: dict[str, Any] | None) -> dict[str, Any]:
        if facts is None:
            work.champion = retrain.resolve_champion(resolve_serving_model(self.settings), self.registry_name)
            self.jobs.set_versions(work.job.id, self.owner, champion_version=work.champion.checkpoint.version)
        else:
            work.champion = retrain.champion_at(facts["name"], int(facts["registry_version"]))
        champion = work.champion
        return {
            "name": champion.name,
            "registry_version": champion.registry_version,
            "version": champion.checkpoint.version,
        }

    def _step_labels(self, work: _Work, facts: dict[str, Any] | None) -> dict[str, Any]:
        until = utcnow() if facts is None else datetime.fromisoformat(facts["until"])
        labels = [label for label in self.loop.final_labels() if label.finalized_at <= until]
        checkpoint = self._champion(work).checkpoint
        usable = [label for label in labels if label.label in checkpoint.class_names]
        work.examples = self.expert_examples(usable, checkpoint)
        splits = [example.split for example in work.examples]
        return {
            "until": until.isoformat(),
            "train": splits.count("train"),
            "val": splits.count("val"),
            "not_a_model_class": len(labels) - len(usable),
        }

    def _step_features(self, work: _Work, facts: dict[str, Any] | None) -> dict[str, Any]:
        checkpoint = self._champion(work).checkpoint
        if facts is None or "challenger" not in work.job.steps_done:  # a later step needs them: from the cache
            work.reference = retrain.reference_features(
                checkpoint, self.settings.cxr_data_dir, self.settings.var_dir, self.policy
            )
        reference = work.reference
        if reference is None:
            return facts or {}
        return {
            "reference_films": len(reference.train),
            "validation_films": len(reference.validation),
            "test_films": len(reference.test),
            "seconds": reference.seconds,
        }

    def _step_challenger(self, work: _Work, facts: dict[str, Any] | None) -> dict[str, Any]:
        if facts is not None:
            work.challenger_path = Path(facts["path"])
            gate = load_checkpoint(work.challenger_path).metrics["promotion_gate"]
            work.judgement = retrain.Judgement(bool(gate["promote"]), str(gate["reason"]), dict(gate["metrics"]))
            return facts
        champion, reference = self._champion(work), work.reference
        assert reference is not None  # the features step ran before
        version = retrain.new_version(champion.checkpoint, suffix=work.job.id[:8])
        challenger = retrain.train_challenger(champion.checkpoint, reference, work.examples, self.policy, version)
        classes = len(champion.checkpoint.class_names)
        work.judgement = retrain.judge(
            retrain.scorer_of(champion.checkpoint), challenger.scorer, reference.test, challenger.holdout, classes,
            self.policy,
        )  # fmt: skip
        work.challenger_path = self.settings.var_dir / "retraining" / "challengers" / f"{version}.pt"
        retrain.write_challenger(challenger, reference, work.judgement, work.challenger_path)
        self.jobs.set_versions(
            work.job.id, self.owner, challenger_version=version, metrics=_json_ready(work.judgement.metrics)
        )
        return {"path": str(work.challenger_path), "version": version, "promote": work.judgement.promote}

    def _step_registered(self, work: _Work, facts: dict[str, Any] | None) -> dict[str, Any]:
        if facts is None:
            assert work.challenger_path is not None and work.judgement is not None
            version, run_id = retrain.register_challenger(
                work.challenger_path, self._champion(work).name, work.judgement
            )
            self.jobs.set_versions(work.job.id, self.owner, mlflow_run_id=run_id)
            facts = {"registry_version": version, "run_id": run_id}
        work.registry_version = int(facts["registry_version"])
        return facts

    def _step_decided(self, work: _Work, facts: dict[str, Any] | None) -> dict[str, Any]:
        judgement, champion = work.judgement, self._champion(work)
        assert judgement is not None and work.registry_version is not None
        if facts is not None:
            work.judgement = retrain.Judgement(bool(facts["promote"]), str(facts["reason"]), judgement.metrics)
            return facts
        if judgement.promote:
            try:
                retrain.promote(
                    champion.name,
                    work.registry_version,
                    champion.registry_version,
                    judgement.reason,
                    by=f"retraining job {work.job.id}",
                )
            except (
                retrain.RetrainError
            ) as exc:  # the champion moved meanwhile: this challenger was judged against another
                work.judgement = retrain.Judgement(False, f"not promoted: {exc}", judgement.metrics)
        return {"promote": work.judgement.promote, "reason": work.judgement.reason}

    def _step_handed_over(self, work: _Work, facts: dict[str, Any] | None) -> dict[str, Any]:
        if facts is not None or work.judgement is None or not work.judgement.promote:
            return facts or {"promotion": False}
        champion = self._champion(work)
        assert work.registry_version is not None and work.challenger_path is not None
        promotion = Promotion(
            job_id=work.job.id,
            registry_name=champion.name,
            registry_version=work.registry_version,
            champion_version=champion.checkpoint.version,
            challenger_version=str(work.job.challenger_version),
            checkpoint_path=resolve_checkpoint(champion.name, work.registry_version),
        )
        self.on_promotion(promotion)
        return {"promotion": True, "serving": promotion.challenger_version}

    @staticmethod
    def _champion(work: _Work) -> retrain.Champion:
        assert work.champion is not None  # the champion step always runs (or is rebuilt) first
        return work.champion

    # --- expert labels as features ---------------------------------------------------------------------------------

    def expert_examples(self, labels: Sequence[FinalLabel], champion: ModelCheckpoint) -> list[retrain.ExpertExample]:
        """Each label with its case's embedding under the champion's backbone (stored, or computed once now)."""
        same_backbone = set(champion.same_backbone_versions)
        records = [self.storage.cases.get_case(label.case_id) for label in labels]
        missing = [r for r in records if r.embedding is None or r.model_version not in same_backbone]
        computed = dict(zip([r.id for r in missing], self._embed(missing, champion), strict=True))
        return [
            retrain.ExpertExample(
                label.case_id,
                label.label,
                label.split,
                computed[record.id] if record.id in computed else np.frombuffer(record.embedding or b"", np.float32),
            )
            for label, record in zip(labels, records, strict=True)
        ]

    def _embed(self, records: Sequence[CaseRecord], champion: ModelCheckpoint) -> list[np.ndarray]:
        if not records:
            return []
        serving = self.serving_predictor()
        same = serving is not None and serving.version in champion.same_backbone_versions
        predictor = serving if same and serving is not None else Predictor(champion, self.policy.threads, 1, gate=False)
        pixels = [self.media.pixels(record) for record in records]
        return [p.embedding for p in predictor.predict_batch(pixels, [None] * len(pixels))]

    # --- audit -----------------------------------------------------------------------------------------------------

    def _audit(self, job: JobRecord, step: str, detail: dict[str, Any], outcome: str = "ok") -> None:
        entry = AuditEntry(
            "retraining",
            outcome=outcome,
            actor_name=RUNNER_NAME,
            target_id=job.id,
            model_version=job.challenger_version or job.champion_version,
            detail={"job_id": job.id, "step": step, "trigger": job.trigger, "runner": self.owner, **detail},
        )
        try:
            self.audit.record(entry)
        except SQLAlchemyError as exc:  # the audit must not end a retraining; the job's own row keeps its state
            logger.error("audit of retraining job %s (%s) failed: %s", job.id, step, exc)


def _json_ready(value: Any) -> Any:
    """NaN (undefined AUROC) -> None, so the job row's JSON stays strict."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# --- what the backend does on a promotion ----------------------------------------------------------------------------


def carry_library_over(directory: Path, checkpoint: ModelCheckpoint, policy: IndexPolicy) -> CaseLibrary | None:
    """The similar-case library published for `checkpoint`'s version without re-embedding, when it was built by a
    model with the same backbone (a head-only retrain); None when it was not (then rebuild it)."""
    library = CaseLibrary.load(directory, policy=policy)
    if library.model_version == checkpoint.version:
        return library
    if library.model_version not in checkpoint.same_backbone_versions:
        return None
    carried = library.carried_over(checkpoint.version)
    carried.save()
    return carried
