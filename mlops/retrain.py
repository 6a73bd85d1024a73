"""Retraining from expert labels: a head-only fine-tune of the champion, judged before it may replace it.

Why the head only: the backbone stays the champion's, so a retrain costs seconds on 2 CPU cores once the features of
the reference films are cached, every stored case embedding (and the similar-case library) stays valid for the
challenger, and a few dozen expert labels cannot wreck features learned from thousands of films.

The pieces, each a function the runner (api/retraining.py) calls as one recorded step:
- `resolve_champion`: the registry's `champion` of `cxr-<task>`; when none is set, the serving checkpoint is
  registered and becomes it (so a promotion can be rolled back to it).
- `reference_features`: pooled embeddings (the classifier head's input, what `Predictor` returns) of
  * the training data: a class- (and population-) balanced, seeded sample of at most 3/4 of
    RETRAIN_MAX_REFERENCE_IMAGES films of the train part of the datasets the checkpoint names;
  * the frozen validation part: the champion's own validation split (reproduced from its stored split settings,
    patient-level and seeded, so it is the same films at every retrain), sampled to the remaining quarter;
  * the fixed test split (the official list `mlops.evaluate` scores, duplicates restored).
  Cached under VAR_DIR/retraining/features/<backbone sha256>/, so the second retrain, and every retrain of a
  challenger sharing that backbone, reads them from disk.
- `fine_tune`: a new linear head starting from the champion's, class-balanced within the reference films and within
  the new expert labels (split "train"), which together carry EXPERT_SHARE of the loss, an L2 pull towards the
  champion's weights, a few hundred full-batch AdamW steps; then temperature and threshold are fitted again on the
  frozen validation part (mlops.calibration, the champion's sensitivity rule). The held-back expert labels (split
  "val") never fit anything: they only judge.
- `judge`: champion and challenger on the fixed test split (AUROC; the challenger may lose at most
  RETRAIN_TEST_TOLERANCE) and on the held-back expert labels (AUROC when both classes are present, else accuracy
  at each model's own threshold; the challenger must not be worse). Fewer than MIN_HOLDOUT_LABELS held-back labels:
  no promotion, with that reason.
- `write_challenger`, `register_challenger` (an MLflow run + a registry version), `promote` (moves `champion`).
`retrain(...)` runs them all (the bench and tests); `python -m mlops.retrain` is not offered: jobs run in the backend.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import labelled_data as datasets
from inference import CheckpointError, ModelCheckpoint, Predictor, load_checkpoint, save_checkpoint
from mlops import registry
from mlops.calibration import choose_threshold, fit_temperature, softmax_probs
from mlops.evaluate import evaluation_samples, task_options
from mlops.metrics import accuracy, auroc, compute_all
from mlops.serving_path import embed_samples
from mlops.validate import validate_dataset

MIN_HOLDOUT_LABELS = 10  # fewer held-back expert labels cannot show that a challenger is not worse
EXPERT_SHARE = 0.5  # share of the fine-tune loss carried by the new expert labels (when there are any)
VALIDATION_SHARE = 0.25  # share of RETRAIN_MAX_REFERENCE_IMAGES spent on the frozen validation part
EXPERT_SPLITS = ("train", "val")
FEATURE_CACHE = "retraining/features"
RETRAINING_ACTOR = "retraining"  # who moved the alias, in the registry's history


class RetrainError(ValueError):
    """A retraining cannot run as asked (no training data, a non-linear head, unknown labels); says why."""


@dataclass(frozen=True)
class RetrainPolicy:
    test_tolerance: float = 0.005  # AUROC the challenger may lose on the fixed test split
    max_reference_images: int = 2000  # training-data and validation films whose features are used
    max_test_images: int = 0  # 0: the whole fixed test split; >0: a balanced, seeded subset (tests, benches)
    min_holdout_labels: int = MIN_HOLDOUT_LABELS
    steps: int = 300
    lr: float = 3e-4
    # Weight of the L2 pull of the head towards the champion's. Measured on the shipped model with 70 RSNA adult
    # labels (30 held back), 1500 + 451 reference films and the 624-film test split: 0.01 gains 0.040 held-back AUROC
    # but loses 0.008 test AUROC (rejected), 0.05 gains 0.013 and keeps the test AUROC (-0.0004), 0.1 gains 0.009.
    anchor: float = 0.05
    expert_share: float = EXPERT_SHARE
    seed: int = 0
    threads: int = 2

    @classmethod
    def from_settings(cls, settings: Any) -> RetrainPolicy:
        return cls(
            test_tolerance=settings.retrain_test_tolerance,
            max_reference_images=settings.retrain_max_reference_images,
            max_test_images=settings.retrain_max_test_images,
            threads=settings.torch_threads,
        )


@dataclass(frozen=True)
class FeatureSet:
    """Embeddings of labelled films: `keys` name them (file paths or case ids), `labels` are class indices."""

    keys: tuple[str, ...]
    embeddings: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.keys)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(self.keys), embeddings=self.embeddings, labels=self.labels)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        with np.load(path) as data:
            return cls(tuple(str(k) for k in data["keys"]), data["embeddings"], data["labels"])

    @classmethod
    def concat(cls, parts: Sequence[FeatureSet], dim: int) -> FeatureSet:
        if not parts:
            return cls((), np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int64))
        return cls(
            tuple(k for p in parts for k in p.keys),
            np.concatenate([p.embeddings for p in parts]).astype(np.float32),
            np.concatenate([p.labels for p in parts]).astype(np.int64),
        )


@dataclass(frozen=True)
class ExpertExample:
    """One final expert label: the case, its label (a class of the model), its split and the case's embedding."""

    key: str
    label: str
    split: str  # "train" (fits the head) or "val" (held back: judges the challenger)
    embedding: np.ndarray


