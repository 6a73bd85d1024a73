"""Similar-case library: add/search/persist round trip, model binding, confirmation, atomic saves, index switch."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import case_retrieval.store as store
from case_retrieval import (
    CaseLibrary,
    DuplicateEntryError,
    EntryNotFoundError,
    EntrySource,
    IndexKind,
    IndexPolicy,
    InvalidInputError,
    LibraryConflictError,
    LibraryCorruptError,
    LibraryEntry,
    LibraryNotFoundError,
    ModelMismatchError,
    RetrievalError,
    build_reference_library,
    embedding_size,
    evaluate_library,
    make_thumbnail,
    new_entry,
    pixel_reader,
    rebuild_library,
)
from case_retrieval.builder import dataset_samples
from case_retrieval.cli import main as cli_main
from imaging import decode_image
from inference import Predictor
from tests.factories import random_checkpoint

DIM = 32
VERSION = "model-v1"
POLICY = IndexPolicy(flat_max_entries=1000, hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=64)


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def reference(i: int, label: str = "NORMAL") -> LibraryEntry:
    return new_entry(f"ref-{i:04d}", label, EntrySource.REFERENCE, confirmed=True, reference_file=f"train/{i}.jpg")


def library_with(tmp_path: Path, n: int, policy: IndexPolicy = POLICY, seed: int = 0) -> tuple[CaseLibrary, np.ndarray]:
    library = CaseLibrary.create(tmp_path / "lib", VERSION, DIM, policy)
    vectors = unit_vectors(n, seed)
    entries = [reference(i, "NORMAL" if i % 2 else "PNEUMONIA") for i in range(n)]
    library.add_many(entries, vectors, model_version=VERSION)
    return library, vectors


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(-(vectors @ query), kind="stable")[:k])


def ids(neighbours: list) -> list[str]:
    return [n.entry.entry_id for n in neighbours]


def test_round_trip_add_search_save_reload(tmp_path: Path) -> None:
    library, vectors = library_with(tmp_path, 50)
    thumbnail = make_thumbnail(np.linspace(0, 1, 300 * 200, dtype=np.float32).reshape(300, 200))
    case_vector = unit_vectors(1, seed=9)[0]
    library.add_case("c42", "PNEUMONIA", case_vector, model_version=VERSION, thumbnail_png=thumbnail)
    before = library.search(vectors[3], k=5, model_version=VERSION)
    assert ids(before)[0] == "ref-0003" and before[0].similarity == pytest.approx(1.0, abs=1e-5)
    names = [f"ref-{i:04d}" for i in range(50)] + ["case-c42"]
    assert ids(before) == [names[i] for i in exact_top(np.vstack([vectors, case_vector]), vectors[3], 5)]
    assert [n.rank for n in before] == [1, 2, 3, 4, 5]
    assert library.save() == 1

    reloaded = CaseLibrary.load(tmp_path / "lib", model_version=VERSION, embedding_dim=DIM, policy=POLICY)
    after = reloaded.search(vectors[3], k=5, model_version=VERSION)
    assert ids(after) == ids(before)
    assert [n.similarity for n in after] == pytest.approx([n.similarity for n in before])
    assert reloaded.entries() == library.entries()
    assert reloaded.get("case-c42").source is EntrySource.CONFIRMED_CASE
    with Image.open(io.BytesIO(reloaded.thumbnail_path("case-c42").read_bytes())) as image:
        assert image.format == "PNG" and max(image.size) == 128 and image.size == (85, 128)
    with pytest.raises(EntryNotFoundError):
        reloaded.thumbnail_path("ref-0001")  # added without a thumbnail
    assert reloaded.summary()["labels"] == {"NORMAL": 25, "PNEUMONIA": 26}


def test_model_version_or_size_mismatch_is_refused(tmp_path: Path) -> None:
    library, vectors = library_with(tmp_path, 10)
    library.save()
    with pytest.raises(ModelMismatchError, match=r"model-v1.*model-v2.*Rebuild") as caught:
        CaseLibrary.load(tmp_path / "lib", model_version="model-v2")
    assert (caught.value.library_version, caught.value.requested_version) == (VERSION, "model-v2")
    with pytest.raises(ModelMismatchError, match="64-d"):
        CaseLibrary.load(tmp_path / "lib", model_version=VERSION, embedding_dim=64)
    with pytest.raises(ModelMismatchError):
        library.search(vectors[0], k=3, model_version="model-v2")
    with pytest.raises(ModelMismatchError):
        library.add(reference(99), vectors[0], model_version="model-v2")
    with pytest.raises(InvalidInputError, match="size 32"):
        library.search(np.ones(64, dtype=np.float32), k=3, model_version=VERSION)
    assert len(library) == 10  # nothing was added by the refused call


def test_empty_library_and_missing_library(tmp_path: Path) -> None:
    with pytest.raises(LibraryNotFoundError, match="build"):
        CaseLibrary.load(tmp_path / "nothing")
    library = CaseLibrary.create(tmp_path / "lib", VERSION, DIM, POLICY)
    assert library.search(unit_vectors(1, 1)[0], k=5, model_version=VERSION) == []
    library.save()
    reloaded = CaseLibrary.load(tmp_path / "lib", model_version=VERSION)
    assert len(reloaded) == 0 and reloaded.search(unit_vectors(1, 1)[0], k=1, model_version=VERSION) == []


def test_k_larger_than_library_and_k_validation(tmp_path: Path) -> None:
    library, vectors = library_with(tmp_path, 4)
    neighbours = library.search(vectors[0], k=50, model_version=VERSION)
    assert len(neighbours) == 4
    similarities = [n.similarity for n in neighbours]
    assert similarities == sorted(similarities, reverse=True)
    for bad_k in (0, -1, 101, True, 2.5):
        with pytest.raises(InvalidInputError, match="k must be"):
            library.search(vectors[0], k=bad_k, model_version=VERSION)


def test_unconfirmed_entries_are_never_returned_until_confirmed(tmp_path: Path) -> None:
    library, _ = library_with(tmp_path, 20)
    query = unit_vectors(1, seed=5)[0]
    library.add_case("pending", "NORMAL", query, model_version=VERSION, confirmed=False)
    assert "case-pending" not in ids(library.search(query, k=21, model_version=VERSION))
    assert library.searchable_count == 20 and len(library) == 21
    library.save()
    reloaded = CaseLibrary.load(tmp_path / "lib", model_version=VERSION)
    assert "case-pending" not in ids(reloaded.search(query, k=21, model_version=VERSION))

    confirmed = reloaded.confirm_case("pending", "PNEUMONIA", model_version=VERSION)  # the expert corrected the label
    top = reloaded.search(query, k=1, model_version=VERSION)[0]
    assert confirmed.confirmed and top.entry.entry_id == "case-pending" and top.entry.label == "PNEUMONIA"
    assert ids(reloaded.search(query, k=3, model_version=VERSION, exclude_case_id="pending"))[0] != "case-pending"
    with pytest.raises(InvalidInputError, match="pass its embedding"):
        reloaded.confirm_case("never-seen", "NORMAL", model_version=VERSION)
    added = reloaded.confirm_case("new", "NORMAL", unit_vectors(1, 11)[0], model_version=VERSION)
    assert added.confirmed and added.case_id == "new" and reloaded.searchable_count == 22
    with pytest.raises(InvalidInputError, match="confirmed=True"):
        new_entry("ref-x", "NORMAL", EntrySource.REFERENCE, confirmed=False)


def test_remove_hides_entry_compacts_and_deletes_thumbnail(tmp_path: Path) -> None:
    library, vectors = library_with(tmp_path, 10)
    png = make_thumbnail(np.zeros((64, 64), dtype=np.float32))
    library.add_case("gone", "NORMAL", unit_vectors(1, 7)[0], model_version=VERSION, thumbnail_png=png)
    library.save()
    thumbnail = library.thumbnail_path("case-gone")
    library.remove("case-gone")
    library.remove("ref-0003")
    assert "ref-0003" not in ids(library.search(vectors[3], k=10, model_version=VERSION))
    with pytest.raises(EntryNotFoundError):
        library.get("ref-0003")
    assert thumbnail.is_file()  # the published snapshot still shows it until the next save
    library.save()
    assert not thumbnail.exists()
    library.remove("ref-0000")  # a third hole in 11 rows crosses the compaction threshold (20 %)
    assert library._index.ntotal == len(library) == 8
    remaining = [i for i in range(10) if i not in (0, 3)]
    got = ids(library.search(vectors[5], k=3, model_version=VERSION))
    assert got == [f"ref-{remaining[j]:04d}" for j in exact_top(vectors[remaining], vectors[5], 3)]


def test_bad_inputs_are_refused_with_clear_errors(tmp_path: Path) -> None:
    library, vectors = library_with(tmp_path, 3)
    with pytest.raises(DuplicateEntryError):
        library.add(reference(1), vectors[0], model_version=VERSION)
    with pytest.raises(InvalidInputError, match="NaN"):
        library.add(reference(7), np.full(DIM, np.nan, dtype=np.float32), model_version=VERSION)
    with pytest.raises(InvalidInputError, match="all-zero"):
        library.search(np.zeros(DIM, dtype=np.float32), k=1, model_version=VERSION)
    with pytest.raises(InvalidInputError, match="Invalid entry id"):
        new_entry("../etc/passwd", "NORMAL", EntrySource.REFERENCE, confirmed=True)
    with pytest.raises(InvalidInputError, match="PNG"):
        library.add(reference(8), vectors[0], model_version=VERSION, thumbnail_png=b"GIF89a...")
    with pytest.raises(InvalidInputError, match="label"):
        library.confirm("ref-0001", "  ")
    with pytest.raises(EntryNotFoundError):
        library.remove("ref-9999")
    assert len(library) == 3


def test_crash_during_save_leaves_previous_library_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library, vectors = library_with(tmp_path, 8)
    library.save()
    library.add(reference(100), unit_vectors(1, 3)[0], model_version=VERSION)

    def crash(*_: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(store, "_publish", crash)  # dies after the new snapshot is written, before it is published
    with pytest.raises(KeyboardInterrupt):
        library.save()
    monkeypatch.setattr(store.faiss, "write_index", crash)  # dies while writing the index itself
    with pytest.raises(KeyboardInterrupt):
        library.save()
    monkeypatch.undo()

    survivor = CaseLibrary.load(tmp_path / "lib", model_version=VERSION)
    assert len(survivor) == 8 and survivor.generation == 1
    assert ids(survivor.search(vectors[2], k=1, model_version=VERSION)) == ["ref-0002"]
    assert library.save() == 3  # a later save succeeds and removes the leftovers of the crashed ones
    leftovers = sorted(p.name for p in (tmp_path / "lib").iterdir() if p.is_dir())
    assert leftovers == ["snap-000001", "snap-000003"]  # the previous snapshot is kept for manual rollback
    assert len(CaseLibrary.load(tmp_path / "lib", model_version=VERSION)) == 9


def test_damaged_index_file_is_detected(tmp_path: Path) -> None:
    library, _ = library_with(tmp_path, 5)
    library.save()
    index_file = next((tmp_path / "lib").glob("snap-*/index.faiss"))
    data = bytearray(index_file.read_bytes())
    data[-10] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(LibraryCorruptError, match="checksum"):
        CaseLibrary.load(tmp_path / "lib")


def test_concurrent_writers_do_not_overwrite_each_other(tmp_path: Path) -> None:
    library, _ = library_with(tmp_path, 5)
    library.save()
    first = CaseLibrary.load(tmp_path / "lib")
    second = CaseLibrary.load(tmp_path / "lib")
    first.add(reference(50), unit_vectors(1, 50)[0], model_version=VERSION)
    first.save()
    second.add(reference(60), unit_vectors(1, 60)[0], model_version=VERSION)
    assert second.is_stale()
    with pytest.raises(LibraryConflictError, match="another writer"):
        second.save()
    with pytest.raises(LibraryConflictError, match="already exists"):
        CaseLibrary.create(tmp_path / "lib", VERSION, DIM)


def test_index_switches_from_flat_to_hnsw_at_threshold(tmp_path: Path) -> None:
    policy = IndexPolicy(flat_max_entries=20, hnsw_m=8, hnsw_ef_construction=40, hnsw_ef_search=64)
    library, vectors = library_with(tmp_path, 20, policy)
    assert library.index_kind is IndexKind.FLAT
    extra = unit_vectors(1, seed=21)
    library.add(reference(20), extra[0], model_version=VERSION)
    assert library.index_kind is IndexKind.HNSW
    everything = np.vstack([vectors, extra])
    for q in range(0, 21, 4):  # ef_search > library size: the graph search is exact here
        assert ids(library.search(everything[q], k=5, model_version=VERSION)) == [
            f"ref-{i:04d}" for i in exact_top(everything, everything[q], 5)
        ]
    library.save()
    reloaded = CaseLibrary.load(tmp_path / "lib", policy=policy)
    assert reloaded.index_kind is IndexKind.HNSW and len(reloaded) == 21
    for i in range(6):  # removing enough entries compacts the index, back to Flat below the threshold
        reloaded.remove(f"ref-{i:04d}")
    assert reloaded.index_kind is IndexKind.FLAT and len(reloaded) == 15


def tiny_predictor(version: str) -> Predictor:
    return Predictor(random_checkpoint("resnet18", version=version, drop_rate=0.0), threads=1, cache_size=1)


def test_build_evaluate_and_rebuild_from_dataset(tmp_path: Path, kermany_dir: Path) -> None:
    predictor = tiny_predictor("tiny-v1")
    assert embedding_size(predictor) == 512
    library, report = build_reference_library(
        kermany_dir, "train", predictor, tmp_path / "lib", limit=12, batch_size=8, policy=POLICY, progress=False
    )
    assert report.added == 12 and not report.unreadable and library.generation == 1
    assert set(library.summary()["labels"]) == {"NORMAL", "PNEUMONIA"}
    entry = library.entries()[0]
    assert entry.dataset == kermany_dir.name and entry.split == "train" and entry.reference_file.startswith("train/")
    pixels = decode_image((kermany_dir / entry.reference_file).read_bytes()).pixels
    top = library.search(predictor.predict(pixels).embedding, k=3, model_version="tiny-v1")[0]
    assert top.entry.entry_id == entry.entry_id and top.similarity == pytest.approx(1.0, abs=1e-4)
    assert library.thumbnail_path(entry.entry_id).stat().st_size > 100

    _, again = build_reference_library(
        kermany_dir, "train", predictor, tmp_path / "lib", limit=12, batch_size=8, policy=POLICY, progress=False
    )
    assert again.added == 0 and again.already_present == 12  # an existing compatible library is extended

    quality = evaluate_library(
        library, predictor, dataset_samples(kermany_dir, "test", 6), kermany_dir.name, "train", k=3, progress=False
    )
    assert quality.queries == 6 and quality.library_entries == 12
    assert 0.0 <= quality.precision_at_k <= 1.0 and 0.5 <= quality.majority_class_rate <= 1.0

    newer = tiny_predictor("tiny-v2")
    with pytest.raises(ModelMismatchError):
        CaseLibrary.load(tmp_path / "lib", model_version="tiny-v2")
    old = CaseLibrary.load(tmp_path / "lib")
    rebuilt = rebuild_library(old, newer, pixel_reader(kermany_dir.parent))
    rebuilt.save()
    reloaded = CaseLibrary.load(tmp_path / "lib", model_version="tiny-v2", embedding_dim=512)
    assert sorted(e.entry_id for e in reloaded.entries()) == sorted(e.entry_id for e in old.entries())
    assert reloaded.thumbnail_path(entry.entry_id).is_file()


def test_cli_reports_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["info", "--library", str(tmp_path / "none")]) == 2
    assert "No similar-case library" in capsys.readouterr().err
    library, _ = library_with(tmp_path, 3)
    library.save()
    assert cli_main(["info", "--library", str(tmp_path / "lib")]) == 0
    assert '"entries": 3' in capsys.readouterr().out


def test_rebuild_refuses_to_drop_entries_it_cannot_reread(tmp_path: Path) -> None:
    library, _ = library_with(tmp_path, 3)
    library.save()
    predictor = tiny_predictor("tiny-v2")
    with pytest.raises(RetrievalError, match="3 library entries could not be re-read"):
        rebuild_library(library, predictor, pixel_reader(tmp_path))  # no such dataset files

    def image_store_miss(_: LibraryEntry) -> np.ndarray:
        raise LookupError("No stored image has this sha256.")  # what an image store raises for a lost file

    with pytest.raises(RetrievalError, match="could not be re-read"):
        rebuild_library(library, predictor, image_store_miss)
    kept = CaseLibrary.load(tmp_path / "lib", model_version=VERSION)
    assert kept.generation == 1 and len(kept) == 3
