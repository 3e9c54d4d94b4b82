"""A relevance the gate can learn: a small text-to-token head added to SHIRG's text term.

    Sim'_i = Sim_i + scale * pool_j <A x_i, B q_j> / sqrt(r)

``q_j`` are the question's token embeddings, A and B rank-r maps, ``pool`` the maximum or the mean
over the question's tokens, and ``scale`` a scalar initialised to 0: an untrained head adds exactly
0, so the score, the ranking and the selection are exactly today's. Selection stays static (made
once, before the first denoising step, from the vision features and the question only) and so
compatible with the prefix cache; the head only changes the ranking.

What ``x_i`` is, the head's ``reads``:

- ``projected``: hi-detail token i in the LLM embedding space (the projector's output). It adds to
  the text score (``source="text"``), which projects every token anyway.
- ``tower``: token i's SigLIP feature, before the projector. It adds to the text score, or, with
  ``source="head"``, to the saliency score: a question-conditioned Sim that projects nothing, at
  the cost of saliency plus two rank-r maps.

What ``pool`` is: ``max`` scores a token by the one question word it matches best, so it can only
express "this word OR that word": for "the purple diamond" a red diamond scores as high as the purple
one. ``mean`` scores it by the sum of its matches with every word, so a token matching both words
outscores one matching either: a conjunction. Both are zero when untrained.

Samples scored by saliency (no question, or ``source="saliency"``) get no head term.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shirg.errors import ConfigError
from shirg.options import HEAD_INPUTS, TEXT_POOLS, check_head_source
from shirg.tokens.scoring import (
    DEFAULT_WEIGHTS,
    SCORE_SOURCES,
    ScoreTerms,
    centre_distance,
    check_weights,
    neighbour_distance,
    pool_cells,
    pool_words,
    project_hi,
    relevance,
    spread_cells,
    zscore,
)
from shirg.tokens.types import DualScaleTokens, TextContext

HEAD_PREFIX = "relevance_head."


class RelevanceHead(nn.Module):
    """Bilinear text-to-token relevance, zero at initialisation (``scale`` = 0).

    ``dim``: the width of what the token map reads (``reads``: the LLM width for ``projected``, the
    tower's for ``tower``); ``text_dim``: the question embeddings' width (default ``dim``); ``pool``:
    ``max`` or ``mean`` over the question's tokens."""

    def __init__(self, dim: int, rank: int = 16, seed: int = 0, text_dim: int | None = None,
                 reads: str = "projected", pool: str = "max") -> None:
        super().__init__()
        text_dim = dim if text_dim is None else text_dim
        if dim < 1 or rank < 1 or text_dim < 1:
            raise ValueError(f"dim {dim}, text_dim {text_dim} and rank {rank} must be >= 1")
        if reads not in HEAD_INPUTS:
            raise ConfigError(f"a relevance head reads one of {', '.join(HEAD_INPUTS)}, not {reads!r}")
        if pool not in TEXT_POOLS:
            raise ConfigError(f"a relevance head pools the question by one of {', '.join(TEXT_POOLS)}, not {pool!r}")
        self.rank = rank
        self.reads = reads
        self.pool = pool
        self.token = nn.Linear(dim, rank, bias=False)
        self.text = nn.Linear(text_dim, rank, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # seeded, so two heads built alike are alike
            self.token.weight.copy_(torch.randn(rank, dim, generator=g) / math.sqrt(dim))
            self.text.weight.copy_(torch.randn(rank, text_dim, generator=g) / math.sqrt(text_dim))
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, projected: Tensor, question: Tensor, mask: Tensor) -> Tensor:
        """[B, N] head term; rows without a question token are 0."""
        a = self.token(projected.to(self.token.weight.dtype)).float()
        b = self.text(question.to(self.text.weight.dtype)).float()
        pair = torch.einsum("bnr,btr->bnt", a, b) / math.sqrt(self.rank)
        return self.scale.float() * pool_words(pair, mask, self.pool)


def head_relevance(tokens: DualScaleTokens, text: TextContext | None, head: RelevanceHead | None,
                   text_pool: str = "max", sim_stride: int = 1, source: str = "text") -> tuple[Tensor, Tensor]:
    """SHIRG's Sim of ``source`` (no gradient) plus the head's term (gradient to the head only):
    ([B, N], used_text [B]). With ``sim_stride`` > 1 both are computed per s x s cell of the hi grid.

    ``source`` "text": the text similarity plus a head of either kind; "saliency": saliency, no head
    term; "head": saliency plus a ``tower`` head's term, nothing projected."""
    if source not in SCORE_SOURCES:
        raise ConfigError(f"unknown score source {source!r}; choose one of {', '.join(SCORE_SOURCES)}")
    base_text = text if source == "text" else None
    asks = text is not None and bool(text.mask().any())
    if asks:
        check_head_source(head, source)
    if head is None or not asks or source == "saliency":  # no head term
        with torch.no_grad():
            return relevance(tokens, base_text, text_pool, sim_stride=sim_stride)
    with torch.no_grad():
        mask = text.mask().to(tokens.hi.device)
        question = text.question.to(tokens.hi.device)
        if head.reads == "projected":  # the projection is computed once, for Sim and for the head
            x = project_hi(tokens, text, sim_stride)
            sim, used_text = relevance(tokens, text, text_pool, projected=x, sim_stride=sim_stride)
        else:
            x = pool_cells(tokens.hi, tokens.grid, sim_stride)
            sim, used_text = relevance(tokens, base_text, text_pool, sim_stride=sim_stride)
            used_text = used_text | mask.any(dim=1)
    if not bool(used_text.any()):
        return sim, used_text
    delta = spread_cells(head(x.detach(), question.detach(), mask), tokens.grid, sim_stride)
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
    With ``head`` None or untrained (scale 0) the result equals ``shirg_scores`` exactly (for
    ``source="head"``: ``shirg_scores`` with ``source="saliency"``)."""
    w_sim, w_nbr, w_ctr = check_weights(weights)
    sim, used_text = head_relevance(tokens, text, head, text_pool, sim_stride, source)
    with torch.no_grad():
        nbr = neighbour_distance(tokens.hi, tokens.grid)
        ctr = centre_distance(tokens.hi_boxes)
    real = tokens.hi_real
    score = w_sim * zscore(sim, real) + w_nbr * zscore(nbr, real) + w_ctr * zscore(ctr, real)
    return ScoreTerms(sim=sim, nbr=nbr, ctr=ctr, score=score, used_text=used_text)