@dataclass(frozen=True)
class Reference:
    train: FeatureSet
    validation: FeatureSet
    test: FeatureSet
    test_fingerprint: str  # mlops.validate fingerprint of the test films (as mlops.evaluate stores it)
    test_description: str
    backbone: str  # sha256 of the backbone weights the features come from
    seconds: float  # time spent computing (0 when every part came from the cache)


@dataclass(frozen=True)
class Champion:
    name: str  # registered model name
    registry_version: int
    path: Path
    checkpoint: ModelCheckpoint


@dataclass(frozen=True)
class Head:
    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings.astype(np.float64) @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)


@dataclass(frozen=True)
class Judgement:
    promote: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reason": self.reason, "metrics": self.metrics}


# --- the champion and its head ---------------------------------------------------------------------------------------


def resolve_champion(serving_checkpoint: Path, name: str | None = None) -> Champion:
    """The registry's `champion` of `name` (default cxr-<task>); registers `serving_checkpoint` as it when unset."""
    name = name or registry.default_model_name(_load(serving_checkpoint).task)
    try:
        version = registry.get_alias(name)
    except registry.RegistryError:  # no registered model of that name yet
        version = None
    if version is None:
        version = registry.register_checkpoint_file(serving_checkpoint, name, run_name="register-serving-champion")
        registry.set_alias(
            name, version, by=RETRAINING_ACTOR, reason="the serving model, the first champion to retrain"
        )
    return champion_at(name, version)


def champion_at(name: str, version: int) -> Champion:
    """Version `version` of `name` as the champion of a retraining (a runner resuming a job names it)."""
    path = registry.resolve_checkpoint(name, version)
    return Champion(name, version, path, _load(path))


def _load(path: Path) -> ModelCheckpoint:
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise RetrainError(str(exc)) from exc


def head_keys(checkpoint: ModelCheckpoint) -> tuple[str, str]:
    """State-dict keys of the classifier head's weight and bias (timm names the head module in its config)."""
    model = checkpoint.build_model()
    module_name = str(getattr(model, "pretrained_cfg", {}).get("classifier", ""))
    head = dict(model.named_modules()).get(module_name)
    if not isinstance(head, torch.nn.Linear):
        raise RetrainError(f"{checkpoint.architecture} has no linear classifier head; a head-only fine-tune needs one.")
    return f"{module_name}.weight", f"{module_name}.bias"


def head_of(checkpoint: ModelCheckpoint) -> Head:
    weight_key, bias_key = head_keys(checkpoint)
    state = checkpoint.state_dict
    return Head(state[weight_key].detach().cpu().numpy(), state[bias_key].detach().cpu().numpy())


