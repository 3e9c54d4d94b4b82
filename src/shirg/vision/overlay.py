"""Overlays that show which tokens a strategy kept."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from shirg.io import atomic_write  # noqa: E402
from shirg.tokens.types import KIND_MERGED, KIND_POOLED, KIND_SCAFFOLD, TokenSet  # noqa: E402
from shirg.vision.preprocess import PAD_COLOUR  # noqa: E402

COLOURS = {"hi": "#ff3b30", "merged": "#00b3a4", "pooled": "#34c759", "grid": "#ffffff"}


def _canvas(image: Image.Image, resolution: int, content_box: tuple[float, float, float, float]) -> np.ndarray:
    """The image as it sits on the R x R canvas (padding shown grey)."""
    canvas = Image.new("RGB", (resolution, resolution), PAD_COLOUR)
    x0, y0, x1, y1 = (round(v * resolution) for v in content_box)
    canvas.paste(image.convert("RGB").resize((max(1, x1 - x0), max(1, y1 - y0)), Image.BICUBIC), (x0, y0))
    return np.asarray(canvas)


def draw_overlay(
    image: Image.Image,
    tokens: TokenSet,
    sample: int,
    out: str | Path,
    resolution: int,
    content_box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    title: str = "",
    ax=None,
) -> None:
    """Draw the scaffold grid, kept hi tokens (red), merged blocks (blue) and pooled tokens (green).

    Writes a PNG to ``out`` unless an ``ax`` is given (then it only draws into it).
    """
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    ax.imshow(_canvas(image, resolution, content_box), extent=(0, 1, 1, 0))
    kind = tokens.kind[sample].cpu().numpy()
    boxes = tokens.boxes[sample].float().cpu().numpy()
    s = tokens.scaffold_grid
    for i in range(1, s):
        ax.axhline(i / s, color=COLOURS["grid"], lw=0.6, alpha=0.7)
        ax.axvline(i / s, color=COLOURS["grid"], lw=0.6, alpha=0.7)
    for (cx, cy, w, h), k in zip(boxes, kind, strict=True):
        if k == KIND_SCAFFOLD:
            continue
        colour = COLOURS["merged"] if k == KIND_MERGED else COLOURS["pooled"] if k == KIND_POOLED else COLOURS["hi"]
        ax.add_patch(
            Rectangle((cx - w / 2, cy - h / 2), w, h, facecolor=colour, alpha=0.35, edgecolor=colour, lw=0.4)
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    n_hi = int((kind != KIND_SCAFFOLD).sum())
    n_sc = int((kind == KIND_SCAFFOLD).sum())
    n_merged = int((kind == KIND_MERGED).sum())
    ax.set_title(title or f"{tokens.strategy}: {n_sc} scaffold + {n_hi} kept ({n_merged} merged)", fontsize=9)
    if own:
        fig.tight_layout()
        atomic_write(out, lambda p: fig.savefig(p, format="png"))
        plt.close(fig)
