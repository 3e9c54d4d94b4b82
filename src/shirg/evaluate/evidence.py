"""Evidence recall: how much of the queried entity a strategy keeps at the same budget.

The entity's hi-res patches are the G x G grid cells whose centres fall inside its box (mapped from
image pixels onto the padded R x R canvas); a box too small to hold a centre takes the cell under
its own centre. A patch is kept when a selected non-scaffold token's box covers its centre (hi
tokens cover their own cell; merged or pooled tokens the cells inside their box). ``strict``
counts only unmerged hi tokens, i.e. patches that reach the language model at full detail.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from shirg.tokens.dual_scale import grid_boxes
from shirg.tokens.types import KIND_HI, KIND_SCAFFOLD, TokenSet


def _cell_centres(grid: int) -> Tensor:
    """[G*G, 2] (x, y) centres in [0, 1], raster order."""
    return grid_boxes(grid)[:, :2]


def canvas_box(
    box_px: Sequence[float],
    image_size: tuple[int, int],
    content_box: tuple[float, float, float, float],
) -> tuple[float, float, float, float]:
    """An [x0, y0, x1, y1] box in image pixels mapped onto the canvas, in [0, 1]; image_size:
    (width, height); content_box: where the image sits on the canvas, in [0, 1]."""
    x0, y0, x1, y1 = box_px
    w, h = image_size
    cx0, cy0, cx1, cy1 = content_box
    return (cx0 + x0 / w * (cx1 - cx0), cy0 + y0 / h * (cy1 - cy0),
            cx0 + x1 / w * (cx1 - cx0), cy0 + y1 / h * (cy1 - cy0))


def entity_patches(
    boxes_px: Sequence[Sequence[float]],
    image_size: tuple[int, int],
    content_box: tuple[float, float, float, float],
    grid: int,
) -> Tensor:
    """Bool [G*G]: the hi-res patches of the entities. boxes_px: [x0, y0, x1, y1] in image pixels;
    image_size: (width, height); content_box: where the image sits on the canvas, in [0, 1]."""
    centres = _cell_centres(grid)
    mask = torch.zeros(grid * grid, dtype=torch.bool)
    for box in boxes_px:
        u0, v0, u1, v1 = canvas_box(box, image_size, content_box)
        inside = (centres[:, 0] >= u0) & (centres[:, 0] <= u1) & (centres[:, 1] >= v0) & (centres[:, 1] <= v1)
        if not inside.any():
            col = min(grid - 1, max(0, int((u0 + u1) / 2 * grid)))
            row = min(grid - 1, max(0, int((v0 + v1) / 2 * grid)))
            inside[row * grid + col] = True
        mask |= inside
    return mask


def kept_patches(tokens: TokenSet, sample: int = 0, strict: bool = False) -> Tensor:
    """Bool [G*G]: hi-res patches a selection keeps (see the module docstring)."""
    grid = tokens.grid
    kind = tokens.kind[sample].cpu()
    mask = torch.zeros(grid * grid, dtype=torch.bool)
    hi = kind == KIND_HI
    mask[tokens.index[sample].cpu()[hi]] = True
    if strict:
        return mask
    other = (kind != KIND_SCAFFOLD) & ~hi
    if other.any():
        boxes = tokens.boxes[sample].float().cpu()[other]  # [M, 4] (cx, cy, w, h)
        centres = _cell_centres(grid)  # [N, 2]
        eps = 1e-6
        dx = (centres[None, :, 0] - boxes[:, None, 0]).abs() <= boxes[:, None, 2] / 2 + eps
        dy = (centres[None, :, 1] - boxes[:, None, 1]).abs() <= boxes[:, None, 3] / 2 + eps
        mask |= (dx & dy).any(dim=0)
    return mask


def _number_kept(box: Sequence[float], image_size: tuple[int, int], content_box: tuple[float, float, float, float],
                 strict_kept: Tensor) -> bool:
    """Whether the hi-res patch under the centre of a number's box is kept at full detail."""
    grid = int(round(strict_kept.numel() ** 0.5))
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    u0, v0, _, _ = canvas_box((cx, cy, cx, cy), image_size, content_box)
    col = min(grid - 1, max(0, int(u0 * grid)))
    row = min(grid - 1, max(0, int(v0 * grid)))
    return bool(strict_kept[row * grid + col])


def queried_patch_kept(label_boxes: Sequence[Sequence[float]] | None, image_size: tuple[int, int],
                       content_box: tuple[float, float, float, float], strict_kept: Tensor) -> float | None:
    """1.0 when the hi-res patch under the centre of every queried number is kept at full detail (an
    unmerged hi token: ``strict_kept``), else 0.0; None without number boxes."""
    if not label_boxes:
        return None
    return float(all(_number_kept(b, image_size, content_box, strict_kept) for b in label_boxes))


def twin_patch_kept(twin_boxes: Sequence[Sequence[float]] | None, image_size: tuple[int, int],
                    content_box: tuple[float, float, float, float], strict_kept: Tensor) -> float | None:
    """1.0 when the centre patch of any shape twin's number (an entity of the queried shape in another
    colour) is kept at full detail, else 0.0; None when the scene has no twin."""
    if not twin_boxes:
        return None
    return float(any(_number_kept(b, image_size, content_box, strict_kept) for b in twin_boxes))


def evidence_recall(entity: Tensor, kept: Tensor) -> float | None:
    """Share of the entity's patches kept; None when there is no entity (nothing to recall)."""
    total = int(entity.sum())
    if total == 0:
        return None
    return int((entity & kept).sum()) / total
