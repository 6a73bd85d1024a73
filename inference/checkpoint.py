"""The model contract: one file holds everything serving needs (see DESIGN.md, "Model contract").

A checkpoint is a `torch.save`d dict with a format marker, metadata and the state dict. Serving builds the
timm model from the stored architecture name, so any timm classifier that trains also serves.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.torch_version import TorchVersion

from imaging import PreprocessSpec
from inference.nodule_model import MODEL_KIND as NODULE_MODEL_KIND
from inference.nodule_model import NoduleNet

FORMAT_NAME = "cxr-workstation-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("architecture", "task", "class_names", "preprocess", "threshold", "temperature", "version")

DEFAULT_TASK = "pneumonia"  # the first task of the product; the API serves it when a request names none


class CheckpointError(ValueError):
    """The file is missing, corrupt or not a checkpoint this code can serve."""


@dataclass
class ModelCheckpoint:
    architecture: str
    task: str
    class_names: list[str]
    preprocess: PreprocessSpec
    state_dict: dict[str, torch.Tensor]
    threshold: float = 0.5  # decision threshold on the calibrated probability of class_names[1]
    temperature: float = 1.0  # logits are divided by it before the softmax
    version: str = "0"
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments (e.g. drop_rate)
    extra: dict[str, Any] = field(default_factory=dict)  # training parameters, creation time, ...

    @property
    def positive_class(self) -> str:
        return self.class_names[-1]

    @property
    def same_backbone_versions(self) -> tuple[str, ...]:
        """This version and those whose pooled features it shares (a head-only retrain or a recalibration keeps the
        backbone, `extra["same_backbone_as"]`): a feature-space reference fitted on any of them still holds."""
        return (self.version, *self.extra.get("same_backbone_as", ()))

    def build_model(self) -> nn.Module:
        """Create the timm model (never downloading weights) and load the stored weights into it."""
        if self.extra.get("model_kind") == NODULE_MODEL_KIND:
            model = _timm_call(NoduleNet, self.architecture, **self.model_kwargs)
        else:
            model = create_model(self.architecture, len(self.class_names), **self.model_kwargs)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"Weights do not fit architecture {self.architecture!r}: {exc}") from None
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "task": self.task,
            "class_names": list(self.class_names),
            "preprocess": self.preprocess.to_dict(),
            "threshold": float(self.threshold),
            "temperature": float(self.temperature),
            "version": self.version,
            "metrics": _plain(self.metrics),
            "data_fingerprint": self.data_fingerprint,
            "model_kwargs": _plain(self.model_kwargs),
            "extra": _plain(self.extra),
            "state_dict": self.state_dict,
        }

    def describe(self) -> dict[str, Any]:
        """Everything but the weights: what /model/info and the model card show."""
        info = self.to_dict()
        info.pop("state_dict")
        info["input_size"] = self.preprocess.input_size
        return info


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """JSON-able copy (numpy scalars, paths, version objects -> plain types) so weights_only loading accepts it."""
    return json.loads(json.dumps(value, default=str))


def create_model(architecture: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """A timm classifier for one-channel radiographs; weights are never downloaded."""
    return _timm_call(timm.create_model, architecture, pretrained=False, num_classes=num_classes, in_chans=1, **kwargs)


def _timm_call(build: Any, architecture: str, **kwargs: Any) -> nn.Module:
    try:
        return build(architecture, **kwargs)
    except RuntimeError as exc:  # timm's "Unknown model" error
        raise CheckpointError(f"Unknown timm architecture {architecture!r}: {exc}") from None


def save_checkpoint(checkpoint: ModelCheckpoint, path: Path) -> str:
    """Write atomically (temp file + rename) and return the sha256 of the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    payload = buffer.getvalue()
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    return hashlib.sha256(payload).hexdigest()


def load_checkpoint(path: Path) -> ModelCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: {path}")
    try:
        # weights_only=True: a checkpoint is data, never code to execute.
        # TorchVersion is a str subclass that early checkpoints stored in `extra`.
        with torch.serialization.safe_globals([TorchVersion]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged zip/pickle payloads
        reason = type(exc).__name__
        raise CheckpointError(f"Checkpoint {path.name} is corrupt or not a torch file ({reason}).") from None
    return checkpoint_from_dict(raw, source=path.name)


def checkpoint_from_dict(raw: Any, source: str = "checkpoint") -> ModelCheckpoint:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{source} is not a CXR Workstation checkpoint.")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format version {raw.get('format_version')}; this code reads version {FORMAT_VERSION}."
        )
    missing = [key for key in (*REQUIRED_KEYS, "state_dict") if key not in raw]
    if missing:
        raise CheckpointError(f"{source} lacks required fields: {', '.join(missing)}.")
    if len(raw["class_names"]) < 2:
        raise CheckpointError(f"{source} must name at least two classes.")
    try:
        spec = PreprocessSpec.from_dict(raw["preprocess"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{source} has invalid preprocessing settings: {exc}") from None
    return ModelCheckpoint(
        architecture=str(raw["architecture"]),
        task=str(raw["task"]),
        class_names=[str(name) for name in raw["class_names"]],
        preprocess=spec,
        state_dict=raw["state_dict"],
        threshold=float(raw["threshold"]),
        temperature=float(raw["temperature"]),
        version=str(raw["version"]),
        metrics=dict(raw.get("metrics") or {}),
        data_fingerprint=str(raw.get("data_fingerprint", "")),
        model_kwargs=dict(raw.get("model_kwargs") or {}),
        extra=dict(raw.get("extra") or {}),
    )
