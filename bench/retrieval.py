"""Similar-case search at scale: build time, memory, single-query latency p50/p99 and recall@10 vs exact search.

    nice -n 15 python bench/retrieval.py [--sizes 10000,100000,1000000] [--distribution uniform|library]

For every size it builds the exact index (IndexFlatIP) and the graph index the library switches to beyond
`RETRIEVAL_FLAT_MAX_ENTRIES` (IndexHNSWFlat with the settings' M / efConstruction), then times one query at a time
(as the API asks) and compares the graph index's top 10 with the exact top 10 for several efSearch values.

Vectors are random unit vectors of the embedding size (512 for resnet18):
- `uniform`: isotropic Gaussian directions. No index can exploit structure here (every point is nearly equally
  far from every query), so this is the worst case for any approximate index.
- `library`: Gaussian with the mean and covariance of a real library's embeddings (`--library`, default the
  configured library dir), i.e. random vectors with the spectrum of real radiograph embeddings.
Memory: `index_mb` is the index's own size (vectors + graph); `rss_growth_mb` is the process growth while building,
which undercounts when the allocator reuses memory freed earlier. Results go to stdout and to
bench/results/retrieval-<distribution>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from case_retrieval import CaseLibrary, EntrySource, IndexKind, IndexPolicy, LibraryEntry, new_entry
from case_retrieval.index import new_index, search_parameters, stored_vectors
from settings import get_settings

K = 10
CHUNK = 100_000
Sampler = Callable[[int, np.random.Generator], np.ndarray]


def uniform_sampler(dim: int) -> Sampler:
    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        return _normalised(rng.standard_normal((n, dim), dtype=np.float32))

    return sample


def library_sampler(library_dir: Path) -> tuple[Sampler, int, dict[str, float]]:
    """Gaussian fitted to a real library's (unit) embeddings, plus a description of its spectrum."""
    library = CaseLibrary.load(library_dir)
    vectors = stored_vectors(library._index).astype(np.float64)
    mean = vectors.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(vectors - mean, rowvar=False))
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    transform = (eigenvectors * np.sqrt(eigenvalues)).T.astype(np.float32)  # z @ transform has the covariance
    share = np.cumsum(eigenvalues[::-1]) / eigenvalues.sum()
    spectrum = {
        "fitted_on": len(vectors),
        "components_for_90pct_variance": int(np.searchsorted(share, 0.90) + 1),
        "components_for_99pct_variance": int(np.searchsorted(share, 0.99) + 1),
        "mean_cosine_between_entries": float(np.mean(vectors[:2000] @ vectors[:2000].T)),
    }

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, len(mean)), dtype=np.float32)
        return _normalised(z @ transform + mean.astype(np.float32))

    return sample, vectors.shape[1], spectrum


def _normalised(vectors: np.ndarray) -> np.ndarray:
    faiss.normalize_L2(vectors)
    return vectors


def generate(sampler: Sampler, n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        out[start : start + CHUNK] = sampler(min(CHUNK, n - start), rng)
    return out


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def latencies_ms(search_one: Callable[[np.ndarray], Any], queries: np.ndarray) -> list[float]:
    for query in queries[:5]:  # warm caches and lazily built structures
        search_one(query)
    timings = []
    for query in queries:
        started = time.perf_counter()
        search_one(query)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def percentiles(timings: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(timings, 50)), 3),
        "p99_ms": round(float(np.percentile(timings, 99)), 3),
    }


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def bench_exact(base: np.ndarray, queries: np.ndarray, latency_queries: int) -> tuple[dict[str, Any], np.ndarray]:
    before = rss_mb()
    started = time.perf_counter()
    index = new_index(IndexKind.FLAT, base.shape[1], IndexPolicy())
    index.add(base)
    build_s = time.perf_counter() - started
    memory = {"index_mb": round(base.nbytes / 2**20, 1), "rss_growth_mb": round(rss_mb() - before, 1)}
    _, truth = index.search(queries, K)  # batched: the ground truth
    timings = latencies_ms(lambda q: index.search(q[None, :], K), queries[:latency_queries])
    return {"build_s": round(build_s, 2), **memory, **percentiles(timings)}, truth


def hnsw_bytes(index: faiss.IndexHNSWFlat) -> int:
    hnsw = index.hnsw
    graph = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
    return int(index.ntotal * index.d * 4 + graph)


