"""MLflow experiment tracking for training runs: parameters, per-epoch metrics, artifacts, registry version.

The tracking URI comes from settings (default: SQLite file + local artifact folder under var/), so a fresh machine
tracks without any server. Registration creates a new version of `cxr-<task>`; promotion (aliases) is `mlops.registry`.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from inference.checkpoint import ModelCheckpoint
from settings import get_settings

CHECKPOINT_ARTIFACT_DIR = "checkpoint"


def configure_mlflow() -> MlflowClient:
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.resolved_mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(settings.mlflow_experiment) is None:
        mlflow.create_experiment(
            settings.mlflow_experiment, artifact_location=settings.mlflow_artifact_dir.resolve().as_uri()
        )
    mlflow.set_experiment(settings.mlflow_experiment)
    return MlflowClient()


class NullTracker:
    """Used with --no-track: same interface, records nothing."""

    def log_epoch(self, record: dict[str, float]) -> None:
        return None

    def finish(self, checkpoint: ModelCheckpoint, path: Path, history: list[dict]) -> None:
        return None

    def summary(self) -> dict[str, Any]:
        return {}


class RunTracker(NullTracker):
    def __init__(self, client: MlflowClient, run_id: str, register_name: str) -> None:
        self.client, self.run_id, self.register_name = client, run_id, register_name
        self.model_version: str | None = None

    @classmethod
    def start(cls, run_name: str, params: dict[str, Any], register_name: str) -> RunTracker:
        client = configure_mlflow()
        run = mlflow.start_run(run_name=run_name)
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        return cls(client, run.info.run_id, register_name)

    def log_epoch(self, record: dict[str, float]) -> None:
        step = int(record["epoch"])
        mlflow.log_metrics({k: float(v) for k, v in record.items() if k != "epoch" and _finite(v)}, step=step)

    def finish(self, checkpoint: ModelCheckpoint, path: Path, history: list[dict]) -> None:
        validation = checkpoint.metrics.get("validation", {})
        mlflow.log_metrics({f"final_val_{k}": float(v) for k, v in validation.items() if _finite(v)})
        mlflow.log_metrics({"temperature": checkpoint.temperature, "threshold": checkpoint.threshold})
        mlflow.set_tags(
            {
                "model_version": checkpoint.version,
                "task": checkpoint.task,
                "architecture": checkpoint.architecture,
                "data_fingerprint": checkpoint.data_fingerprint,
            }
        )
        mlflow.log_artifact(str(path), artifact_path=CHECKPOINT_ARTIFACT_DIR)
        with tempfile.TemporaryDirectory() as tmp:
            card = Path(tmp) / "MODEL_CARD.md"
            card.write_text(render_run_card(checkpoint, history), encoding="utf-8")
            mlflow.log_artifact(str(card), artifact_path=CHECKPOINT_ARTIFACT_DIR)
        self.model_version = register_checkpoint(self.client, self.register_name, self.run_id, path.name, checkpoint)
        mlflow.end_run()

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "registered_model": self.register_name, "model_version": self.model_version}


def register_checkpoint(
    client: MlflowClient, name: str, run_id: str, file_name: str, checkpoint: ModelCheckpoint
) -> str:
    """Create a new registry version whose source is the checkpoint file logged in `run_id`."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # already registered: just add a version
        client.create_registered_model(name, description=f"CXR Workstation {checkpoint.task} classifier")
    source = f"{client.get_run(run_id).info.artifact_uri}/{CHECKPOINT_ARTIFACT_DIR}/{file_name}"
    version = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={"model_version": checkpoint.version, "architecture": checkpoint.architecture},
    )
    return str(version.version)


def render_run_card(checkpoint: ModelCheckpoint, history: list[dict]) -> str:
    lines = [
        f"# {checkpoint.version}",
        "",
        f"- task: {checkpoint.task}; classes: {', '.join(checkpoint.class_names)}",
        f"- architecture: {checkpoint.architecture}; input {checkpoint.preprocess.input_size} px",
        f"- temperature {checkpoint.temperature:.3f}; threshold {checkpoint.threshold:.4f}",
        f"- data fingerprint: {checkpoint.data_fingerprint}",
        "",
    ]
    columns = list(dict.fromkeys(key for record in history for key in record))  # every task logs its own figures
    lines += [f"| {' | '.join(columns)} |", f"|{' --- |' * len(columns)}"]
    lines += [f"| {' | '.join(_cell(record.get(key)) for key in columns)} |" for record in history]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value if value is not None else "")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
