"""The SHIRG strategy: distance-aware score, optional 2 x 2 merging, covered top-K, raster order."""

from __future__ import annotations

import torch

from shirg.options import ShirgOptions
from shirg.tokens.registry import register
from shirg.tokens.relevance_head import learned_scores
from shirg.tokens.scoring import shirg_scores
from shirg.tokens.selection import Candidates, check_budget, covered_topk, merge_neighbours
from shirg.tokens.types import DualScaleTokens, TextContext, TokenSet


@register("shirg", reads_question=True, options=ShirgOptions,
          help="distance-aware score, 2 x 2 merging, covered top-K (SHIRG)")
def select_shirg(
    tokens: DualScaleTokens,
    k: int,
    text: TextContext | None = None,
    options: ShirgOptions | None = None,
) -> TokenSet:
    """SHIRG: distance-aware score, optional 2 x 2 merging, covered top-K, raster order.

    tokens.hi: [B, N, D] -> TokenSet features [B, K, D].
    """
    opts = options or ShirgOptions()
    cover_grid = tokens.scaffold_grid if opts.coverage else None
    check_budget(k, tokens.num_hi, cover_grid)
    if text is not None and text.head is not None:  # a loaded relevance head adds its term to Sim
        with torch.no_grad():
            terms = learned_scores(tokens, text, text.head, opts.weights, opts.source, opts.text_pool,
                                   opts.sim_stride)
    else:
        terms = shirg_scores(tokens, text, opts.weights, opts.source, opts.text_pool, opts.sim_stride)
    cand = Candidates.from_tokens(tokens, terms.score)
    if opts.merge:
        cand = merge_neighbours(cand, tokens.grid, k, opts.merge_eps)
    idx = covered_topk(cand.score, cand.boxes, cand.real, cand.alive, k, cover_grid)
    return cand.take(idx, tokens.grid, "shirg")
