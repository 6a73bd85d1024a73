"""Grad-CAM heatmaps: where the model looked for the class it predicted.

The CAM itself comes from the maintained `grad-cam` package (pytorch_grad_cam): Grad-CAM by default, Grad-CAM++ as
an option. This module owns the glue:
- the target layer is found from the architecture, not named per model: a forward-hook probe of
  `forward_features` picks the last module (called once) whose output is the final spatial feature map, i.e. the
  last 4D map before the global pool. That works for any timm CNN (ResNet, EfficientNet, MobileNet, DenseNet,
  ConvNeXt; NHWC maps such as Swin's are permuted). Token-only models (plain ViT) have no spatial map and are
  refused with a clear error.
- the target is the class the model predicts by the checkpoint's rule (temperature + decision threshold), decided
  inside the same forward pass that Grad-CAM differentiates.
- the heatmap comes back normalized to [0, 1] at the size of the original decoded image (the model input is a
  stretched square resize, so stretching the CAM back is exact), plus renderers: a PNG overlay on the original
  image (colormap, opacity) and a 16-bit grayscale PNG of the raw heatmap for re-blending in the UI.

Thread-safety: Grad-CAM needs gradients and hooks, so an `Explainer` works on its own copy of the model (with
frozen parameters: gradients flow only to the activations) under its own lock, never on the Predictor's
inference-mode model.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from imaging import from_pixels_png16, preprocess, to_pixels_png16
from inference.checkpoint import ModelCheckpoint
from inference.uncertainty import calibrated_probabilities, decide_class

CAM_METHODS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "plasma": cv2.COLORMAP_PLASMA,
    "hot": cv2.COLORMAP_HOT,
}
PROBE_IMAGES = 4  # noise images used to locate the receptive fields (see probe_alignment)


class ExplainError(ValueError):
    """The heatmap cannot be made or rendered as asked (message safe to show; the API maps it to a 4xx)."""


@dataclass(frozen=True)
class TargetLayer:
    name: str
    module: nn.Module
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None  # NHWC -> NCHW when needed


@dataclass(frozen=True)
class CamAlignment:
    """Where feature-map cell i is centred on the model input, per axis: input coordinate = scale * i + offset.

    Plain upsampling assumes the centre of cell i is at stride * i + (stride - 1) / 2; padded strided convolutions
    shift the real receptive-field centres by up to a cell (about half a cell for timm ResNets), which would put
    every heatmap peak off the finding by that much. `probe_alignment` measures the real mapping."""

    stride: float
    scale_y: float
    offset_y: float
    scale_x: float
    offset_x: float

    def affine(self) -> np.ndarray:
        """2x3 matrix (output pixel -> pixel of the naively upsampled CAM) for cv2.warpAffine(WARP_INVERSE_MAP)."""
        s = self.stride
        return np.array(
            [
                [s / self.scale_x, 0.0, s / 2 - 0.5 - s * self.offset_x / self.scale_x],
                [0.0, s / self.scale_y, s / 2 - 0.5 - s * self.offset_y / self.scale_y],
            ],
            dtype=np.float64,
        )


@dataclass(frozen=True)
class Heatmap:
    values: np.ndarray  # float32 (H, W) in [0, 1], the size of the original decoded image
    target_class: str  # the class explained (the predicted class unless one was asked for)
    method: str  # "gradcam" or "gradcam++"
    target_layer: str
    model_version: str
    elapsed_ms: float

    def peak(self) -> tuple[int, int]:
        """(row, column) of the hottest pixel."""
        row, col = np.unravel_index(int(np.argmax(self.values)), self.values.shape)
        return int(row), int(col)


# --- target layer -----------------------------------------------------------------------------------------------


def find_target_layer(model: nn.Module, input_size: int, in_chans: int = 1) -> TargetLayer:
    """The last module, called exactly once, whose output is the final spatial feature map of `forward_features`."""
    fired: list[tuple[str, tuple[int, ...]]] = []
    calls: dict[str, int] = {}
    modules = dict(model.named_modules())

    def hook_for(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor):
                fired.append((name, tuple(output.shape)))

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items() if name]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    reshape = _layout_transform(model, features)
    for name, shape in reversed(fired):
        if shape == tuple(features.shape) and calls[name] == 1:
            return TargetLayer(name=name, module=modules[name], reshape_transform=reshape)
    raise ExplainError(f"No module of {type(model).__name__} produces its final feature map; Grad-CAM cannot run.")


def _layout_transform(model: nn.Module, features: object) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if not isinstance(features, torch.Tensor) or features.ndim != 4:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ExplainError(
            f"Grad-CAM needs a spatial (4D) feature map; {type(model).__name__} produces {shape} "
            "(token-based models are not supported)."
        )
    channels = int(getattr(model, "num_features", features.shape[1]))
    if features.shape[1] == channels:
        return None
    if features.shape[-1] == channels:
        return _nhwc_to_nchw
    raise ExplainError(f"Cannot tell the channel axis of the feature map {tuple(features.shape)}.")


def _nhwc_to_nchw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.permute(0, 3, 1, 2)


def probe_alignment(model: nn.Module, target: TargetLayer, input_size: int, in_chans: int = 1) -> CamAlignment:
    """Measure where each feature cell looks: the peak of its effective receptive field (the gradient of the
    cell's activations with respect to a fixed noise input), for the cells of the middle row and column.

    Falls back to the plain upsampling geometry when the probe is inconclusive (dead cells, odd mapping)."""
    generator = torch.Generator().manual_seed(0)
    # A few noise images at once: the peak of the summed gradient is stable where one image's is noisy.
    image = torch.randn(PROBE_IMAGES, in_chans, input_size, input_size, generator=generator).requires_grad_(True)
    with torch.enable_grad():
        features = model.forward_features(image)
        if target.reshape_transform is not None:
            features = target.reshape_transform(features)
        cells_y, cells_x = int(features.shape[2]), int(features.shape[3])
        stride = input_size / cells_x
        naive = CamAlignment(stride, stride, (stride - 1) / 2, stride, (stride - 1) / 2)
        if min(cells_y, cells_x) < 2 or cells_x != cells_y:
            return naive
        rows = [_receptive_centre(features[:, :, i, cells_x // 2], image, stride)[0] for i in range(cells_y)]
        columns = [_receptive_centre(features[:, :, cells_y // 2, j], image, stride)[1] for j in range(cells_x)]
    fitted = [_fit_axis(np.array(centres), stride) for centres in (rows, columns)]
    if any(fit is None for fit in fitted):
        return naive
    (scale_y, offset_y), (scale_x, offset_x) = fitted  # type: ignore[misc]
    return CamAlignment(stride, scale_y, offset_y, scale_x, offset_x)


def _receptive_centre(cell: torch.Tensor, image: torch.Tensor, stride: float) -> tuple[float, float]:
    """(row, column) of the peak of |d cell / d image|, smoothed over a quarter cell so that single pixels do not
    decide; the peak, not the centroid, because global context (squeeze-excitation, attention) spreads a thin
    gradient over the whole image. NaN when the cell does not depend on the image."""
    (gradient,) = torch.autograd.grad(cell.sum(), image, retain_graph=True)
    weights = cv2.GaussianBlur(gradient.abs().sum(dim=(0, 1)).float().numpy(), (0, 0), max(0.5, stride / 4))
    if not np.isfinite(weights).all() or weights.max() <= 0:
        return float("nan"), float("nan")
    row, column = np.unravel_index(int(np.argmax(weights)), weights.shape)
    return float(row), float(column)


def _fit_axis(centres: np.ndarray, stride: float) -> tuple[float, float] | None:
    """Least-squares centre = scale * cell + offset over the interior cells (edge cells see a truncated field).
    Only a clean fit is used: finite, within 15% of one stride per cell, no cell off the line by more than half
    a cell, offset within 1.5 cells of the plain geometry; otherwise None (keep the plain geometry)."""
    cells = np.arange(len(centres))
    inner = slice(1, -1) if len(centres) >= 4 else slice(None)
    cells, centres = cells[inner], centres[inner]
    if len(centres) < 2 or not np.all(np.isfinite(centres)) or np.ptp(centres) <= 0:
        return None
    scale, offset = np.polyfit(cells, centres, 1)
    residual = np.abs(centres - (scale * cells + offset)).max()
    if abs(scale - stride) > 0.15 * stride or residual > stride / 2 or abs(offset - (stride - 1) / 2) > 1.5 * stride:
        return None
    return float(scale), float(offset)


def align_cam(cam: np.ndarray, alignment: CamAlignment) -> np.ndarray:
    """Move a naively upsampled CAM (model input size) so each cell sits on its measured receptive-field centre."""
    height, width = cam.shape
    return cv2.warpAffine(
        cam.astype(np.float32),
        alignment.affine(),
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


# --- the explainer ----------------------------------------------------------------------------------------------


class _PredictedClassTarget:
    """Grad-CAM target: the logit of the class the checkpoint's rule predicts for this very output."""

    def __init__(self, checkpoint: ModelCheckpoint, forced_index: int | None) -> None:
        self.checkpoint = checkpoint
        self.forced_index = forced_index
        self.chosen: int | None = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.forced_index is not None:
            self.chosen = self.forced_index
        else:
            probs = calibrated_probabilities(output.detach().float().cpu().numpy(), self.checkpoint.temperature)
            self.chosen = decide_class(probs, self.checkpoint.threshold)
        return ClassifierOutputTarget(self.chosen)(output)


class Explainer:
    """Grad-CAM for one checkpoint on a private, frozen copy of the model. Safe to share between threads."""

    def __init__(self, checkpoint: ModelCheckpoint, model: nn.Module | None = None) -> None:
        self.checkpoint = checkpoint
        self.model = copy.deepcopy(model) if model is not None else checkpoint.build_model()
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)  # gradients are needed on activations only
        self.target = find_target_layer(self.model, checkpoint.preprocess.input_size)
        self.alignment = probe_alignment(self.model, self.target, checkpoint.preprocess.input_size)
        self._lock = threading.Lock()

    def heatmap(self, pixels: np.ndarray, method: str = "gradcam", target_class: str | None = None) -> Heatmap:
        """Heatmap for decoded [0, 1] pixels (H, W), for the predicted class unless `target_class` is given."""
        started = time.perf_counter()
        cam_class = _cam_class(method)
        pixels = _checked_pixels(pixels)
        forced = self._class_index(target_class)
        batch = torch.from_numpy(preprocess(pixels, self.checkpoint.preprocess)[None]).requires_grad_(True)
        target = _PredictedClassTarget(self.checkpoint, forced)
        with self._lock, torch.enable_grad():
            cam = cam_class(
                model=self.model, target_layers=[self.target.module], reshape_transform=self.target.reshape_transform
            )
            try:
                grayscale = cam(input_tensor=batch, targets=[target])[0]
            finally:
                cam.activations_and_grads.release()  # remove the hooks from the shared copy
        height, width = pixels.shape
        aligned = align_cam(grayscale, self.alignment)
        values = np.clip(cv2.resize(aligned, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, None)
        peak = float(values.max())
        return Heatmap(
            values=values / peak if peak > 0 else values,  # alignment and resizing can shave the peak: renormalize
            target_class=self.checkpoint.class_names[int(target.chosen or 0)],
            method=method,
            target_layer=self.target.name,
            model_version=self.checkpoint.version,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _class_index(self, target_class: str | None) -> int | None:
        if target_class is None:
            return None
        if target_class not in self.checkpoint.class_names:
            raise ExplainError(
                f"Unknown class {target_class!r}; this model knows {', '.join(self.checkpoint.class_names)}."
            )
        return self.checkpoint.class_names.index(target_class)


def _cam_class(method: str) -> type[BaseCAM]:
    if method not in CAM_METHODS:
        raise ExplainError(f"Unknown heatmap method {method!r}; choose one of {', '.join(CAM_METHODS)}.")
    return CAM_METHODS[method]


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    array = np.asarray(pixels)
    if array.ndim != 2 or min(array.shape) < 2:
        raise ExplainError(f"A heatmap needs one grayscale image (H, W); got an array of shape {array.shape}.")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ExplainError("The image holds non-finite pixel values.")
    return np.clip(array, 0.0, 1.0)


# --- renderers --------------------------------------------------------------------------------------------------


def overlay_rgb(
    pixels: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4, colormap: str = "jet", max_side: int | None = None
) -> np.ndarray:
    """RGB uint8 image: the colour-mapped heatmap blended over the grayscale original at `opacity`."""
    if not 0.0 <= opacity <= 1.0:
        raise ExplainError(f"Opacity must lie between 0 and 1; got {opacity}.")
    if colormap not in COLORMAPS:
        raise ExplainError(f"Unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}.")
    base, heat = _checked_pixels(pixels), _checked_pixels(heatmap)
    if base.shape != heat.shape:
        heat = cv2.resize(heat, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    if max_side is not None and max(base.shape) > max_side:
        scale = max_side / max(base.shape)
        size = (max(1, round(base.shape[1] * scale)), max(1, round(base.shape[0] * scale)))
        base = cv2.resize(base, size, interpolation=cv2.INTER_AREA)
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_AREA)
    rgb = np.repeat(base[:, :, None], 3, axis=2)
    return show_cam_on_image(rgb, heat, use_rgb=True, colormap=COLORMAPS[colormap], image_weight=1.0 - opacity)


def overlay_png(
    pixels: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4, colormap: str = "jet", max_side: int | None = None
) -> bytes:
    """PNG bytes of `overlay_rgb`."""
    rgb = overlay_rgb(pixels, heatmap, opacity=opacity, colormap=colormap, max_side=max_side)
    return _encode_png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def heatmap_to_png16(heatmap: np.ndarray) -> bytes:
    """The raw heatmap as a 16-bit grayscale PNG (0..65535 = 0..1), for re-blending without recomputing."""
    return to_pixels_png16(_checked_pixels(heatmap))


def heatmap_from_png16(data: bytes) -> np.ndarray:
    """Inverse of `heatmap_to_png16`: float32 (H, W) in [0, 1]."""
    try:
        return from_pixels_png16(data)
    except ValueError:
        raise ExplainError("The data is not a 16-bit grayscale PNG heatmap.") from None


def _encode_png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ExplainError("The heatmap could not be encoded as PNG.")
    return encoded.tobytes()
