"""Visual tokens for every mode, and their splicing into the prompt.

``lavida`` / ``lowres``: LaViDa's own layouts. High-resolution modes: one SigLIP pass at R x R,
dual-scale tokens, ``full`` or a registered strategy, SHIRG's coordinate embedding, the projector.
Every function takes the whole model (:class:`shirg.model.lavida.LavidaModel`) and a stopwatch
(:class:`shirg.model.profile.Stopwatch`, or ``NO_WATCH`` where nothing is timed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import Tensor

from shirg.model.anyres import anyres_views, expand2square, pool_view_tokens, unpad_merge
from shirg.model.options import VisualOptions, reads_question
from shirg.model.profile import NO_WATCH
from shirg.model.prompt import IMAGE_TOKEN_ID, question_token_ids
from shirg.tokens.dual_scale import dual_scale
from shirg.tokens.registry import select_tokens
from shirg.tokens.types import KIND_SCAFFOLD, DualScaleTokens, TextContext, TokenSet, hi_subset
from shirg.vision.encode import encode_dual_scale
from shirg.vision.preprocess import PreparedImage, prepare_image, to_tensor

if TYPE_CHECKING:
    from shirg.model.lavida import LavidaModel


def patch_size(model: LavidaModel) -> int:
    """The tower's patch side in pixels (14 for SigLIP so400m)."""
    return int(model.config.vision.patch_size)


