"""The checkpoint as an ONNX graph for the fast CPU runtimes (inference.runtimes), fp32 and int8.

The graph has one input, `input` (B, 1, S, S) float32 after `imaging.preprocess`, and two outputs: `embedding`
(B, D), the pooled features the input gate, similar cases and MC dropout use, and `logits` (B, K); a nodule model's
graph has `image_logit` (B,) and `heat` (B, G, G) instead. Exporting the
embedding lets the Predictor resample the torch linear head with dropout on the runtime's own embedding, so the
uncertainty is computed the same way whichever runtime classifies.

Files are cached in a folder (RUNTIME_CACHE_DIR, by default var/runtimes) under a name made of the checkpoint's
version and a sha256 of its weights, so a retrained model never reuses an old graph:
`<version>-<weights sha[:16]>-fp32.onnx` and `...-int8.onnx`. fp32 is exported on first load when missing (a few
seconds); int8 needs calibration images from the training split, so it is made ahead by
`python -m mlops.export_runtime --int8` (ONNX Runtime static quantization: QDQ, per-channel int8 weights, uint8
activations, MinMax calibration), which both ONNX Runtime and OpenVINO execute as int8.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from inference.checkpoint import CheckpointError, ModelCheckpoint
from inference.nodule_model import NoduleNet

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
INPUT_NAME = "input"
OUTPUT_NAMES = ("embedding", "logits")
NODULE_OUTPUT_NAMES = ("image_logit", "heat")  # a nodule model's graph: (B,) image logits, (B, G, G) heatmap logits
OPSET = 17


class RuntimeSetupError(CheckpointError):
    """The runtime asked for cannot serve this checkpoint (message safe to show, names the fix)."""


class _EmbeddingAndLogits(nn.Module):
    """The model with both outputs the Predictor needs from one backbone pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(batch)
        return self.model.forward_head(features, pre_logits=True), self.model.forward_head(features)


def output_names(model: nn.Module) -> tuple[str, str]:
    return NODULE_OUTPUT_NAMES if isinstance(model, NoduleNet) else OUTPUT_NAMES


def two_outputs(model: nn.Module) -> nn.Module:
    """The module whose forward gives the graph's two outputs: a nodule model as it is, a classifier wrapped."""
    return model if isinstance(model, NoduleNet) else _EmbeddingAndLogits(model)


def weights_sha256(checkpoint: ModelCheckpoint) -> str:
    """sha256 over the parameter names and bytes: the key that ties a cached graph to these exact weights."""
    digest = hashlib.sha256()
    for name in sorted(checkpoint.state_dict):
        tensor = checkpoint.state_dict[name]
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def onnx_path(checkpoint: ModelCheckpoint, cache_dir: Path, precision: str = "fp32") -> Path:
    if precision not in PRECISIONS:
        raise RuntimeSetupError(f"Unknown INFERENCE_PRECISION {precision!r}; choose one of {PRECISIONS}.")
    version = re.sub(r"[^A-Za-z0-9._-]+", "_", checkpoint.version)
    return Path(cache_dir) / f"{version}-{weights_sha256(checkpoint)[:16]}-{precision}.onnx"


def export_onnx(model: nn.Module, input_size: int, path: Path) -> Path:
    """Write the two-output graph of `model` (left untouched) with a dynamic batch axis, atomically."""
    wrapper = two_outputs(copy.deepcopy(model)).eval()  # the exporter toggles train mode on what it gets
    example = torch.zeros((1, 1, input_size, input_size))
    batch_axis = {0: "batch"}
    with _temporary(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; its graph is what we test
        torch.onnx.export(
            wrapper,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(output_names(model)),
            dynamic_axes={name: batch_axis for name in (INPUT_NAME, *output_names(model))},
            opset_version=OPSET,
        )
    return path


def ensure_fp32_onnx(checkpoint: ModelCheckpoint, model: nn.Module, cache_dir: Path) -> Path:
    """The cached fp32 graph of this checkpoint, exported now when missing."""
    path = onnx_path(checkpoint, cache_dir, "fp32")
    if not path.is_file():
        export_onnx(model, checkpoint.preprocess.input_size, path)
    return path


def quantize_int8(fp32_path: Path, calibration: np.ndarray, path: Path, batch_size: int = 16) -> Path:
    """Static int8 quantization of an exported graph, calibrated on preprocessed (N, 1, S, S) training images."""
    # onnxruntime's quantization tools are only needed here, by the offline export command
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(np.array_split(calibration, max(1, len(calibration) // batch_size)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    with tempfile.TemporaryDirectory() as work, _temporary(path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return path


@contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` for a writer, renamed over `path` when the block succeeds, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
