"""Runtimes that run the classifier: registered by name in `RUNTIMES` (INFERENCE_RUNTIME), like timm's models.

Every runtime maps a preprocessed (B, 1, S, S) float32 batch to the pooled embedding (B, D) and the logits (B, K),
both float32 (a nodule model: image logits (B,) and heatmap logits (B, G, G), see inference.export). `torch` runs
the checkpoint's timm model; `onnxruntime` and `openvino` run its ONNX export (inference.export), in fp32 or int8
(INFERENCE_PRECISION). Grad-CAM always keeps the torch model, and the Predictor resamples the torch linear head with
dropout on whatever embedding the runtime returns, so the uncertainty comes out the same way for every runtime.

A runtime is not thread-safe: the Predictor calls it under its model lock (or from its one batching worker).
ONNX Runtime and OpenVINO are imported when chosen, so a torch-only deployment never loads them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference.checkpoint import ModelCheckpoint
from inference.export import INPUT_NAME, RuntimeSetupError, ensure_fp32_onnx, onnx_path, output_names, two_outputs


class Runtime(ABC):
    name: str
    precision: str = "fp32"

    @abstractmethod
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 1, S, S) float32 -> embeddings (B, D), logits (B, K), float32."""

    @property
    def label(self) -> str:
        return f"{self.name}-{self.precision}"


@dataclass(frozen=True)
class RuntimeRequest:
    """What a runtime factory gets: the checkpoint, its built torch model, and where cached graphs live."""

    checkpoint: ModelCheckpoint
    model: nn.Module
    precision: str = "fp32"
    cache_dir: Path = Path("var/runtimes")
    threads: int = 2

    def onnx_file(self) -> Path:
        """The ONNX graph to serve: fp32 is exported on first use; int8 must have been made by the export command."""
        if self.precision == "fp32":
            return ensure_fp32_onnx(self.checkpoint, self.model, self.cache_dir)
        path = onnx_path(self.checkpoint, self.cache_dir, self.precision)
        if not path.is_file():
            raise RuntimeSetupError(
                f"No {self.precision} model for {self.checkpoint.version} in {self.cache_dir}: make it with "
                f"`python -m mlops.export_runtime --checkpoint CHECKPOINT --int8` (calibrates on training images), "
                "or set INFERENCE_PRECISION=fp32."
            )
        return path


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, request: RuntimeRequest) -> None:
        if request.precision != "fp32":
            raise RuntimeSetupError("The torch runtime serves fp32 only; int8 needs onnxruntime or openvino.")
        torch.set_num_threads(max(1, request.threads))
        self.graph = two_outputs(request.model)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            first, second = self.graph(torch.from_numpy(batch))
        return first.float().numpy(), second.float().numpy()


class OnnxRuntimeRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, request: RuntimeRequest) -> None:
        import onnxruntime  # heavy optional library: loaded only when this runtime is chosen

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, request.threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.precision = request.precision
        self.outputs = list(output_names(request.model))
        self.session = onnxruntime.InferenceSession(
            str(request.onnx_file()), options, providers=["CPUExecutionProvider"]
        )

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first, second = self.session.run(self.outputs, {INPUT_NAME: batch})
        return np.asarray(first, dtype=np.float32), np.asarray(second, dtype=np.float32)


class OpenVinoRuntime(Runtime):
    name = "openvino"

    def __init__(self, request: RuntimeRequest) -> None:
        import openvino  # heavy optional library: loaded only when this runtime is chosen

        core = openvino.Core()
        config = {
            "INFERENCE_NUM_THREADS": max(1, request.threads),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # never silently bf16 on CPUs that have it: parity with torch
            "CACHE_DIR": str(request.cache_dir / "openvino"),  # compiled blobs: faster second start
        }
        self.precision = request.precision
        self.compiled = core.compile_model(str(request.onnx_file()), "CPU", config)
        self._request = self.compiled.create_infer_request()
        self._outputs = [self.compiled.output(name) for name in output_names(request.model)]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self._request.infer({INPUT_NAME: batch})
        first, second = (result[output] for output in self._outputs)
        return np.array(first, dtype=np.float32), np.array(second, dtype=np.float32)


RUNTIMES: dict[str, Callable[[RuntimeRequest], Runtime]] = {
    "torch": TorchRuntime,
    "onnxruntime": OnnxRuntimeRuntime,
    "openvino": OpenVinoRuntime,
}


def create_runtime(name: str, request: RuntimeRequest) -> Runtime:
    """The runtime registered as `name`, ready to run (ONNX graphs exported or loaded from the cache)."""
    if name not in RUNTIMES:
        raise RuntimeSetupError(f"Unknown INFERENCE_RUNTIME {name!r}; choose one of {', '.join(RUNTIMES)}.")
    return RUNTIMES[name](request)