def backbone_fingerprint(checkpoint: ModelCheckpoint) -> str:
    """sha256 over every weight but the head's: equal for a champion and each challenger retrained from it."""
    skip = set(head_keys(checkpoint))
    digest = hashlib.sha256(checkpoint.architecture.encode())
    digest.update(json.dumps(checkpoint.preprocess.to_dict(), sort_keys=True).encode())
    for key in sorted(k for k in checkpoint.state_dict if k not in skip):
        digest.update(key.encode())
        digest.update(checkpoint.state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --- features of the reference films ---------------------------------------------------------------------------------


def training_sources(checkpoint: ModelCheckpoint, data_root: Path) -> list[datasets.DataSource]:
    """The datasets the checkpoint was trained on, found by folder name under `data_root` (CXR_DATA_DIR)."""
    stored = checkpoint.extra.get("sources") or []
    if not stored:  # single-dataset checkpoints (and older ones) name their folder in the training configuration
        folder = checkpoint.extra.get("train_config", {}).get("data")
        if not isinstance(folder, str) or not folder:
            raise RetrainError(f"Checkpoint {checkpoint.version} does not name the data it was trained on.")
        name = Path(folder).name
        stored = [{"name": name, "population": name, "options": checkpoint.extra.get("data_options")}]
    sources = []
    for entry in stored:
        path = Path(data_root) / str(entry["name"])
        if not path.is_dir():
            raise RetrainError(f"The training data of {checkpoint.version} is not under {data_root}: {path} is absent.")
        options = datasets.DataOptions.from_dict(entry.get("options"))
        val_split = str(entry.get("val_split") or "auto")
        sources.append(datasets.DataSource(path, options, str(entry.get("population") or path.name), val_split))
    return sources


def _balanced_sample(samples: Sequence[datasets.Sample], limit: int, seed: int) -> list[datasets.Sample]:
    """At most `limit` samples, the same share for every (population, label) cell, seeded, in a stable order."""
    cells: dict[tuple[str, str], list[datasets.Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: str(s.path)):
        cells[(sample.population, sample.label)].append(sample)
    per_cell = max(1, limit // max(1, len(cells)))
    rng = random.Random(seed)
    chosen = []
    for cell in sorted(cells):
        members = cells[cell]
        chosen += members if len(members) <= per_cell else rng.sample(members, per_cell)
    return chosen


def reference_samples(
    checkpoint: ModelCheckpoint, data_root: Path, policy: RetrainPolicy
) -> tuple[list[datasets.Sample], list[datasets.Sample]]:
    """The training films and the frozen validation films (the champion's own split) a retrain uses."""
    config = checkpoint.extra.get("train_config", {})
    train: list[datasets.Sample] = []
    val: list[datasets.Sample] = []
    for source in training_sources(checkpoint, data_root):
        samples = datasets.load_source(source)
        source_train, source_val = datasets.train_val_split(
            source,
            samples,
            checkpoint.class_names,
            str(config.get("train_split", "train")),
            float(config.get("val_fraction", 0.15)),
            int(config.get("seed", 42)),
        )
        train += source_train
        val += source_val
    val_budget = max(1, int(policy.max_reference_images * VALIDATION_SHARE))
    train_budget = policy.max_reference_images - val_budget
    return _balanced_sample(train, train_budget, policy.seed), _balanced_sample(val, val_budget, policy.seed)


def test_samples(checkpoint: ModelCheckpoint, data_root: Path, policy: RetrainPolicy) -> list[datasets.Sample]:
    """The fixed test split: the list `mlops.evaluate` scores for each training dataset that has one."""
    chosen: list[datasets.Sample] = []
    for source in training_sources(checkpoint, data_root):
        options = task_options(checkpoint, source.path)
        try:
            found = evaluation_samples(source.path, "test", options).samples
        except (datasets.DatasetError, ValueError):  # a dataset without a test split adds nothing
            continue
        chosen += [s for s in found if s.label in checkpoint.class_names]
    if not chosen:
        raise RetrainError(f"None of the training datasets of {checkpoint.version} has a test split to judge on.")
    if policy.max_test_images:
        chosen = _balanced_sample(chosen, policy.max_test_images, policy.seed)
    return chosen


def reference_features(
    checkpoint: ModelCheckpoint, data_root: Path, cache_root: Path, policy: RetrainPolicy
) -> Reference:
    """Features of the training, frozen-validation and test films, from the cache of this backbone when present."""
    started = time.time()
    backbone = backbone_fingerprint(checkpoint)
    folder = Path(cache_root) / FEATURE_CACHE / backbone[:32]
    train, val = reference_samples(checkpoint, data_root, policy)
    test = test_samples(checkpoint, data_root, policy)
    predictor: list[Predictor] = []  # built on the first cache miss only

    def features(part: str, samples: Sequence[datasets.Sample]) -> tuple[FeatureSet, bool]:
        path = folder / f"{part}-{_listing_hash(samples)}.npz"
        if path.is_file():
            return FeatureSet.load(path), False
        if not predictor:
            predictor.append(Predictor(checkpoint, threads=policy.threads, cache_size=1, gate=False))
        found = FeatureSet(
            tuple(_key(s, data_root) for s in samples),
            embed_samples(predictor[0], samples).astype(np.float32),
            np.array([checkpoint.class_names.index(s.label) for s in samples], dtype=np.int64),
        )
        found.save(path)
        return found, True

    train_set, _ = features("train", train)
    val_set, _ = features("validation", val)
    test_set, computed = features("test", test)
    fingerprint_file = folder / f"test-{_listing_hash(test)}.json"
    if computed or not fingerprint_file.is_file():
        fingerprint_file.write_text(json.dumps({"fingerprint": validate_dataset(test).fingerprint}), encoding="utf-8")
    fingerprint = json.loads(fingerprint_file.read_text(encoding="utf-8"))["fingerprint"]
    seconds = round(time.time() - started, 1) if predictor else 0.0
    description = f"{len(test)} films of the test split of {', '.join(sorted({s.population for s in test}))}"
    return Reference(train_set, val_set, test_set, fingerprint, description, backbone, seconds)


def _key(sample: datasets.Sample, data_root: Path) -> str:
    try:
        return str(sample.path.resolve().relative_to(Path(data_root).resolve()))
    except ValueError:
        return str(sample.path)


def _listing_hash(samples: Sequence[datasets.Sample]) -> str:
    listing = "\n".join(f"{s.path.resolve()}|{s.label}|{s.population}" for s in samples)
    return hashlib.sha256(listing.encode()).hexdigest()[:24]


# --- the fine-tune ---------------------------------------------------------------------------------------------------


def expert_features(examples: Sequence[ExpertExample], split: str, class_names: Sequence[str], dim: int) -> FeatureSet:
    """The expert labels of one split as a FeatureSet; labels that are not classes of the model are refused."""
    unknown = sorted({e.label for e in examples} - set(class_names))
    if unknown:
        raise RetrainError(
            f"Expert labels {', '.join(unknown)} are not classes of the model ({', '.join(class_names)})."
        )
    bad_split = sorted({e.split for e in examples} - set(EXPERT_SPLITS))
    if bad_split:
        raise RetrainError(f"Expert label splits must be train or val, not {', '.join(bad_split)}.")
    chosen = [e for e in examples if e.split == split]
    if not chosen:
        return FeatureSet.concat([], dim)
    return FeatureSet(
        tuple(e.key for e in chosen),
        np.stack([np.asarray(e.embedding, dtype=np.float32).reshape(-1) for e in chosen]),
        np.array([list(class_names).index(e.label) for e in chosen], dtype=np.int64),
    )


def loss_weights(
    reference_labels: np.ndarray, expert_labels: np.ndarray, classes: int, expert_share: float
) -> np.ndarray:
    """Per-example loss weights: class-balanced within the reference films and within the expert labels, the
    expert labels together carrying `expert_share` of the total (all of it goes to the reference without any)."""
    shares = (1.0 - expert_share, expert_share) if len(expert_labels) else (1.0, 0.0)
    weights = []
    for labels, share in zip((reference_labels, expert_labels), shares, strict=True):
        counts = np.bincount(labels, minlength=classes).astype(np.float64)
        present = int((counts > 0).sum())
        weights.append(np.array([share / (present * counts[y]) for y in labels], dtype=np.float64))
    return np.concatenate(weights)


def fine_tune(start: Head, reference: FeatureSet, expert: FeatureSet, policy: RetrainPolicy) -> Head:
    """A new linear head from `start`: weighted cross-entropy plus an L2 pull towards `start`, full-batch AdamW."""
    torch.manual_seed(policy.seed)
    inputs = torch.from_numpy(np.concatenate([reference.embeddings, expert.embeddings]).astype(np.float32))
    targets = torch.from_numpy(np.concatenate([reference.labels, expert.labels]))
    classes = start.weight.shape[0]
    weights = loss_weights(reference.labels, expert.labels, classes, policy.expert_share)
    weights_t = torch.from_numpy(weights.astype(np.float32))
    weight0, bias0 = torch.from_numpy(start.weight.astype(np.float32)), torch.from_numpy(start.bias.astype(np.float32))
    weight, bias = weight0.clone().requires_grad_(True), bias0.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([weight, bias], lr=policy.lr, weight_decay=0.0)
    for _ in range(policy.steps):
        optimizer.zero_grad()
        per_example = torch.nn.functional.cross_entropy(inputs @ weight.T + bias, targets, reduction="none")
        anchor = (weight - weight0).pow(2).sum() + (bias - bias0).pow(2).sum()
        loss = (per_example * weights_t).sum() + policy.anchor * anchor
        loss.backward()
        optimizer.step()
    return Head(weight.detach().numpy(), bias.detach().numpy())


def calibrate(head: Head, validation: FeatureSet, min_sensitivity: float) -> dict[str, Any]:
    """Temperature and threshold of `head` on the frozen validation part (the rules mlops.train uses)."""
    logits = head.logits(validation.embeddings)
    temperature = fit_temperature(logits, validation.labels)
    calibrated = softmax_probs(logits, temperature)[:, -1]
    positive = (validation.labels == logits.shape[1] - 1).astype(np.int64)
    threshold = choose_threshold(calibrated, positive, min_sensitivity)
    return {
        "temperature": temperature,
        "threshold": threshold,
        "validation": compute_all(positive, calibrated, threshold),
    }


# --- judging ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scorer:
    """A head with its calibration: positive-class probabilities of embeddings."""

    head: Head
    temperature: float
    threshold: float

    def probs(self, embeddings: np.ndarray) -> np.ndarray:
        return softmax_probs(self.head.logits(embeddings), self.temperature)[:, -1]


def _positive(features: FeatureSet, classes: int) -> np.ndarray:
    return (features.labels == classes - 1).astype(np.int64)


def holdout_comparison(champion: Scorer, challenger: Scorer, holdout: FeatureSet, classes: int) -> dict[str, Any]:
    """Both models on the held-back expert labels: AUROC with both classes present, else accuracy."""
    truth = _positive(holdout, classes)
    metric = "auroc" if len(set(truth.tolist())) == 2 else "accuracy"
    score = auroc if metric == "auroc" else accuracy
    return {
        "metric": metric,
        "n": len(holdout),
        "n_positive": int(truth.sum()),
        "champion": float(score(truth, champion.probs(holdout.embeddings), champion.threshold)),
        "challenger": float(score(truth, challenger.probs(holdout.embeddings), challenger.threshold)),
    }


def judge(
    champion: Scorer, challenger: Scorer, test: FeatureSet, holdout: FeatureSet, classes: int, policy: RetrainPolicy
) -> Judgement:
    """The promotion gate (see the module docstring); the reason names every comparison and its numbers."""
    truth = _positive(test, classes)
    test_champion = auroc(truth, champion.probs(test.embeddings))
    test_challenger = auroc(truth, challenger.probs(test.embeddings))
    held = holdout_comparison(champion, challenger, holdout, classes) if len(holdout) else {"n": 0}
    metrics = {
        "test": {"metric": "auroc", "n": len(test), "champion": test_champion, "challenger": test_challenger},
        "holdout": held,
        "tolerance": policy.test_tolerance,
    }
    on_test = f"test AUROC {test_challenger:.4f} vs champion {test_champion:.4f} (tolerance {policy.test_tolerance})"
    if len(holdout) < policy.min_holdout_labels:
        reason = (
            f"not promoted: only {len(holdout)} held-back expert labels, at least {policy.min_holdout_labels} are "
            f"needed to show the challenger is not worse on them; {on_test}"
        )
        return Judgement(False, reason, metrics)
    on_holdout = (
        f"held-back expert labels ({held['n']}) {held['metric']} {held['challenger']:.4f} vs champion "
        f"{held['champion']:.4f}"
    )
    if test_champion - test_challenger > policy.test_tolerance + 1e-12:
        return Judgement(False, f"not promoted: worse on the fixed test split: {on_test}; {on_holdout}", metrics)
    if held["challenger"] < held["champion"] - 1e-12:
        return Judgement(False, f"not promoted: worse on the held-back expert labels: {on_holdout}; {on_test}", metrics)
    return Judgement(True, f"promoted: {on_test}; {on_holdout}", metrics)


def scorer_of(checkpoint: ModelCheckpoint) -> Scorer:
    return Scorer(head_of(checkpoint), checkpoint.temperature, checkpoint.threshold)


# --- the challenger: file, registry, promotion -----------------------------------------------------------------------


@dataclass(frozen=True)
class Challenger:
    checkpoint: ModelCheckpoint
    scorer: Scorer
    expert_train: FeatureSet
    holdout: FeatureSet


def train_challenger(
    champion: ModelCheckpoint,
    reference: Reference,
    examples: Sequence[ExpertExample],
    policy: RetrainPolicy,
    version: str,
) -> Challenger:
    """Fine-tune and calibrate a new head; the challenger checkpoint (not yet written) with its fingerprint."""
    dim = reference.train.embeddings.shape[1]
    expert_train = expert_features(examples, "train", champion.class_names, dim)
    holdout = expert_features(examples, "val", champion.class_names, dim)
    start = head_of(champion)
    head = fine_tune(start, reference.train, expert_train, policy)
    min_sensitivity = float(champion.extra.get("train_config", {}).get("min_sensitivity", 0.97))
    calibration = calibrate(head, reference.validation, min_sensitivity)
    weight_key, bias_key = head_keys(champion)
    state = dict(champion.state_dict)
    state[weight_key] = torch.from_numpy(head.weight.astype(np.float32))
    state[bias_key] = torch.from_numpy(head.bias.astype(np.float32))
    checkpoint = ModelCheckpoint(
        architecture=champion.architecture,
        task=champion.task,
        class_names=list(champion.class_names),
        preprocess=champion.preprocess,
        state_dict=state,
        threshold=calibration["threshold"],
        temperature=calibration["temperature"],
        version=version,
        metrics={"validation": calibration["validation"]},
        data_fingerprint=_data_fingerprint(champion, reference, examples),
        model_kwargs=dict(champion.model_kwargs),
        extra=champion.extra
        | {
            "retrained_from": champion.version,
            "mlflow_run_id": None,  # the champion's training run is not this model's (register_challenger logs one)
            "same_backbone_as": list(champion.same_backbone_versions),
            "backbone_sha256": reference.backbone,
            "head_fine_tune": {
                "steps": policy.steps,
                "lr": policy.lr,
                "anchor": policy.anchor,
                "expert_share": policy.expert_share,
                "seed": policy.seed,
                "reference_films": len(reference.train),
                "validation_films": len(reference.validation),
                "expert_train_labels": len(expert_train),
                "expert_holdout_labels": len(holdout),
                "rule": f"threshold = highest value keeping frozen-validation sensitivity >= {min_sensitivity}",
            },
        },
    )
    scorer = Scorer(head, calibration["temperature"], calibration["threshold"])
    return Challenger(checkpoint, scorer, expert_train, holdout)


def _data_fingerprint(champion: ModelCheckpoint, reference: Reference, examples: Sequence[ExpertExample]) -> str:
    """The champion's data, the reference films used and the expert label set (case, label, split)."""
    labels = sorted(f"{e.key}|{e.label}|{e.split}" for e in examples)
    parts = [champion.data_fingerprint, *reference.train.keys, "--", *reference.validation.keys, "--", *labels]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def test_block(scorer: Scorer, reference: Reference, classes: int) -> dict[str, Any]:
    """What `metrics["test"]` holds (the registry tags a version with it), as `mlops.evaluate` writes it."""
    truth = _positive(reference.test, classes)
    probs = scorer.probs(reference.test.embeddings)
    return {
        "metrics": compute_all(truth, probs, scorer.threshold),
        "threshold": scorer.threshold,
        "temperature": scorer.temperature,
        "split": "test",
        "n_images": int(truth.size),
        "n_positive": int(truth.sum()),
        "n_negative": int(truth.size - truth.sum()),
        "image_list": reference.test_description,
        "data_fingerprint": reference.test_fingerprint,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_challenger(challenger: Challenger, reference: Reference, judgement: Judgement, path: Path) -> ModelCheckpoint:
    """Store the test metrics, the held-back comparison and the gate's verdict in the checkpoint, and write it."""
    checkpoint = challenger.checkpoint
    checkpoint.metrics["test"] = test_block(challenger.scorer, reference, len(checkpoint.class_names))
    checkpoint.metrics["expert_holdout"] = judgement.metrics.get("holdout", {})
    checkpoint.metrics["promotion_gate"] = judgement.to_dict()
    save_checkpoint(checkpoint, path)
    return checkpoint


def register_challenger(path: Path, name: str, judgement: Judgement) -> tuple[int, str]:
    """A registry version of the challenger, logged in its own MLflow run with the gate's comparisons."""
    version = registry.register_checkpoint_file(path, name, run_name=f"retrain-{_load(path).version}")
    run_id = registry.get_version(name, version).run_id
    client = registry.mlflow_client()
    for part in ("test", "holdout"):
        block = judgement.metrics.get(part, {})
        for who in ("champion", "challenger"):
            if isinstance(block.get(who), float) and np.isfinite(block[who]):
                client.log_metric(run_id, f"gate_{part}_{block['metric']}_{who}", block[who])
    client.set_tag(run_id, "promotion_gate", judgement.reason[:500])
    client.set_tag(run_id, "gate_promote", str(judgement.promote).lower())
    return version, run_id


def promote(name: str, version: int, champion_version: int, reason: str, by: str = RETRAINING_ACTOR) -> None:
    """Move `champion` to `version` (the registry keeps who, when and why), unless the champion changed while this
    challenger was trained."""
    current = registry.get_alias(name)
    if current not in (champion_version, version):
        raise RetrainError(f"The champion of {name} moved to v{current} during the retraining; judge again.")
    registry.set_alias(name, version, by=by, reason=reason)


# --- all of it -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainResult:
    promote: bool
    reason: str
    metrics: dict[str, Any]
    champion_version: str
    challenger_version: str
    challenger_path: Path
    registry_version: int
    mlflow_run_id: str
    seconds: float


def new_version(champion: ModelCheckpoint, suffix: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{champion.task}-{champion.architecture}-{stamp}-retrained{('-' + suffix) if suffix else ''}"


def retrain(
    serving_checkpoint: Path,
    examples: Sequence[ExpertExample],
    data_root: Path,
    var_dir: Path,
    policy: RetrainPolicy,
    version: str | None = None,
    registry_name: str | None = None,
    log: Callable[[str], None] = print,
) -> RetrainResult:
    """Champion -> reference features -> challenger -> gate -> MLflow run + registry version -> alias (if it passes)."""
    started = time.time()
    champion = resolve_champion(serving_checkpoint, registry_name)
    reference = reference_features(champion.checkpoint, data_root, var_dir, policy)
    log(f"[retrain] reference features: {len(reference.train)} train, {len(reference.validation)} validation, "
        f"{len(reference.test)} test ({reference.seconds:.0f}s computing)")  # fmt: skip
    challenger = train_challenger(
        champion.checkpoint, reference, examples, policy, version or new_version(champion.checkpoint)
    )
    classes = len(champion.checkpoint.class_names)
    judgement = judge(
        scorer_of(champion.checkpoint), challenger.scorer, reference.test, challenger.holdout, classes, policy
    )
    path = Path(var_dir) / "retraining" / "challengers" / f"{challenger.checkpoint.version}.pt"
    write_challenger(challenger, reference, judgement, path)
    registry_version, run_id = register_challenger(path, champion.name, judgement)
    if judgement.promote:
        promote(champion.name, registry_version, champion.registry_version, judgement.reason)
    log(f"[retrain] {judgement.reason}")
    return RetrainResult(
        judgement.promote,
        judgement.reason,
        judgement.metrics,
        champion.checkpoint.version,
        challenger.checkpoint.version,
        path,
        registry_version,
        run_id,
        round(time.time() - started, 1),
    )
