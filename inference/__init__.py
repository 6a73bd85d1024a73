"""inference: model checkpoints (the model contract) and the warm, thread-safe Predictor.

Public surface:
- `ModelCheckpoint`, `load_checkpoint`, `save_checkpoint`, `create_model`, `CheckpointError`
- `Predictor`, `Prediction`
"""

from inference.checkpoint import CheckpointError, ModelCheckpoint, create_model, load_checkpoint, save_checkpoint
from inference.predictor import Prediction, Predictor

__all__ = [
    "CheckpointError",
    "ModelCheckpoint",
    "Prediction",
    "Predictor",
    "create_model",
    "load_checkpoint",
    "save_checkpoint",
]
