"""The validated scope (issue 22): a film from outside the populations the model is validated on still gets its
analysis, marked `outside_validated` with the reason, counted as uncertain, queued for review and flagged in the PDFs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from imaging import decode_image
from inference import (
    OUTSIDE_VALIDATED,
    MahalanobisReference,
    OODError,
    Predictor,
    ScopeCheck,
    fit_reference,
    load_checkpoint,
    save_checkpoint,
    with_scope,
)
from inference.scope import UNCHECKED, VALIDATED, PopulationScope
from tests.conftest import make_tiny_checkpoint
from tests.factories import png_bytes, synthetic_radiograph, to_stored
from tests.in_process import backend_settings, workstation


def reference_around(center: np.ndarray, version: str, seed: int) -> MahalanobisReference:
    rng = np.random.default_rng(seed)
    fit = center + rng.standard_normal((40, center.size))
    holdout = center + rng.standard_normal((20, center.size))
    return fit_reference(fit, np.zeros(40, dtype=int), holdout, 99.0, version)


def two_populations(dim: int = 8, version: str = "v1") -> ScopeCheck:
    children = PopulationScope("children", "children aged 1-5", 1, 5, reference_around(np.zeros(dim), version, 0))
    adults = PopulationScope("adults", "adults aged 18-92", 18, 92, reference_around(np.full(dim, 10.0), version, 1))
    return ScopeCheck((children, adults))


def test_films_near_a_population_are_validated_and_others_are_not() -> None:
    scope = two_populations()
    assert scope.check(np.zeros(8)).scope == VALIDATED
    assert scope.check(np.zeros(8)).population == "children"
    assert scope.check(np.full(8, 10.0), age=40).population == "adults"
    far = scope.check(np.full(8, 5.0))
    assert far.scope == OUTSIDE_VALIDATED and "does not resemble the validated populations" in far.reason


def test_age_between_the_populations_is_outside_whatever_the_film_looks_like() -> None:
    scope = two_populations()
    verdict = scope.check(np.zeros(8), age=10)  # a child-like film of a 10-year-old
    assert verdict.scope == OUTSIDE_VALIDATED
    assert verdict.reason == "age 10 years is outside the validated ages (children 1-5; adults 18-92)"
    # an adult's age rules out the children's reference: an adult whose film looks like a child's is outside too
    assert scope.check(np.zeros(8), age=40).scope == OUTSIDE_VALIDATED


def test_a_checkpoint_without_scope_is_unchecked_and_a_stale_one_is_refused(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(make_tiny_checkpoint(tmp_path / "tiny.pt", version="scope-v1"))
    assert ScopeCheck.from_checkpoint(checkpoint).check(np.zeros(512)).scope == UNCHECKED
    stale = with_scope(checkpoint, two_populations(version="another-model"))
    with pytest.raises(OODError, match="fitted on another model"):
        ScopeCheck.from_checkpoint(stale)
    restored = ScopeCheck.from_checkpoint(with_scope(checkpoint, two_populations(version="scope-v1")))
    assert restored.check(np.full(8, 10.0), age=30).population == "adults"


# --- through the API and the reports ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The tiny model with a scope fitted on synthetic films: the same films are in scope by their look."""
    root = tmp_path_factory.mktemp("scope")
    checkpoint = load_checkpoint(make_tiny_checkpoint(root / "tiny.pt", version="scope-api"))
    predictor = Predictor(checkpoint, threads=1, cache_size=1, gate=False)
    films = [decode_image(png_bytes(to_stored(synthetic_radiograph(seed=seed)))).pixels for seed in range(40)]
    embeddings = np.stack([p.embedding for p in predictor.predict_batch(films, [None] * len(films))])
    reference = fit_reference(embeddings[:28], np.zeros(28, dtype=int), embeddings[28:], 99.0, "scope-api")
    scope = ScopeCheck(
        (
            PopulationScope("children", "children aged 1-5", 1, 5, reference),
            PopulationScope("adults", "adults aged 18-92", 18, 92, reference),
        )
    )
    save_checkpoint(with_scope(checkpoint, scope), root / "tiny.pt")
    with workstation(backend_settings(root / "var", root / "tiny.pt")) as http:
        yield http


def study(client: TestClient, age: int) -> dict:
    film = png_bytes(to_stored(synthetic_radiograph(seed=3)))
    answer = client.post(
        "/v1/studies", files={"file": ("film.png", film)}, data={"patient": json.dumps({"name": "Scope", "age": age})}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def pdf_words(client: TestClient, case_id: str, kind: str) -> str:
    response = client.get(f"/v1/cases/{case_id}/report", params={"kind": kind})
    assert response.status_code == 200
    return " ".join(" ".join(page.extract_text() for page in PdfReader(BytesIO(response.content)).pages).split())


def test_a_ten_year_old_is_analysed_but_outside_the_validated_scope(client: TestClient) -> None:
    case = study(client, age=10)
    assert case["scope"] == "outside_validated"
    assert case["scope_reason"] == "age 10 years is outside the validated ages (children 1-5; adults 18-92)"
    assert case["prediction"] in ("NORMAL", "PNEUMONIA")  # the analysis is still given
    assert case["uncertain"] is True and case["status"] == "queued_for_review"
    assert any("outside the validated scope" in reason for reason in case["uncertainty"]["reasons"])
    assert "OUTSIDE VALIDATED SCOPE: age 10 years" in pdf_words(client, case["case_id"], "radiologist")
    assert "Outside the validated populations: age 10 years" in pdf_words(client, case["case_id"], "clinical")
    assert "has not been tested on X-rays of people like you" in pdf_words(client, case["case_id"], "patient")


def test_an_adult_whose_film_resembles_the_training_films_is_validated(client: TestClient) -> None:
    case = study(client, age=40)
    assert case["scope"] == "validated" and case["scope_reason"] is None
    assert "OUTSIDE VALIDATED SCOPE" not in pdf_words(client, case["case_id"], "radiologist")
