"""A relevance the gate can learn: a small text-to-token head added to SHIRG's text term.

    Sim'_i = Sim_i + scale * max_j <A v_i, B q_j> / sqrt(r)

``v_i`` is hi-detail token i in the LLM embedding space (the projector's output), ``q_j`` the
question's token embeddings, A and B rank-r maps and ``scale`` a scalar initialised to 0: an
untrained head adds exactly 0, so the score, the ranking and the selection are exactly today's.
Selection stays static (made once, before the first denoising step, from the vision features and
the question only) and so compatible with the prefix cache; the head only changes the ranking.

Samples scored by saliency (no question, or ``source="saliency"``) get no head term.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shirg.errors import ConfigError
from shirg.tokens.scoring import (
    DEFAULT_WEIGHTS,
    SCORE_SOURCES,
    ScoreTerms,
    centre_distance,
    check_weights,
    neighbour_distance,
    project_hi,
    relevance,
    spread_cells,
    zscore,
)
from shirg.tokens.types import DualScaleTokens, TextContext

HEAD_PREFIX = "relevance_head."


class RelevanceHead(nn.Module):
    """Bilinear text-to-token relevance, zero at initialisation (``scale`` = 0)."""

    def __init__(self, dim: int, rank: int = 16, seed: int = 0) -> None:
        super().__init__()
        if dim < 1 or rank < 1:
            raise ValueError(f"dim {dim} and rank {rank} must be >= 1")
        self.rank = rank
        self.token = nn.Linear(dim, rank, bias=False)
        self.text = nn.Linear(dim, rank, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # seeded, so two heads built alike are alike
            self.token.weight.copy_(torch.randn(rank, dim, generator=g) / math.sqrt(dim))
            self.text.weight.copy_(torch.randn(rank, dim, generator=g) / math.sqrt(dim))
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, projected: Tensor, question: Tensor, mask: Tensor) -> Tensor:
        """[B, N] head term; rows without a question token are 0."""
        a = self.token(projected.to(self.token.weight.dtype)).float()
        b = self.text(question.to(self.text.weight.dtype)).float()
        pair = torch.einsum("bnr,btr->bnt", a, b) / math.sqrt(self.rank)
        best = pair.masked_fill(~mask[:, None, :], float("-inf")).amax(dim=-1)
        has = mask.any(dim=1, keepdim=True)
        best = torch.where(has, best, torch.zeros_like(best))
        return self.scale.float() * best


def head_relevance(tokens: DualScaleTokens, text: TextContext | None, head: RelevanceHead | None,
                   text_pool: str = "max", sim_stride: int = 1) -> tuple[Tensor, Tensor]:
    """SHIRG's Sim (no gradient) plus the head's term (gradient to the head only): ([B, N], used_text [B]).
    With ``sim_stride`` > 1 both are computed per s x s cell of the hi grid."""
    if head is None or text is None or not bool(text.mask().any()):  # no question: nothing to project
        with torch.no_grad():
            return relevance(tokens, text, text_pool, sim_stride=sim_stride)
    with torch.no_grad():  # the projection is computed once, for Sim and for the head
        projected = project_hi(tokens, text, sim_stride)
        sim, used_text = relevance(tokens, text, text_pool, projected=projected, sim_stride=sim_stride)
        question = text.question.to(tokens.hi.device)
    if not bool(used_text.any()):
        return sim, used_text
    delta = spread_cells(head(projected.detach(), question.detach(), text.mask().to(tokens.hi.device)),
                         tokens.grid, sim_stride)
    return torch.where(used_text[:, None], sim + delta, sim), used_text


def learned_scores(
    tokens: DualScaleTokens,
    text: TextContext | None = None,
    head: RelevanceHead | None = None,
    weights: tuple[float, ...] = DEFAULT_WEIGHTS,
    source: str = "text",
    text_pool: str = "max",
    sim_stride: int = 1,
) -> ScoreTerms:
    """:func:`shirg.tokens.scoring.shirg_scores` with the head's term in Sim; differentiable in the head.
    With ``head`` None or untrained (scale 0) the result equals ``shirg_scores`` exactly."""
    w_sim, w_nbr, w_ctr = check_weights(weights)
    if source not in SCORE_SOURCES:
        raise ConfigError(f"unknown score source {source!r}; choose one of {', '.join(SCORE_SOURCES)}")
    sim, used_text = head_relevance(tokens, text if source == "text" else None, head, text_pool, sim_stride)
    with torch.no_grad():
        nbr = neighbour_distance(tokens.hi, tokens.grid)
        ctr = centre_distance(tokens.hi_boxes)
    real = tokens.hi_real
    score = w_sim * zscore(sim, real) + w_nbr * zscore(nbr, real) + w_ctr * zscore(ctr, real)
    return ScoreTerms(sim=sim, nbr=nbr, ctr=ctr, score=score, used_text=used_text)
