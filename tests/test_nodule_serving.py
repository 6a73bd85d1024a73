"""The nodule/mass finding served beside pneumonia (issue 23): stored with each case, answered over HTTP.

Storage: the case row keeps the finding as one JSON document (`nodule`, revision 0009); cases stored before the
upgrade keep everything and read `nodule: null`. SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import (
    CaseRepository,
    Database,
    NewCase,
    PatientInfo,
    PhiCipher,
    configure_phi_cipher,
    generate_phi_key,
    migrate_database,
)
from tests.conftest import DATABASES, postgres_schema
from tests.old_schema import store_old_case

BEFORE_NODULE = "0008_retraining_jobs"
FINDING = {
    "label": "NODULE",
    "probability": 0.71,
    "threshold": 0.42,
    "locations": [{"x": 101.5, "y": 40.0, "w": 32.0, "h": 28.0, "score": 0.83}],
    "model_version": "nodule-fixture-1",
    "performance": {
        "sensitivity": 0.61,
        "false_positives_per_film": 1.0,
        "summary": "Finds about 6 of 10 nodules or masses, at about 1 false mark per film (measured on test films).",
    },
}


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database (SQLite file or PostgreSQL schema) and a PHI key for the test."""
    configure_phi_cipher(PhiCipher([generate_phi_key()]))
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'nodule.db'}")
        yield db
        db.dispose()
    else:
        with postgres_schema(request.getfixturevalue("postgres_server"), "test_nodule") as url:
            db = Database(url)
            yield db
            db.dispose()
    configure_phi_cipher(None)


def pneumonia_case(**fields: object) -> NewCase:
    return NewCase(
        image_sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        image_format="PNG",
        task="pneumonia",
        prediction="PNEUMONIA",
        confidence=0.8,
        probabilities={"NORMAL": 0.2, "PNEUMONIA": 0.8},
        model_version="pneumonia-v1",
        patient=PatientInfo(patient_id="MRN-7", name="Ada Example"),
        **fields,  # type: ignore[arg-type]
    )


def test_a_case_keeps_its_nodule_finding(database: Database) -> None:
    migrate_database(database)
    repo = CaseRepository(database)
    stored = repo.create_case(pneumonia_case(nodule=FINDING))
    assert repo.get_case(stored.id).nodule == FINDING
    assert repo.create_case(pneumonia_case()).nodule is None  # no nodule model served: null, not an empty finding


def test_upgrade_keeps_old_cases_with_no_nodule_finding(database: Database) -> None:
    migrate_database(database, BEFORE_NODULE)
    old = store_old_case(database, pneumonia_case(quality_warnings=["low contrast"]))
    migrate_database(database)
    case = CaseRepository(database).get_case(old)
    assert case.nodule is None
    assert (case.prediction, case.probabilities, case.model_version) == (
        "PNEUMONIA",
        {"NORMAL": 0.2, "PNEUMONIA": 0.8},
        "pneumonia-v1",
    )
    assert (case.patient.name, case.quality_warnings) == ("Ada Example", ["low contrast"])