def bench_hnsw(
    base: np.ndarray, queries: np.ndarray, truth: np.ndarray, policy: IndexPolicy, ef_values: Sequence[int]
) -> dict[str, Any]:
    before = rss_mb()
    started = time.perf_counter()
    index = new_index(IndexKind.HNSW, base.shape[1], policy)
    for start in range(0, len(base), CHUNK):
        index.add(base[start : start + CHUNK])
        print(
            f"    hnsw build {min(start + CHUNK, len(base))}/{len(base)} {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    build_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "M": policy.hnsw_m,
        "ef_construction": policy.hnsw_ef_construction,
        "build_s": round(build_s, 1),
        "index_mb": round(hnsw_bytes(index) / 2**20, 1),
        "rss_growth_mb": round(rss_mb() - before, 1),
        "by_ef_search": [],
    }
    for ef in ef_values:
        params = search_parameters(IndexKind.HNSW, IndexPolicy(hnsw_ef_search=ef), None)
        _, found = index.search(queries, K, params=params)
        timings = latencies_ms(lambda q, p=params: index.search(q[None, :], K, params=p), queries)
        row = {"ef_search": ef, f"recall@{K}": round(recall(found, truth), 4), **percentiles(timings)}
        result["by_ef_search"].append(row)
        print(f"    efSearch {ef:5d}: {row}", flush=True)
    return result


def bench_library_search(base: np.ndarray, queries: np.ndarray, policy: IndexPolicy) -> dict[str, Any]:
    """End to end through CaseLibrary.search (k=5), 1% of entries unconfirmed so the hiding selector is in play."""
    with tempfile.TemporaryDirectory() as tmp:
        library = CaseLibrary.create(Path(tmp), "bench", base.shape[1], policy)
        entries = [_bench_entry(i) for i in range(len(base))]
        started = time.perf_counter()
        library.add_many(entries, base, model_version="bench")
        add_s = time.perf_counter() - started
        timings = latencies_ms(lambda q: library.search(q, 5, model_version="bench"), queries)
        return {"index_kind": library.index_kind.value, "add_s": round(add_s, 2), **percentiles(timings)}


def _bench_entry(i: int) -> LibraryEntry:
    if i % 100 == 0:
        return new_entry(f"case-{i}", "A", EntrySource.CONFIRMED_CASE, confirmed=False, case_id=str(i))
    return new_entry(f"ref-{i}", "A", EntrySource.REFERENCE, confirmed=True)


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--distribution", choices=["uniform", "library"], default="uniform")
    parser.add_argument("--library", type=Path, default=settings.resolved_retrieval_index_dir)
    parser.add_argument("--dim", type=int, default=512, help="embedding size (uniform only)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-latency-queries", type=int, default=50)
    parser.add_argument("--ef-search", default="64,128,256,512")
    parser.add_argument("--hnsw-m", type=int, default=settings.retrieval_hnsw_m)
    parser.add_argument("--ef-construction", type=int, default=settings.retrieval_hnsw_ef_construction)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    policy = IndexPolicy(
        flat_max_entries=settings.retrieval_flat_max_entries,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.ef_construction,
        hnsw_ef_search=settings.retrieval_hnsw_ef_search,
    )
    report: dict[str, Any] = {
        "distribution": args.distribution,
        "faiss": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "cpu_count": psutil.cpu_count(),
        "sizes": [],
    }
    if args.distribution == "library":
        sampler, dim, report["library_spectrum"] = library_sampler(args.library)
        print(f"fitted to {args.library}: {report['library_spectrum']}")
    else:
        sampler, dim = uniform_sampler(args.dim), args.dim
    report["dim"] = dim
    queries = generate(sampler, args.queries, dim, seed=1)
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"n={n} dim={dim}", flush=True)
        base = generate(sampler, n, dim, seed=2)
        exact, truth = bench_exact(base, queries, args.exact_latency_queries)
        print(f"    exact: {exact}", flush=True)
        row: dict[str, Any] = {"n": n, "exact_flat": exact}
        row["hnsw"] = bench_hnsw(base, queries, truth, policy, [int(e) for e in args.ef_search.split(",")])
        if n <= policy.flat_max_entries:
            row["case_library_search"] = bench_library_search(base, queries, policy)
            print(f"    CaseLibrary.search: {row['case_library_search']}", flush=True)
        report["sizes"].append(row)
        del base
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"retrieval-{args.distribution}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"written {path}")


if __name__ == "__main__":
    main()
