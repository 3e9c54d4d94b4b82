"""Distance-aware relevance score (docs/method.md section 2).

    s_i = w_sim * z(Sim_i) + w_nbr * z(Nbr_i) + w_ctr * z(Ctr_i)

with signed weights (default (0.7, -0.2, -0.1)) and z() a per-image z-score over the image's real
(non-padding) tokens. Each term is exposed separately so it can be inspected and ablated.

The text term projects every hi-detail token through the projector, the score's one expensive step.
``sim_stride`` s > 1 computes it on the means of s x s cells of the hi grid instead (s^2 times fewer
projections) and gives every token its cell's value; 1 (the default) is the per-token definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from shirg.errors import ConfigError
from shirg.options import DEFAULT_WEIGHTS, SCORE_SOURCES, TEXT_POOLS, check_head_source, check_sim_stride
from shirg.tokens.types import DualScaleTokens, TextContext


@dataclass
class ScoreTerms:
    """The three raw terms and the combined score, each [B, N].

    ``used_text`` [B] bool says which samples got text relevance (False: saliency fallback).
    """

    sim: Tensor
    nbr: Tensor
    ctr: Tensor
    score: Tensor
    used_text: Tensor


def saliency(hi: Tensor) -> Tensor:
    """Query-agnostic distinctiveness 1 - cos(H_i, mean_k H_k). hi: [B, N, D] -> [B, N]."""
    mean = hi.mean(dim=1, keepdim=True)
    return 1.0 - F.cosine_similarity(hi, mean.expand_as(hi), dim=-1)


def text_similarity(projected: Tensor, question: Tensor, mask: Tensor, pool: str = "max") -> Tensor:
    """Sim_i = max_j (or mean_j) cos(v_i, q_j) over the real question tokens.

    Args:
        projected: [B, N, E] visual tokens in the LLM embedding space.
        question: [B, T, E] question-token input embeddings.
        mask: [B, T] bool, real question tokens.
    Returns:
        [B, N]; rows whose mask is empty are 0.
    """
    if pool not in TEXT_POOLS:
        raise ConfigError(f"unknown text_pool {pool!r}; choose one of {', '.join(TEXT_POOLS)}")
    v = F.normalize(projected.float(), dim=-1)
    q = F.normalize(question.float(), dim=-1)
    return pool_words(torch.einsum("bne,bte->bnt", v, q), mask, pool)


def pool_words(pair: Tensor, mask: Tensor, pool: str = "max") -> Tensor:
    """[B, N, T] per-(token, question word) scores pooled over the real words (``mask`` [B, T]) by
    their maximum or mean: [B, N]; rows whose mask is empty are 0."""
    if pool not in TEXT_POOLS:
        raise ConfigError(f"unknown text_pool {pool!r}; choose one of {', '.join(TEXT_POOLS)}")
    m = mask[:, None, :]
    if pool == "max":
        out = pair.masked_fill(~m, float("-inf")).amax(dim=-1)
        return torch.where(mask.any(dim=1, keepdim=True), out, torch.zeros_like(out))
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    return (pair * m).sum(dim=-1) / count


def pool_cells(hi: Tensor, grid: int, stride: int) -> Tensor:
    """Means of the stride x stride cells of the hi grid, raster order: [B, G*G, D] -> [B, g*g, D] with
    g = ceil(G / stride); a cell cut by the grid's edge averages the tokens it has."""
    if stride == 1:
        return hi
    b, _, d = hi.shape
    x = hi.reshape(b, grid, grid, d).permute(0, 3, 1, 2)
    return F.avg_pool2d(x, stride, stride, ceil_mode=True).flatten(2).transpose(1, 2)


