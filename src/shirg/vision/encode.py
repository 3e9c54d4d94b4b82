"""Images -> dual-scale tokens: preprocessing, one tower pass, scaffold pooling."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from shirg.tokens.dual_scale import dual_scale
from shirg.tokens.types import DualScaleTokens
from shirg.vision.preprocess import PreparedImage, prepare_image
from shirg.vision.siglip import VisionTower


@torch.no_grad()
def encode_dual_scale(
    tower: VisionTower,
    images: Sequence[str | Path | Image.Image],
    resolution: int = 672,
    resize: str = "pad",
) -> tuple[DualScaleTokens, list[PreparedImage]]:
    """Encode a batch of images at R x R and split the features into both scales."""
    prepared = [prepare_image(img, resolution, resize) for img in images]
    param = next(tower.parameters())
    pixels = torch.stack([p.pixels for p in prepared]).to(device=param.device, dtype=param.dtype)
    feats = tower(pixels)
    boxes = torch.tensor([p.content_box for p in prepared], device=feats.device)
    return dual_scale(feats, boxes), prepared
