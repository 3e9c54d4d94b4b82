"""LaViDa's released visual layout ("anyres" + "spatial_unpad"), as pure functions.

An image becomes ``[base] + tiles``: the base view is the whole image squashed to 384 x 384, the
tiles cut a pinpoint-sized, aspect-preserving, black-padded copy into 384 x 384 pieces row-major.
After the vision tower and projector each view's 27 x 27 grid is bilinearly resized to 14 x 14
(:func:`pool_view_tokens`), and :func:`unpad_merge` lays the tiles out as one grid, drops the rows
or columns that only show padding, appends a newline vector after every row and puts the base
view's tokens first. :func:`lavida_token_count` runs that same geometry on dummy tensors.

Sizes are ``(width, height)``, grids ``(rows, cols)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from shirg.errors import ConfigError

Size = tuple[int, int]

DEFAULT_PINPOINTS: list[Size] = [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]
VIEW_SIZE = 384
NATIVE_GRID = 27  # 384 / 14 patches per side, SigLIP so400m-patch14-384
POOLED_GRID = 14
LOWRES_TOKEN_COUNT = POOLED_GRID * POOLED_GRID + 1  # one view, then one newline at the end


def _check_size(image_size: Size) -> None:
    w, h = image_size
    if w <= 0 or h <= 0:
        raise ConfigError(f"image size must be positive (width, height), got {image_size}")


def select_best_resolution(image_size: Size, pinpoints: Sequence[Size] = DEFAULT_PINPOINTS) -> Size:
    """Pick the pinpoint ``(W, H)`` that keeps the most of the image's pixels.

    Effective pixels = ``min(int(w*s) * int(h*s), w*h)`` with ``s = min(W/w, H/h)`` (upscaling
    adds nothing); ties go to the least wasted area ``W*H - effective``, then to the first.
    """
    _check_size(image_size)
    if not pinpoints:
        raise ConfigError("pinpoints is empty: pass at least one (width, height) pair")
    w, h = image_size
    best: Size | None = None
    best_key: tuple[int, int] | None = None
    for pw, ph in pinpoints:
        s = min(pw / w, ph / h)
        effective = min(int(w * s) * int(h * s), w * h)
        key = (effective, -(pw * ph - effective))
        if best_key is None or key > best_key:
            best, best_key = (int(pw), int(ph)), key
    assert best is not None
    return best


def anyres_grid(image_size: Size, pinpoints: Sequence[Size] = DEFAULT_PINPOINTS,
                view_size: int = VIEW_SIZE) -> tuple[Size, tuple[int, int]]:
    """Return ``(pinpoint (W, H), grid (rows, cols))`` for an image of ``image_size``."""
    for pw, ph in pinpoints:
        if pw % view_size or ph % view_size:
            raise ConfigError(
                f"pinpoint {(pw, ph)} is not a multiple of the view size {view_size}; "
                "use pinpoints made of whole views, e.g. (768, 384)"
            )
    pw, ph = select_best_resolution(image_size, pinpoints)
    return (pw, ph), (ph // view_size, pw // view_size)


def _resize_and_pad(image: Image.Image, target: Size) -> Image.Image:
    """Fit ``image`` inside ``target`` keeping aspect (ceil rounding), centred on black."""
    w, h = image.size
    tw, th = target
    scale_w, scale_h = tw / w, th / h
    if scale_w < scale_h:
        new_w, new_h = tw, min(math.ceil(h * scale_w), th)
    else:
        new_w, new_h = min(math.ceil(w * scale_h), tw), th
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    canvas.paste(resized, ((tw - new_w) // 2, (th - new_h) // 2))
    return canvas


def anyres_views(image: Image.Image, pinpoints: Sequence[Size] = DEFAULT_PINPOINTS,
                 view_size: int = VIEW_SIZE) -> tuple[list[Image.Image], tuple[int, int]]:
    """Cut ``image`` into LaViDa's views: ``[base] + tiles`` (row-major) and the tile grid.

    Every view is ``view_size x view_size`` RGB; ``len(views) == 1 + rows * cols``.
    """
    image = image.convert("RGB")
    pinpoint, (rows, cols) = anyres_grid(image.size, pinpoints, view_size)
    base = image.resize((view_size, view_size), Image.Resampling.BICUBIC)
    padded = _resize_and_pad(image, pinpoint)
    tiles = [
        padded.crop((c * view_size, r * view_size, (c + 1) * view_size, (r + 1) * view_size))
        for r in range(rows)
        for c in range(cols)
    ]
    return [base, *tiles], (rows, cols)


def unpad_grid(x: torch.Tensor, image_size: Size) -> torch.Tensor:
    """Drop the rows or columns of ``x: [H, W, E]`` that only cover padding -> ``[H', W', E]``.

    The original aspect ``w/h`` is compared with the grid's; the longer side sets the scale and
    ``(cur - int(orig * scale)) // 2`` rows (or columns) go from each end.
    """
    _check_size(image_size)
    w, h = image_size
    cur_h, cur_w = x.shape[0], x.shape[1]
    if w / h > cur_w / cur_h:
        new_h = int(h * (cur_w / w))
        pad = (cur_h - new_h) // 2
        return x[pad:cur_h - pad]
    new_w = int(w * (cur_h / h))
    pad = (cur_w - new_w) // 2
    return x[:, pad:cur_w - pad]


def unpad_merge(base: torch.Tensor, tiles: torch.Tensor, grid: tuple[int, int], image_size: Size,
                newline: torch.Tensor) -> torch.Tensor:
    """LaViDa's "spatial_unpad" merge of one image's view tokens.

    base: [n0, E] (the base view), tiles: [rows*cols, t, t, E] (row-major), newline: [E].
    Returns [n0 + H' * (W' + 1), E]: base tokens, then the unpadded tile grid row by row, each
    row followed by ``newline``.
    """
    rows, cols = grid
    n, t, t2, e = tiles.shape
    if n != rows * cols or t != t2:
        raise ConfigError(
            f"tiles of shape {tuple(tiles.shape)} do not fit a {rows}x{cols} grid of square tiles"
        )
    if base.shape[-1] != e or newline.shape != (e,):
        raise ConfigError(
            f"base {tuple(base.shape)}, tiles width {e} and newline {tuple(newline.shape)} disagree"
        )
    full = tiles.reshape(rows, cols, t, t, e).permute(0, 2, 1, 3, 4).reshape(rows * t, cols * t, e)
    kept = unpad_grid(full, image_size)
    nl = newline.to(kept.dtype).expand(kept.shape[0], 1, e)
    return torch.cat([base, torch.cat([kept, nl], dim=1).reshape(-1, e)], dim=0)


def pool_view_tokens(x: torch.Tensor, out: int = POOLED_GRID) -> torch.Tensor:
    """Bilinear resize of each view's square token grid: [V, g*g, E] -> [V, out*out, E].

    LaViDa runs this after the projector (g = 27 -> out = 14, align_corners=False).
    """
    v, n, e = x.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ConfigError(f"view has {n} tokens, which is not a square grid; expected e.g. 27*27 = 729")
    grid = x.reshape(v, g, g, e).permute(0, 3, 1, 2)
    pooled = F.interpolate(grid, size=(out, out), mode="bilinear", align_corners=False)
    return pooled.permute(0, 2, 3, 1).reshape(v, out * out, e)


def lavida_token_count(w: int, h: int, pinpoints: Sequence[Size] = DEFAULT_PINPOINTS,
                       pooled: bool = True) -> int:
    """Number of visual tokens LaViDa's anyres layout gives a ``w x h`` image (e.g. 1000x1000 -> 1008)."""
    _, grid = anyres_grid((w, h), pinpoints)
    t = POOLED_GRID if pooled else NATIVE_GRID
    rows, cols = grid
    tiles = torch.zeros(rows * cols, t, t, 1)
    return unpad_merge(torch.zeros(t * t, 1), tiles, grid, (w, h), torch.zeros(1)).shape[0]


def expand2square(image: Image.Image, fill: tuple[int, int, int] = (127, 127, 127)) -> Image.Image:
    """Pad ``image`` to a square of side ``max(w, h)`` filled with ``fill``, image centred.

    This is the single-view ("pad", our ``lowres``) path: the square is then resized to 384 and
    gives 196 pooled tokens plus ONE newline at the end = 197 tokens (``LOWRES_TOKEN_COUNT``).
    """
    image = image.convert("RGB")
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas
