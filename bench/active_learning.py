"""Does uncertainty sampling need fewer expert labels than random? A simulated learning loop at a new hospital.

    python bench/active_learning.py [--checkpoint models/pneumonia.pt] [--seeds 20] [--start 20] [--batch 10]
                                    [--budget 400] [--min-distance 0.1 0.03] [--png PNG] [--json JSON]

The shipped model was trained on Kermany children only; the "new hospital" is rsna-pneumonia-adult (adults, task
PNEUMONIA vs NORMAL + OTHER_ABNORMAL, as in models/EXPERIMENTS.md), whose radiologist labels stand in for the
experts. Every film goes once through the serving path (upload decoder + serving Predictor, mlops.serving_path) for
its embedding and the champion's probability; the features are cached in bench/results/.

The pool is RSNA train + val (985 films), the evaluation set RSNA test (151 films, never labelled). Each run
starts from a small stratified labelled set (seeded), then in rounds: the strategy (the product's
`active_learning.make_strategy`, over `Candidate`s built from the CURRENT head's probabilities and the films'
embeddings) picks a batch from the unlabelled pool, the "experts" label it, and the head is refitted (logistic
regression on the frozen embeddings: head-only, as retraining does) and scored by AUROC on the test split.
The head's regularisation is chosen once, by cross-validation on the pool, and is the same for every strategy.
Repeated over seeds (the starting set, and the random strategy's shuffles); the plot shows mean and spread. The
seeds' spread does not show how noisy 151 test films are, so the gain over random at the budget also gets an
interval from resampling the test films. Diversity runs once per --min-distance: the setting's default (0.1) and
0.03 (about the 25th percentile of the pool's pairwise cosine distances: this model's pooled features are all
positive, so their cosine distances are small).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from active_learning import STRATEGIES, Candidate, make_strategy
from inference import Predictor, load_checkpoint
from inference.uncertainty import UncertaintyPolicy
from labelled_data import DataOptions, load_source, parse_source
from mlops.serving_path import predict_samples
from settings import Settings, get_settings

SOURCE = "rsna-pneumonia-adult:population=adults:positive=PNEUMONIA:negative=NORMAL+OTHER_ABNORMAL:negative-name=NORMAL"
CLASSES = ("NORMAL", "PNEUMONIA")
CACHE_DIR = Path(__file__).resolve().parent / "results"
TABLE_LABELS = (20, 50, 100, 200, 400)
C_GRID = (0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class Features:
    files: list[str]
    labels: np.ndarray  # 1 = PNEUMONIA
    pool: np.ndarray  # bool: RSNA train + val (may be labelled by the "experts")
    embeddings: np.ndarray  # (N, D) float32, the serving path's pooled features
    champion: np.ndarray  # the champion's calibrated P(PNEUMONIA)


def load_features(checkpoint_path: Path, data_root: Path, threads: int) -> Features:
    """Each film once through the serving path; cached per checkpoint version and file list."""
    checkpoint = load_checkpoint(checkpoint_path)
    source = parse_source(str(data_root / SOURCE), DataOptions(negative_name="NORMAL", positive_name="PNEUMONIA"))
    samples = sorted(load_source(source), key=lambda s: str(s.path))
    files = [s.path.relative_to(source.path).as_posix() for s in samples]
    digest = hashlib.sha256("\n".join([checkpoint.version, *files]).encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"active-learning-features-{digest}.npz"
    if not cache.exists():
        torch.set_num_threads(threads)
        # No gate (every film is a radiograph) and no MC dropout: the head replaces the model from round one.
        predictor = Predictor.from_settings(
            checkpoint, get_settings(), cache_size=1, gate=False, uncertainty=UncertaintyPolicy(method="none")
        )
        predictions = predict_samples(predictor, samples)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            cache,
            embeddings=np.stack([p.embedding for p in predictions]).astype(np.float32),
            champion=np.array([p.positive_probability for p in predictions]),
        )
    cached = np.load(cache)
    return Features(
        files=files,
        labels=np.array([int(s.label == "PNEUMONIA") for s in samples]),
        pool=np.array([s.split in ("train", "val") for s in samples]),
        embeddings=cached["embeddings"],
        champion=cached["champion"],
    )


@dataclass(frozen=True)
class Loop:
    start: int  # labelled films before the first round
    batch: int  # films labelled per round
    budget: int  # labels at the end
    c: float  # the head's inverse regularisation strength

    @property
    def counts(self) -> list[int]:
        return list(range(self.start, self.budget + 1, self.batch))


def fit_head(embeddings: np.ndarray, labels: np.ndarray, c: float) -> Pipeline:
    """Logistic regression on standardised frozen embeddings: the head-only retraining."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(embeddings, labels)


