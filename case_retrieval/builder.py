"""Filling a library: reference images of a labelled dataset, and re-embedding everything for a new model.

Images are decoded by `imaging.decode_image` and embedded by `inference.Predictor` in batches, exactly as
serving does, so library vectors and query vectors come from the same pipeline.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from case_retrieval.entries import EntrySource, LibraryEntry, new_entry, reference_entry_id
from case_retrieval.errors import (
    InvalidInputError,
    LibraryConflictError,
    LibraryCorruptError,
    LibraryNotFoundError,
    ModelMismatchError,
    RetrievalError,
)
from case_retrieval.index import IndexPolicy
from case_retrieval.library import CaseLibrary
from case_retrieval.thumbnails import make_thumbnail
from imaging import ImagingError, decode_image
from inference import Predictor
from labelled_data import Sample, discover, select

logger = logging.getLogger("cxr.retrieval")
T = TypeVar("T")


@dataclass
class BuildReport:
    added: int = 0
    already_present: int = 0
    unreadable: list[str] = field(default_factory=list)  # files that could not be decoded
    seconds: float = 0.0
    replaced_library: str = ""  # why an existing library was replaced, if it was


@dataclass(frozen=True)
class _Decoded:
    sample: Sample
    sha256: str
    pixels: np.ndarray


def dataset_samples(data_dir: Path, split: str, limit: int = 0) -> list[Sample]:
    """Labelled samples of one split (manifest.csv or split/CLASS folders); `limit` > 0 keeps an evenly spaced
    subset of that size, so every class stays represented in smoke runs."""
    try:
        samples = select(discover(Path(data_dir)), split)
    except FileNotFoundError as exc:
        raise InvalidInputError(str(exc)) from None
    if not samples:
        raise InvalidInputError(f"No labelled images of split {split!r} in {data_dir}.")
    if 0 < limit < len(samples):
        step = len(samples) / limit
        return [samples[int(i * step)] for i in range(limit)]
    return samples


def embedding_size(predictor: Predictor) -> int:
    """Length of the predictor's embeddings, measured on a blank image (architectures differ)."""
    size = predictor.checkpoint.preprocess.input_size
    return int(predictor.predict(np.zeros((size, size), dtype=np.float32)).embedding.shape[0])


def embed(predictor: Predictor, images: Sequence[np.ndarray]) -> np.ndarray:
    """Embeddings of decoded [0, 1] images as a (n, d) float32 array (no result caching: one-off batch work)."""
    predictions = predictor.predict_batch(list(images), [None] * len(images))
    return np.stack([p.embedding for p in predictions]).astype(np.float32)


def open_for_build(
    directory: Path, model_version: str, embedding_dim: int, policy: IndexPolicy, replace: bool
) -> tuple[CaseLibrary, str]:
    """The library to add references to, and why an existing one was replaced ("" if none was).

    A compatible library is extended. One built by another model is replaced only if that loses nothing
    (it holds no confirmed cases, which could not be re-embedded from a dataset) or `replace` is set.
    """
    try:
        library = CaseLibrary.load(directory, policy=policy)
    except LibraryNotFoundError:
        return CaseLibrary.create(directory, model_version, embedding_dim, policy), ""
    except LibraryCorruptError as exc:
        if not replace:
            raise LibraryCorruptError(f"{exc} (pass --replace to build a new library over it)") from None
        return CaseLibrary.create(directory, model_version, embedding_dim, policy, replace=True), str(exc)
    try:
        library.ensure_compatible(model_version, embedding_dim)
        return library, ""
    except ModelMismatchError:
        cases = sum(1 for e in library.entries() if e.source is EntrySource.CONFIRMED_CASE)
        if cases and not replace:
            raise LibraryConflictError(
                f"The library in {directory} was built with model {library.model_version} and holds {cases} "
                "confirmed cases, which a dataset build cannot re-embed. Rebuild it from the service "
                "(case_retrieval.rebuild_library with the image store), or pass --replace to drop them."
            ) from None
        reason = f"built with model {library.model_version}, now {model_version}"
        return CaseLibrary.create(directory, model_version, embedding_dim, policy, replace=True), reason


def add_reference_images(
    library: CaseLibrary,
    predictor: Predictor,
    data_dir: Path,
    samples: Sequence[Sample],
    batch_size: int = 32,
    thumbnail_px: int = 128,
    progress: bool = True,
) -> BuildReport:
    """Embed and add every sample not yet in the library, in batches, with a progress bar."""
    report = BuildReport()
    started = time.perf_counter()
    with tqdm(total=len(samples), unit="img", desc="embedding", disable=not progress) as bar:
        for batch in _batches(samples, batch_size):
            decoded = _decode_new(library, batch, report)
            if decoded:
                _add_decoded(library, predictor, Path(data_dir), decoded, thumbnail_px)
                report.added += len(decoded)
            bar.update(len(batch))
    report.seconds = time.perf_counter() - started
    return report