def spread_cells(values: Tensor, grid: int, stride: int) -> Tensor:
    """Every token takes its cell's value (the inverse layout of :func:`pool_cells`): [B, g*g] -> [B, G*G]."""
    if stride == 1:
        return values
    cells = -(-grid // stride)
    row = torch.arange(grid, device=values.device) // stride
    return values[:, (row[:, None] * cells + row[None, :]).reshape(-1)]


def project_hi(tokens: DualScaleTokens, text: TextContext, sim_stride: int = 1) -> Tensor:
    """The hi tokens the text term compares with the question, in the LLM embedding space: every token
    (stride 1) or every stride x stride cell's mean. [B, G*G or g*g, E]."""
    check_sim_stride(sim_stride, tokens.grid)
    return text.project(pool_cells(tokens.hi, tokens.grid, sim_stride))


def neighbour_distance(hi: Tensor, grid: int) -> Tensor:
    """Nbr_i: mean L2 distance of the normalized token to its 8-connected grid neighbours.

    Border tokens average over the neighbours they have. hi: [B, G*G, D] -> [B, G*G].
    """
    b, n, d = hi.shape
    h = F.normalize(hi.float(), dim=-1).reshape(b, grid, grid, d)
    padded = F.pad(h, (0, 0, 1, 1, 1, 1))
    present = F.pad(torch.ones(1, grid, grid, device=hi.device), (1, 1, 1, 1))
    total = torch.zeros(b, grid, grid, device=hi.device)
    count = torch.zeros(1, grid, grid, device=hi.device)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = padded[:, 1 + dy : 1 + dy + grid, 1 + dx : 1 + dx + grid]
            ok = present[:, 1 + dy : 1 + dy + grid, 1 + dx : 1 + dx + grid]
            total += (h - nb).norm(dim=-1) * ok
            count += ok
    return (total / count).reshape(b, n)


def centre_distance(boxes: Tensor) -> Tensor:
    """Ctr_i: distance of the box centre to the canvas centre over the corner distance. [B, N, 4] -> [B, N]."""
    d = (boxes[..., :2].float() - 0.5).norm(dim=-1)
    return d / (0.5 * 2**0.5)


def zscore(x: Tensor, mask: Tensor) -> Tensor:
    """Standardize each row over the entries where mask is True (all entries if none are). [B, N]."""
    m = torch.where(mask.any(dim=1, keepdim=True), mask, torch.ones_like(mask)).float()
    count = m.sum(dim=1, keepdim=True)
    mean = (x * m).sum(dim=1, keepdim=True) / count
    var = (((x - mean) ** 2) * m).sum(dim=1, keepdim=True) / count
    return (x - mean) / var.sqrt().clamp(min=1e-6)


def check_weights(weights: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    if len(weights) != 3:
        raise ConfigError(
            f"score weights need 3 values (sim, nbr, ctr), got {len(weights)}: {list(weights)}; "
            f"the default is {DEFAULT_WEIGHTS}"
        )
    return (float(weights[0]), float(weights[1]), float(weights[2]))


def relevance(tokens: DualScaleTokens, text: TextContext | None, text_pool: str = "max",
              projected: Tensor | None = None, sim_stride: int = 1) -> tuple[Tensor, Tensor]:
    """Sim_i (docs/method.md section 2) and which samples used their question: ([B, N], bool [B]).

    Text similarity (pooled over question tokens by ``text_pool``) for samples with a question;
    saliency for samples without one, and for every sample when ``text`` is None. ``projected``:
    ``project_hi(tokens, text, sim_stride)`` when the caller has it already (it is the expensive part).
    ``sim_stride`` > 1: the text similarity of each token's s x s cell (module docstring).
    """
    hi = tokens.hi
    b = hi.shape[0]
    sal = saliency(hi.float())
    used_text = torch.zeros(b, dtype=torch.bool, device=hi.device)
    if text is None:
        return sal, used_text
    mask = text.mask().to(hi.device)
    if mask.shape[0] != b or text.question.shape[0] != b:
        raise ConfigError(f"question batch {text.question.shape[0]} does not match image batch {b}")
    used_text = mask.any(dim=1)
    if not bool(used_text.any()):
        return sal, used_text
    if projected is None:
        projected = project_hi(tokens, text, sim_stride)
    txt = spread_cells(text_similarity(projected, text.question.to(hi.device), mask, text_pool), tokens.grid,
                       sim_stride)
    return torch.where(used_text[:, None], txt, sal), used_text


@torch.no_grad()
def shirg_scores(
    tokens: DualScaleTokens,
    text: TextContext | None = None,
    weights: tuple[float, ...] = DEFAULT_WEIGHTS,
    source: str = "text",
    text_pool: str = "max",
    sim_stride: int = 1,
) -> ScoreTerms:
    """Score every hi-detail token. Selection is not differentiable, so this runs under no_grad.

    Args:
        tokens: the dual-scale tokens of a batch.
        text: projector + question embeddings; None (or ``source="saliency"``) uses saliency.
        weights: signed (w_sim, w_nbr, w_ctr).
        source: "text" (falls back to saliency per sample with no question) or "saliency"; "head"
            needs a relevance head (:func:`shirg.tokens.relevance_head.learned_scores`) and is saliency
            for a batch without a question.
        text_pool: "max" or "mean" over question tokens.
        sim_stride: the text term per token (1) or per s x s cell of the hi grid.
    Returns:
        ScoreTerms with [B, N] tensors.
    """
    w_sim, w_nbr, w_ctr = check_weights(weights)
    if source not in SCORE_SOURCES:
        raise ConfigError(f"unknown score source {source!r}; choose one of {', '.join(SCORE_SOURCES)}")
    if text is not None and bool(text.mask().any()):
        check_head_source(None, source)
    hi = tokens.hi
    sim, used_text = relevance(tokens, text if source == "text" else None, text_pool, sim_stride=sim_stride)
    nbr = neighbour_distance(hi, tokens.grid)
    ctr = centre_distance(tokens.hi_boxes)
    real = tokens.hi_real
    score = w_sim * zscore(sim, real) + w_nbr * zscore(nbr, real) + w_ctr * zscore(ctr, real)
    return ScoreTerms(sim=sim, nbr=nbr, ctr=ctr, score=score, used_text=used_text)