def choose_c(features: Features) -> float:
    """The regularisation, chosen once by 5-fold cross-validated AUROC on the whole pool (never the test split)
    and then kept for every strategy, seed and round: the same head for all, tuned on nothing they pick."""
    pool = features.pool
    scores = {
        c: cross_val_score(
            make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)),
            features.embeddings[pool],
            features.labels[pool],
            cv=StratifiedKFold(5, shuffle=True, random_state=0),
            scoring="roc_auc",
        ).mean()
        for c in C_GRID
    }
    return max(scores, key=lambda c: scores[c])


def auroc_on_test(features: Features, head: Pipeline) -> float:
    test = ~features.pool
    return float(roc_auc_score(features.labels[test], head.predict_proba(features.embeddings[test])[:, 1]))


def starting_set(labels: np.ndarray, pool: np.ndarray, size: int, rng: np.random.Generator) -> list[int]:
    """`size` pool films in the pool's class proportions, at least two of each class."""
    positives, negatives = np.flatnonzero(pool & (labels == 1)), np.flatnonzero(pool & (labels == 0))
    n_positive = min(max(2, round(size * len(positives) / (len(positives) + len(negatives)))), size - 2)
    chosen = [*rng.choice(positives, n_positive, replace=False), *rng.choice(negatives, size - n_positive, False)]
    return sorted(int(i) for i in chosen)


def candidates(features: Features, indices: np.ndarray, probabilities: np.ndarray) -> list[Candidate]:
    return [
        Candidate(key=str(i), probabilities={"NORMAL": 1.0 - p, "PNEUMONIA": p}, embedding=features.embeddings[i])
        for i, p in zip(indices.tolist(), probabilities.tolist(), strict=True)
    ]


@dataclass(frozen=True)
class Variant:
    strategy: str  # a name in STRATEGIES
    min_distance: float = 0.0  # diversity only

    @property
    def label(self) -> str:
        return f"{self.strategy} {self.min_distance:g}" if self.strategy == "diversity" else self.strategy


def variants(min_distances: list[float]) -> list[Variant]:
    """Every registered strategy; diversity once per minimum distance."""
    plain = [Variant(name) for name in STRATEGIES if name != "diversity"]
    return plain + [Variant("diversity", d) for d in min_distances]


def simulate(features: Features, variant: Variant, seed: int, loop: Loop) -> tuple[list[float], np.ndarray]:
    """Test AUROC after each round, from the starting set up to the label budget, and the last head's test
    probabilities."""
    labelled = starting_set(features.labels, features.pool, loop.start, np.random.default_rng(seed))
    test = features.embeddings[~features.pool]
    curve: list[float] = []
    for round_number in range(len(loop.counts)):
        head = fit_head(features.embeddings[labelled], features.labels[labelled], loop.c)
        test_probabilities = head.predict_proba(test)[:, 1]
        curve.append(float(roc_auc_score(features.labels[~features.pool], test_probabilities)))
        if round_number == len(loop.counts) - 1:
            break
        unlabelled = np.setdiff1d(np.flatnonzero(features.pool), labelled)
        probabilities = head.predict_proba(features.embeddings[unlabelled])[:, 1]
        # A fresh shuffle seed per run and round, so the random strategy's picks are independent draws.
        strategy = make_strategy(variant.strategy, min_distance=variant.min_distance, seed=seed * 1000 + round_number)
        picks = strategy.rank(candidates(features, unlabelled, probabilities), loop.batch)
        labelled = sorted(labelled + [int(c.key) for c in picks])
    return curve, test_probabilities


