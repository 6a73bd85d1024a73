"""The nodule/mass network: a timm backbone with a dense heatmap head and an image-level head.

The heatmap (one logit per cell at the backbone's second-to-last stride, 16 px for resnet18) says where a nodule or
mass is; its peaks become the located findings (inference.nodules). The image-level logit reads the pooled deepest
features together with the heatmap's highest cell, so a film with one confident spot scores high even when the
pooled features look ordinary. Kept apart from inference.nodules so the checkpoint module can build it without a
circular import.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

MODEL_KIND = "nodule-heatmap"  # checkpoint.extra["model_kind"] of models built here
HEAT_PRIOR = 0.01  # initial probability of a heatmap cell, so early training is not swamped by empty cells


class NoduleHead(nn.Module):
    """Fuse the last two feature maps at the finer one's stride; one heatmap logit per cell plus an image logit."""

    def __init__(self, fine_channels: int, coarse_channels: int, width: int = 128, drop_rate: float = 0.2):
        super().__init__()
        self.lateral = nn.Conv2d(fine_channels + coarse_channels, width, kernel_size=1)
        self.mix = nn.Sequential(
            nn.Conv2d(width, width, kernel_size=3, padding=1), nn.GroupNorm(8, width), nn.ReLU(inplace=True)
        )
        self.heat = nn.Conv2d(width, 1, kernel_size=1)
        nn.init.constant_(self.heat.bias, float(torch.logit(torch.tensor(HEAT_PRIOR))))
        self.dropout = nn.Dropout(drop_rate)
        self.image = nn.Linear(coarse_channels + 1, 1)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        upsampled = F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")
        mixed = self.mix(F.relu(self.lateral(torch.cat([fine, upsampled], dim=1))))
        heat = self.heat(mixed)[:, 0]
        peak = heat.flatten(1).amax(dim=1, keepdim=True)
        pooled = self.dropout(coarse.mean(dim=(2, 3)))
        image = self.image(torch.cat([pooled, peak], dim=1))[:, 0]
        return image, heat


class NoduleNet(nn.Module):
    """forward(x: (N, 1, S, S)) -> (image logits (N,), heatmap logits (N, S/16, S/16))."""

    def __init__(self, architecture: str, head_width: int = 128, drop_rate: float = 0.2, **timm_kwargs: Any):
        super().__init__()
        self.backbone = timm.create_model(
            architecture, pretrained=False, features_only=True, out_indices=(-2, -1), in_chans=1, **timm_kwargs
        )
        fine, coarse = self.backbone.feature_info.channels()
        self.head = NoduleHead(fine, coarse, head_width, drop_rate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine, coarse = self.backbone(x)
        return self.head(fine, coarse)

    def load_classifier_backbone(self, classifier_state: dict[str, torch.Tensor]) -> list[str]:
        """Start from a timm classifier's weights (e.g. the pneumonia model): same layer names, minus its head.
        Returns the backbone parameters the classifier did not have (empty when it is the same architecture)."""
        own = self.backbone.state_dict()
        shared = {k: v for k, v in classifier_state.items() if k in own and own[k].shape == v.shape}
        self.backbone.load_state_dict(shared, strict=False)
        return sorted(set(own) - set(shared))
