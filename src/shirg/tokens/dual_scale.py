"""Dual-scale tokens from one SigLIP pass (docs/method.md section 1).

The hi-detail grid is the tower's own G x G token grid at resolution R (G = R / 14). The scaffold
is a 4 x 4 average pooling of it (adaptive when G % 4 != 0), S = ceil(G / 4) per side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from shirg.errors import ConfigError
from shirg.tokens.types import DualScaleTokens


def grid_boxes(grid: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Boxes of a regular grid over the unit canvas: [grid*grid, 4] (cx, cy, w, h), raster order."""
    centres = (torch.arange(grid, device=device, dtype=dtype) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    size = torch.full_like(cx, 1.0 / grid)
    return torch.stack([cx, cy, size, size], dim=-1).reshape(grid * grid, 4)


def scaffold_size(grid: int) -> int:
    """S = ceil(G / 4)."""
    return math.ceil(grid / 4)


def adaptive_bins(grid: int, out: int) -> list[tuple[int, int]]:
    """The [start, end) ranges adaptive average pooling uses to map ``grid`` cells onto ``out``."""
    return [((i * grid) // out, -((-(i + 1) * grid) // out)) for i in range(out)]


def scaffold_boxes(grid: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Boxes of the scaffold cells: [S*S, 4]. Each box spans the hi tokens pooled into it
    (4 / G per side when G % 4 == 0)."""
    s = scaffold_size(grid)
    lo = torch.tensor([a for a, _ in adaptive_bins(grid, s)], device=device, dtype=dtype) / grid
    hi = torch.tensor([b for _, b in adaptive_bins(grid, s)], device=device, dtype=dtype) / grid
    cy, cx = torch.meshgrid((lo + hi) / 2, (lo + hi) / 2, indexing="ij")
    hh, ww = torch.meshgrid(hi - lo, hi - lo, indexing="ij")
    return torch.stack([cx, cy, ww, hh], dim=-1).reshape(s * s, 4)


def real_token_mask(content_box: Tensor, grid: int) -> Tensor:
    """Which tokens of a G x G grid overlap the image content (not wholly padding).

    Args:
        content_box: [B, 4] (x0, y0, x1, y1) of the image inside the canvas, in [0, 1].
    Returns:
        [B, G*G] bool.
    """
    edges = torch.arange(grid + 1, device=content_box.device, dtype=content_box.dtype) / grid
    lo, hi = edges[:-1], edges[1:]
    eps = 1e-6
    x0, y0, x1, y1 = (content_box[:, i, None] for i in range(4))
    cols = (hi[None] > x0 + eps) & (lo[None] < x1 - eps)  # [B, G]
    rows = (hi[None] > y0 + eps) & (lo[None] < y1 - eps)
    return (rows[:, :, None] & cols[:, None, :]).reshape(-1, grid * grid)


def dual_scale(hi: Tensor, content_box: Tensor | None = None) -> DualScaleTokens:
    """Split one SigLIP pass into hi-detail tokens and the pooled scaffold.

    Args:
        hi: [B, G*G, D] tower features in raster order (G*G must be a square).
        content_box: [B, 4] (x0, y0, x1, y1) in [0, 1] of the real image inside the padded
            canvas; None means the image fills the canvas.
    Returns:
        DualScaleTokens with scaffold [B, S*S, D], S = ceil(G / 4).
    """
    if hi.dim() != 3:
        raise ConfigError(f"hi-detail tokens must be [B, N, D], got shape {tuple(hi.shape)}")
    b, n, d = hi.shape
    grid = math.isqrt(n)
    if n == 0 or grid * grid != n:
        raise ConfigError(f"hi-detail tokens must form a square grid, got N = {n} tokens")
    s = scaffold_size(grid)
    if content_box is None:
        content_box = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=hi.device).expand(b, 4)
    content_box = content_box.to(device=hi.device, dtype=torch.float32)

    x = hi.transpose(1, 2).reshape(b, d, grid, grid)
    if grid % 4 == 0:
        pooled = F.avg_pool2d(x, kernel_size=4)
    else:
        pooled = F.adaptive_avg_pool2d(x, s)
    scaffold = pooled.reshape(b, d, s * s).transpose(1, 2)

    hi_real = real_token_mask(content_box, grid)
    # A scaffold cell is real if any hi token pooled into it is real.
    real_grid = hi_real.reshape(b, 1, grid, grid).float()
    cell_real = F.adaptive_max_pool2d(real_grid, s) if grid % 4 else F.max_pool2d(real_grid, 4)
    box_dtype = torch.float32
    return DualScaleTokens(
        hi=hi,
        hi_boxes=grid_boxes(grid, hi.device, box_dtype).expand(b, n, 4),
        hi_real=hi_real,
        scaffold=scaffold,
        scaffold_boxes=scaffold_boxes(grid, hi.device, box_dtype).expand(b, s * s, 4),
        scaffold_real=cell_real.reshape(b, s * s) > 0,
        grid=grid,
        scaffold_grid=s,
    )


def cell_of_boxes(boxes: Tensor, scaffold_grid: int) -> Tensor:
    """Coverage cell (raster index into the S x S scaffold) of each box centre: [B, N, 4] -> [B, N]."""
    s = scaffold_grid
    col = (boxes[..., 0] * s).floor().clamp(0, s - 1).long()
    row = (boxes[..., 1] * s).floor().clamp(0, s - 1).long()
    return row * s + col


def default_k(grid: int) -> int:
    """K = round(G*G / 3): 768 at G = 48."""
    return round(grid * grid / 3)
