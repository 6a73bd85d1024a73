"""Training-time augmentation for chest radiographs (albumentations, on the uint8 square image).

Small geometric changes (a patient is never upside down: no vertical flip), exposure and local-contrast changes
(brightness/contrast, gamma, CLAHE), a little blur, sharpening and noise, and occasional cut-outs so the model
cannot lean on one region such as text markers.
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import numpy as np


def radiograph_augmentation(size: int) -> Callable[[np.ndarray], np.ndarray]:
    pipeline = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.85, 1.15),
                translate_percent=(-0.06, 0.06),
                rotate=(-10, 10),
                shear=(-5, 5),
                border_mode=0,
                p=0.9,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.25, p=0.6),
            A.RandomGamma(gamma_limit=(70, 150), p=0.4),
            A.CLAHE(clip_limit=(1, 3), p=0.3),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.Sharpen(alpha=(0.1, 0.3))], p=0.3),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
            A.CoarseDropout(
                num_holes_range=(1, 4),
                hole_height_range=(size // 16, size // 6),
                hole_width_range=(size // 16, size // 6),
                p=0.3,
            ),
        ]
    )

    def augment(image: np.ndarray) -> np.ndarray:
        return pipeline(image=image)["image"]

    return augment