def build_reference_library(
    data_dir: Path,
    split: str,
    predictor: Predictor,
    out_dir: Path,
    *,
    batch_size: int = 32,
    limit: int = 0,
    replace: bool = False,
    policy: IndexPolicy | None = None,
    thumbnail_px: int = 128,
    progress: bool = True,
) -> tuple[CaseLibrary, BuildReport]:
    """Build (or extend) the library in `out_dir` from one split of a labelled dataset and save it."""
    samples = dataset_samples(data_dir, split, limit)
    policy = policy or IndexPolicy()
    library, replaced = open_for_build(out_dir, predictor.version, embedding_size(predictor), policy, replace)
    report = add_reference_images(library, predictor, data_dir, samples, batch_size, thumbnail_px, progress)
    report.replaced_library = replaced
    library.save()
    return library, report


def rebuild_library(
    library: CaseLibrary,
    predictor: Predictor,
    read_pixels: Callable[[LibraryEntry], np.ndarray],
    batch_size: int = 32,
    progress: bool = False,
) -> CaseLibrary:
    """Re-embed every entry with the predictor's model into a new library for the same directory (unsaved).

    `read_pixels(entry)` returns the entry's decoded [0, 1] image (reference file or the case's stored image).
    Nothing is dropped silently: if any entry cannot be read, `RetrievalError` names them and no library results.
    Thumbnails are model-independent and stay as they are. Call `.save()` on the result to replace the old one.
    """
    entries = library.entries()
    rebuilt = CaseLibrary.create(
        library.directory, predictor.version, embedding_size(predictor), library.policy, replace=True
    )
    failed: list[str] = []
    for batch in tqdm(list(_batches(entries, batch_size)), unit="batch", desc="re-embedding", disable=not progress):
        readable, images = [], []
        for entry in batch:
            try:
                images.append(read_pixels(entry))
                readable.append(entry)
            except Exception as exc:  # the reader is the caller's (image store, files): any failure means unreadable
                logger.warning("cannot re-read library entry %s: %s", entry.entry_id, type(exc).__name__)
                failed.append(entry.entry_id)
        if readable:
            rebuilt.add_many(readable, embed(predictor, images), model_version=predictor.version)
    if failed:
        raise RetrievalError(
            f"{len(failed)} library entries could not be re-read (e.g. {', '.join(failed[:3])}); "
            "the library was not rebuilt."
        )
    return rebuilt


def pixel_reader(
    datasets_dir: Path, read_case_image: Callable[[LibraryEntry], bytes] | None = None
) -> Callable[[LibraryEntry], np.ndarray]:
    """A `read_pixels` for `rebuild_library`: reference entries from `datasets_dir/<dataset>/<reference_file>`,
    case entries through `read_case_image(entry)` (e.g. the image store, by `entry.image_sha256`)."""

    def read(entry: LibraryEntry) -> np.ndarray:
        if entry.source is EntrySource.REFERENCE and entry.dataset and entry.reference_file:
            data = (Path(datasets_dir) / entry.dataset / entry.reference_file).read_bytes()
        elif entry.source is EntrySource.CONFIRMED_CASE and read_case_image is not None:
            data = read_case_image(entry)
        else:
            raise InvalidInputError(f"No image source for library entry {entry.entry_id}.")
        return decode_image(data).pixels

    return read


def _decode_new(library: CaseLibrary, batch: Sequence[Sample], report: BuildReport) -> list[_Decoded]:
    decoded: list[_Decoded] = []
    seen: set[str] = set()
    for sample in batch:
        try:
            data = sample.path.read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            if reference_entry_id(sha256) in library or sha256 in seen:
                report.already_present += 1
                continue
            decoded.append(_Decoded(sample, sha256, decode_image(data).pixels))
            seen.add(sha256)
        except (OSError, ImagingError) as exc:
            logger.warning("skipping unreadable reference image %s: %s", sample.path.name, exc)
            report.unreadable.append(str(sample.path))
    return decoded


def _add_decoded(
    library: CaseLibrary, predictor: Predictor, data_dir: Path, decoded: list[_Decoded], thumbnail_px: int
) -> None:
    entries = [
        new_entry(
            reference_entry_id(item.sha256),
            item.sample.label,
            EntrySource.REFERENCE,
            confirmed=True,
            reference_file=_relative(item.sample.path, data_dir),
            dataset=data_dir.resolve().name,
            split=item.sample.split,
            image_sha256=item.sha256,
        )
        for item in decoded
    ]
    thumbnails = [make_thumbnail(item.pixels, thumbnail_px) for item in decoded]
    embeddings = embed(predictor, [item.pixels for item in decoded])
    library.add_many(entries, embeddings, model_version=predictor.version, thumbnails=thumbnails)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise InvalidInputError(f"Batch size must be at least 1, got {size}.")
    for start in range(0, len(items), size):
        yield items[start : start + size]
