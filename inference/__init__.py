"""inference: model checkpoints (the model contract), the warm, thread-safe Predictor, uncertainty, Grad-CAM
heatmaps and the input (OOD) gate.

Public surface:
- `ModelCheckpoint`, `load_checkpoint`, `save_checkpoint`, `create_model`, `CheckpointError`, `DEFAULT_TASK`
- nodules (inference.nodules): `NodulePredictor` (the second task's model: image-level probability and located
  marks), `NoduleFinding`, `NoduleLocation`, `NODULE_TASK`, `is_nodule_checkpoint`, `locate`; the network itself
  (`NoduleNet`, `NODULE_MODEL_KIND`) in inference.nodule_model
- `Predictor` (`Predictor.from_settings(checkpoint, settings)` for serving), `Prediction` (with `uncertainty`,
  `uncertain`, `uncertain_reasons`, `ood`, `ood_reason`, `ood_distance`); `Predictor.heatmap(pixels, method,
  target_class) -> Heatmap`
- heatmaps (inference.explain): `Explainer`, `Heatmap`, `ExplainError`, `find_target_layer`, `overlay_png`,
  `overlay_rgb`, `heatmap_to_png16`, `heatmap_from_png16`, `CAM_METHODS`, `COLORMAPS`
- validated scope (inference.scope): `ScopeCheck` (per population: age range + embedding reference),
  `ScopeResult`, `OUTSIDE_VALIDATED`, `with_scope`, `SCOPE_EXTRA_KEY` (fitted by `python -m mlops.fit_scope`)
- serving speed: `BatchPolicy`, `PredictionCancelled` (inference.batching: micro-batching, per-request
  cancellation); `RUNTIMES`, `Runtime`, `RuntimeSetupError` (inference.runtimes: torch / onnxruntime / openvino,
  fp32 / int8 ONNX graphs made by inference.export and `python -m mlops.export_runtime`)
- uncertainty (inference.uncertainty): `Uncertainty`, `UncertaintyPolicy`, `UncertaintyError`
- input gate (inference.ood): `InputGate`, `GateResult`, `ImageChecks`, `MahalanobisReference`, `OODError`,
  `fit_reference`, `reference_from_checkpoint`, `with_reference` (fitted by `python -m mlops.fit_gate`)
"""

from inference.batching import BatchPolicy, PredictionCancelled
from inference.checkpoint import (
    DEFAULT_TASK,
    CheckpointError,
    ModelCheckpoint,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from inference.explain import (
    CAM_METHODS,
    COLORMAPS,
    Explainer,
    ExplainError,
    Heatmap,
    find_target_layer,
    heatmap_from_png16,
    heatmap_to_png16,
    overlay_png,
    overlay_rgb,
)
from inference.export import RuntimeSetupError
from inference.nodule_model import MODEL_KIND as NODULE_MODEL_KIND
from inference.nodule_model import NoduleNet
from inference.nodules import NODULE_TASK, NoduleFinding, NoduleLocation, NodulePredictor, is_nodule_checkpoint, locate
from inference.ood import (
    GateResult,
    ImageChecks,
    InputGate,
    MahalanobisReference,
    OODError,
    fit_reference,
    reference_from_checkpoint,
    with_reference,
)
from inference.predictor import Prediction, Predictor
from inference.runtimes import RUNTIMES, Runtime
from inference.scope import OUTSIDE_VALIDATED, SCOPE_EXTRA_KEY, ScopeCheck, ScopeResult, with_scope
from inference.uncertainty import Uncertainty, UncertaintyError, UncertaintyPolicy

__all__ = [
    "CAM_METHODS",
    "COLORMAPS",
    "DEFAULT_TASK",
    "NODULE_MODEL_KIND",
    "NODULE_TASK",
    "OUTSIDE_VALIDATED",
    "RUNTIMES",
    "SCOPE_EXTRA_KEY",
    "BatchPolicy",
    "CheckpointError",
    "ExplainError",
    "Explainer",
    "GateResult",
    "Heatmap",
    "ImageChecks",
    "InputGate",
    "MahalanobisReference",
    "ModelCheckpoint",
    "NoduleFinding",
    "NoduleLocation",
    "NoduleNet",
    "NodulePredictor",
    "OODError",
    "Prediction",
    "PredictionCancelled",
    "Predictor",
    "Runtime",
    "RuntimeSetupError",
    "ScopeCheck",
    "ScopeResult",
    "Uncertainty",
    "UncertaintyError",
    "UncertaintyPolicy",
    "create_model",
    "find_target_layer",
    "fit_reference",
    "heatmap_from_png16",
    "heatmap_to_png16",
    "is_nodule_checkpoint",
    "load_checkpoint",
    "locate",
    "overlay_png",
    "overlay_rgb",
    "reference_from_checkpoint",
    "save_checkpoint",
    "with_reference",
    "with_scope",
]