def question_context(model: LavidaModel, questions: Sequence[str]) -> TextContext:
    """Question-token input embeddings (no template tokens), padded, with a mask."""
    ids = [question_token_ids(q, model.tokenizer) for q in questions]
    t = max(1, max(len(i) for i in ids))
    table = torch.zeros(len(ids), t, dtype=torch.long)
    mask = torch.zeros(len(ids), t, dtype=torch.bool)
    for b, row in enumerate(ids):
        table[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = True
    embeds = model.model.embed(table.to(model.device))
    return TextContext(project=model.project, question=embeds, question_mask=mask.to(model.device),
                       head=model.relevance_head)


def lavida_visual(model: LavidaModel, images: Sequence[Image.Image], mode: str, watch=NO_WATCH,
                  pool: bool | None = None) -> list[Tensor]:
    """LaViDa's own layouts: ``lavida`` (anyres views + unpad + newlines), ``lowres`` (one padded
    view, pooled, one newline: 197 tokens at so400m) or ``lavida-pad`` (LaViDa's lmms-eval single
    view: one padded view, 729 tokens, never pooled, no newline).

    ``pool`` None follows the checkpoint (``pool_views``); True / False forces LaViDa's bilinear
    27 -> 14 pooling on or off (LaViDa's stage-1 / low-res checkpoints were evaluated without it).
    """
    core, cfg = model.model, model.config
    view = cfg.vision.image_size  # 384 for SigLIP so400m; smaller towers keep their own view size
    with watch.stage("preprocess"):
        if mode in ("lowres", "lavida-pad") or cfg.image_aspect_ratio != "anyres":
            views = [[expand2square(img).resize((view, view), Image.Resampling.BICUBIC)] for img in images]
            grids = [None] * len(images)
        else:
            pairs = [anyres_views(img, cfg.pinpoints, view) for img in images]
            views, grids = [p[0] for p in pairs], [p[1] for p in pairs]
        pixels = torch.stack([to_tensor(v) for vs in views for v in vs]).to(model.device, model.dtype)
    with watch.stage("vision"):
        feats = core.vision_tower(pixels)
    with watch.stage("project"):
        x = model.project(feats)
        if mode == "lavida-pad":
            return list(x.unbind(0))
        if cfg.pool_views if pool is None else pool:
            x = pool_view_tokens(x)
    out, start = [], 0
    t = math.isqrt(x.shape[1])
    newline = core.image_newline.to(x.dtype)
    for img, vs, grid in zip(images, views, grids, strict=True):
        v = x[start : start + len(vs)]
        start += len(vs)
        if grid is None:
            out.append(torch.cat([v[0], newline[None]], dim=0))
        else:
            tiles = v[1:].reshape(len(vs) - 1, t, t, -1)
            out.append(unpad_merge(v[0], tiles, grid, img.size, newline))
    return out


def select_visual(
    model: LavidaModel,
    tokens: DualScaleTokens,
    questions: Sequence[str],
    mode: str,
    opts: VisualOptions,
) -> TokenSet:
    """The tokens a high-resolution mode keeps: ``full`` (every hi-detail token) or its strategy."""
    if mode == "full":
        all_idx = torch.arange(tokens.num_hi, device=tokens.hi.device).expand(tokens.batch_size, -1)
        return hi_subset(tokens, all_idx, "full")
    text = question_context(model, questions) if reads_question(mode) else None
    return select_tokens(mode, tokens, opts.budget(patch_size(model)), text, scaffold=opts.scaffold,
                         **opts.strategy_options(mode))


def hires_visual(
    model: LavidaModel,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    mode: str,
    opts: VisualOptions,
    watch=NO_WATCH,
) -> list[Tensor]:
    """One SigLIP pass at R x R, then ``full`` (all tokens) or a selection strategy, coordinates, projector."""
    return hires_selection(model, images, questions, mode, opts, watch)[0]


def hires_selection(
    model: LavidaModel,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    mode: str,
    opts: VisualOptions,
    watch=NO_WATCH,
) -> tuple[list[Tensor], TokenSet, list[tuple[float, float, float, float]]]:
    """:func:`hires_visual`, also returning the selection and each image's content box."""
    core = model.model
    with watch.stage("preprocess"):
        prepared = [prepare_image(img, opts.resolution, opts.resize) for img in images]
        pixels = torch.stack([p.pixels for p in prepared]).to(model.device, model.dtype)
        boxes = torch.tensor([p.content_box for p in prepared], device=model.device)
    with watch.stage("vision"):
        feats = core.vision_tower(pixels)
    # No no_grad here: scores and decisions are computed without gradients inside the strategies,
    # while the kept features stay differentiable for training (answer() itself runs under no_grad).
    with watch.stage("select"):
        sel = select_visual(model, dual_scale(feats, boxes), questions, mode, opts)
    with watch.stage("project"):
        x = sel.features
        if opts.coords and mode == "shirg":
            x = model.shirg["coord_embed"].add_to(x, sel.boxes, sel.kind != KIND_SCAFFOLD)
        x = model.project(x)
    return list(x.unbind(0)), sel, [tuple(p.content_box) for p in prepared]


def splice(model: LavidaModel, prompt_ids: list[list[int]], visual: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Replace each prompt's image placeholder by its visual block; right-pad.

    Returns embeddings [B, L, d] and key mask [B, L] (True = real token).
    """
    core = model.model
    rows = []
    for ids, vis in zip(prompt_ids, visual, strict=True):
        p = ids.index(IMAGE_TOKEN_ID)
        t = torch.tensor([i for i in ids if i != IMAGE_TOKEN_ID], device=model.device)
        emb = core.embed(t)
        rows.append(torch.cat([emb[:p], vis.to(emb.dtype), emb[p:]], dim=0))
    length = max(r.shape[0] for r in rows)
    d = rows[0].shape[1]
    embeds = torch.zeros(len(rows), length, d, dtype=rows[0].dtype, device=model.device)
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=model.device)
    for b, r in enumerate(rows):
        embeds[b, : r.shape[0]] = r
        mask[b, : r.shape[0]] = True
    return embeds, mask


# ----------------------------------------------------------------------------- one image's selection


@torch.no_grad()
def encode_for(model: LavidaModel, image, opts: VisualOptions) -> tuple[DualScaleTokens, PreparedImage]:
    """One vision pass at the options' resolution and resize: (DualScaleTokens of a batch of one, PreparedImage)."""
    tokens, prepared = encode_dual_scale(model.model.vision_tower, [image], opts.resolution, opts.resize)
    return tokens, prepared[0]


@torch.no_grad()
def selection_for(model: LavidaModel, image, question: str, mode: str, opts: VisualOptions,
                  encoded=None) -> tuple[TokenSet, PreparedImage]:
    """The TokenSet a high-resolution mode keeps for one (image, question), and the prepared image.
    ``encoded``: a result of :func:`encode_for` with the same resolution and resize, reused instead of
    running the vision tower again."""
    tokens, prepared = encoded if encoded is not None else encode_for(model, image, opts)
    return select_visual(model, tokens, [question], mode, opts), prepared