@dataclass(frozen=True)
class Runs:
    auroc: dict[str, np.ndarray]  # variant label -> (seeds, rounds) test AUROC
    final: dict[str, np.ndarray]  # variant label -> (seeds, test films) P(PNEUMONIA) of the head at the budget


def run_all(features: Features, loop: Loop, min_distances: list[float], seeds: int) -> Runs:
    auroc, final = {}, {}
    for variant in variants(min_distances):
        curves, probabilities = zip(*(simulate(features, variant, seed, loop) for seed in range(seeds)), strict=True)
        auroc[variant.label], final[variant.label] = np.array(curves), np.array(probabilities)
    return Runs(auroc=auroc, final=final)


def auroc_rows(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each row of (runs, films) scores, by the rank-sum (Mann-Whitney) formula, ties averaged."""
    ranks = rankdata(probabilities, axis=1)
    positives, negatives = int(labels.sum()), int((1 - labels).sum())
    return (ranks[:, labels == 1].sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def gain_over_random(runs: Runs, labels: np.ndarray, draws: int = 2000) -> dict[str, tuple[float, float, float]]:
    """Mean AUROC gain over random at the budget, with a 95 % interval from resampling the test films (paired:
    every strategy is scored on the same resampled films): the seeds' spread does not show the test set's noise."""
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, len(labels), len(labels)) for _ in range(draws)]
    samples = [s for s in samples if 0 < labels[s].sum() < len(s)]

    def mean_auroc(probabilities: np.ndarray, films: np.ndarray) -> float:
        return float(auroc_rows(probabilities[:, films], labels[films]).mean())

    random_auroc = np.array([mean_auroc(runs.final["random"], s) for s in samples])
    gains = {}
    for name, probabilities in runs.final.items():
        if name != "random":
            delta = np.array([mean_auroc(probabilities, s) for s in samples]) - random_auroc
            gain = mean_auroc(probabilities, np.arange(len(labels))) - mean_auroc(
                runs.final["random"], np.arange(len(labels))
            )
            gains[name] = (gain, *np.quantile(delta, [0.025, 0.975]).tolist())
    return gains


def labels_needed(curve: np.ndarray, counts: list[int], target: float) -> int | None:
    """The first label count at which the mean curve reaches `target` (None: not within the budget)."""
    reached = np.flatnonzero(curve.mean(axis=0) >= target)
    return counts[int(reached[0])] if reached.size else None


def markdown_table(results: dict[str, np.ndarray], counts: list[int]) -> str:
    shown = [n for n in TABLE_LABELS if n in counts]
    lines = ["| strategy | " + " | ".join(f"{n} labels" for n in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for name, runs in results.items():
        cells = [f"{runs[:, counts.index(n)].mean():.3f} ± {runs[:, counts.index(n)].std():.3f}" for n in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class References:
    champion: float  # the shipped model's test AUROC, no expert label used
    whole_pool: float  # the head fitted on every pool film's label: what labelling everything would give


def targets_table(results: dict[str, np.ndarray], counts: list[int], references: References) -> str:
    """Labels each strategy needs (the first round whose mean reaches the target) for the AUROC random sampling
    ends with and for that of the head fitted on every pool label."""
    targets = {
        "random's AUROC at the budget": results["random"][:, -1].mean(),
        "the head on all pool labels": references.whole_pool,
    }
    lines = ["| target | AUROC | " + " | ".join(results) + " |", "|---" * (len(results) + 2) + "|"]
    for what, target in targets.items():
        needed = [labels_needed(runs, counts, float(target)) for runs in results.values()]
        cells = [str(n) if n is not None else f"> {counts[-1]}" for n in needed]
        lines.append(f"| {what} | {target:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gains_table(gains: dict[str, tuple[float, float, float]], budget: int) -> str:
    lines = [f"| strategy | AUROC gain over random at {budget} labels | 95 % interval (test films resampled) |"]
    lines.append("|---|---|---|")
    lines += [f"| {name} | {gain:+.3f} | {low:+.3f} to {high:+.3f} |" for name, (gain, low, high) in gains.items()]
    return "\n".join(lines)


def plot(results: dict[str, np.ndarray], counts: list[int], references: References, out: Path, seeds: int) -> None:
    figure = Figure(figsize=(8, 5), dpi=100)  # no pyplot: no GUI backend, no global state
    axes = figure.subplots()
    for name, runs in results.items():
        mean, spread = runs.mean(axis=0), runs.std(axis=0)
        if name == "margin":  # on two classes it orders exactly as uncertainty does: dashed, so both show
            axes.plot(counts, mean, label="margin (= uncertainty on two classes)", linestyle=(0, (4, 4)))
        else:
            axes.plot(counts, mean, label=name, linewidth=1.8)
        axes.fill_between(counts, mean - spread, mean + spread, alpha=0.08)
    axes.axhline(references.champion, color="black", linestyle="--", linewidth=1, label="champion, not retrained")
    axes.axhline(references.whole_pool, color="grey", linestyle=":", linewidth=1, label="head on all pool labels")
    axes.set_xlabel("expert labels used")
    axes.set_ylabel("AUROC on RSNA test (151 adult films)")
    axes.set_title(f"Head retrained on expert labels, by selection strategy (mean ± sd, {seeds} seeds)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out)


def arguments(settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=settings.model_path)
    parser.add_argument("--data-root", type=Path, default=settings.cxr_data_dir)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--start", type=int, default=20, help="labelled films before the first round")
    parser.add_argument("--batch", type=int, default=10, help="films labelled per round")
    parser.add_argument("--budget", type=int, default=400, help="labels at the end")
    parser.add_argument(
        "--min-distance",
        type=float,
        nargs="+",
        default=[settings.active_learning_min_distance, 0.03],
        help="diversity's minimum cosine distance(s); the default adds 0.03, about the pool's 25th percentile",
    )
    parser.add_argument("--png", type=Path, default=Path("bench/measured/active-learning.png"))
    parser.add_argument("--json", type=Path, default=Path("bench/measured/active-learning.json"))
    return parser.parse_args()


def main() -> None:
    settings = get_settings()
    args = arguments(settings)
    features = load_features(args.checkpoint, args.data_root, settings.torch_threads)
    pool, test = features.pool, ~features.pool
    loop = Loop(start=args.start, batch=args.batch, budget=args.budget, c=choose_c(features))
    references = References(
        champion=float(roc_auc_score(features.labels[test], features.champion[test])),
        whole_pool=auroc_on_test(features, fit_head(features.embeddings[pool], features.labels[pool], loop.c)),
    )
    runs = run_all(features, loop, args.min_distance, args.seeds)
    results = runs.auroc
    print(
        f"pool {int(pool.sum())} films ({int(features.labels[pool].sum())} PNEUMONIA), test {int(test.sum())} "
        f"({int(features.labels[test].sum())} PNEUMONIA); head C={loop.c:g} (5-fold CV on the pool); "
        f"AUROC champion {references.champion:.3f}, head on all pool labels {references.whole_pool:.3f}"
    )
    print(markdown_table(results, loop.counts), "", targets_table(results, loop.counts, references), sep="\n")
    print("", gains_table(gain_over_random(runs, features.labels[test]), loop.budget), sep="\n")
    plot(results, loop.counts, references, args.png, args.seeds)
    summary = {"labels": loop.counts, "loop": asdict(loop), "references": asdict(references), "seeds": args.seeds}
    summary["auroc"] = {name: runs.round(4).tolist() for name, runs in results.items()}
    args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
