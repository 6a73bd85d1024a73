"""Command line: `python -m case_retrieval {build,evaluate,info} ...`.

python -m case_retrieval build --data ../shared/datasets/kermany-pneumonia --split train
python -m case_retrieval evaluate --data ../shared/datasets/kermany-pneumonia --library-split train --query-split test
python -m case_retrieval info
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from case_retrieval.builder import build_reference_library, dataset_samples
from case_retrieval.errors import RetrievalError
from case_retrieval.evaluate import evaluate_library
from case_retrieval.index import IndexPolicy
from case_retrieval.library import CaseLibrary
from inference import CheckpointError, Predictor, load_checkpoint
from settings import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (RetrievalError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    settings = get_settings()
    predictor = _predictor(args.checkpoint)
    library, report = build_reference_library(
        args.data,
        args.split,
        predictor,
        args.out,
        batch_size=args.batch_size,
        limit=args.limit,
        replace=args.replace,
        policy=IndexPolicy.from_settings(settings),
        thumbnail_px=settings.retrieval_thumbnail_px,
        progress=not args.no_progress,
    )
    if report.replaced_library:
        print(f"replaced the previous library ({report.replaced_library})")
    print(
        f"added {report.added} images in {report.seconds:.1f} s ({report.already_present} already present, "
        f"{len(report.unreadable)} unreadable)"
    )
    print(json.dumps(library.summary(), indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    predictor = _predictor(args.checkpoint)
    library = CaseLibrary.load(args.library)
    library.ensure_compatible(predictor.version)
    quality = evaluate_library(
        library,
        predictor,
        dataset_samples(args.data, args.query_split, args.limit),
        library_dataset=Path(args.data).resolve().name,
        library_split=args.library_split,
        k=args.k,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print("\n".join(quality.lines()))
    if args.json:
        args.json.write_text(json.dumps(quality.to_dict(), indent=2), encoding="utf-8")
    return 0


def _info(args: argparse.Namespace) -> int:
    print(json.dumps(CaseLibrary.load(args.library).summary(), indent=2))
    return 0


def _predictor(checkpoint: Path) -> Predictor:
    settings = get_settings()
    return Predictor(load_checkpoint(checkpoint), threads=settings.torch_threads, cache_size=1)


def _parser() -> argparse.ArgumentParser:
    settings = get_settings()
    default_dir = settings.resolved_retrieval_index_dir
    parser = argparse.ArgumentParser(prog="python -m case_retrieval", description="Similar-case library (FAISS).")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="embed a labelled dataset split into the reference library")
    build.add_argument("--data", type=Path, required=True, help="dataset folder (split/CLASS/* or manifest.csv)")
    build.add_argument("--split", default="train")
    build.add_argument("--out", type=Path, default=default_dir, help=f"library folder (default {default_dir})")
    build.add_argument("--replace", action="store_true", help="replace a library that would otherwise be refused")
    build.set_defaults(handler=_build)

    evaluate = commands.add_parser("evaluate", help="precision@k and k-NN accuracy of one split against the library")
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--library-split", default="train", help="split the library was built from")
    evaluate.add_argument("--query-split", default="test")
    evaluate.add_argument("--library", type=Path, default=default_dir)
    evaluate.add_argument("-k", type=int, default=5)
    evaluate.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    evaluate.set_defaults(handler=_evaluate)

    for command in (build, evaluate):
        command.add_argument("--checkpoint", type=Path, default=settings.model_path)
        command.add_argument("--batch-size", type=int, default=32)
        command.add_argument("--limit", type=int, default=0, help="use only N evenly spaced images (smoke runs)")
        command.add_argument("--no-progress", action="store_true", help="no progress bar")

    info = commands.add_parser("info", help="show what a library holds")
    info.add_argument("--library", type=Path, default=default_dir)
    info.set_defaults(handler=_info)
    return parser
