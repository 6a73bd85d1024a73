"""mlops: training, evaluation, MLflow tracking, the model registry and data validation.

Public surface (imported lazily, so `python -m mlops.train` does not pay for MLflow or matplotlib up front):
- training: `TrainConfig` (run it with `mlops.train.train(config)`)
- data validation: `validate_dataset`, `ValidationReport` (mlops.validate); the dataset layout itself is the
  `labelled_data` room
- calibration and metrics: `fit_temperature`, `choose_threshold` (mlops.calibration); `compute_all`,
  `bootstrap_intervals` (mlops.metrics)
- evaluation: `EvaluationReport`, `EvaluationError`, `write_outputs`, `store_in_checkpoint` (run it with
  `mlops.evaluate.evaluate(...)`; the submodules `train` and `evaluate` keep their names)
- registry: `list_versions`, `get_alias`, `set_alias`, `resolve_checkpoint`, `resolve_model_reference`,
  `resolve_serving_model`, `promote_if_better`, `PromotionDecision`, `rollback`, `register_checkpoint_file`,
  `RegistryError` (mlops.registry); `configure_mlflow` (mlops.tracking)
- retraining from expert labels: `RetrainPolicy`, `ExpertExample`, `RetrainError` (mlops.retrain: a head-only
  fine-tune of the champion and its promotion gate; `mlops.retrain.retrain(...)` runs it all)
Command lines: `python -m mlops {train,evaluate,registry,validate} --help`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "mlops.train",
    "validate_dataset": "mlops.validate",
    "ValidationReport": "mlops.validate",
    "fit_temperature": "mlops.calibration",
    "choose_threshold": "mlops.calibration",
    "compute_all": "mlops.metrics",
    "bootstrap_intervals": "mlops.metrics",
    "EvaluationReport": "mlops.evaluate",
    "EvaluationError": "mlops.evaluate",
    "write_outputs": "mlops.evaluate",
    "store_in_checkpoint": "mlops.evaluate",
    "list_versions": "mlops.registry",
    "get_alias": "mlops.registry",
    "set_alias": "mlops.registry",
    "resolve_checkpoint": "mlops.registry",
    "resolve_model_reference": "mlops.registry",
    "resolve_serving_model": "mlops.registry",
    "promote_if_better": "mlops.registry",
    "PromotionDecision": "mlops.registry",
    "rollback": "mlops.registry",
    "register_checkpoint_file": "mlops.registry",
    "RegistryError": "mlops.registry",
    "configure_mlflow": "mlops.tracking",
    "RetrainPolicy": "mlops.retrain",
    "ExpertExample": "mlops.retrain",
    "RetrainError": "mlops.retrain",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
