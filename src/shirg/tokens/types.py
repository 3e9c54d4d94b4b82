"""Data containers shared by every token strategy.

Shapes use B = batch, N = G*G hi-detail tokens, M = tokens kept, D = vision width (1152 for
SigLIP so400m), E = language-model width (4096 for LLaDA-8B), T = question tokens.
Boxes are (cx, cy, w, h) in [0, 1] of the square image canvas (padding included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# Provenance codes stored in ``TokenSet.kind``.
KIND_SCAFFOLD = 0  # a pooled 4 x 4 scaffold token (always kept)
KIND_HI = 1  # one original hi-detail token
KIND_MERGED = 2  # several hi-detail tokens merged into one (SHIRG 2 x 2 merge, ToMe, VisionZip context)
KIND_POOLED = 3  # a token resampled from the hi-detail grid (the `pool` baseline)

KIND_NAMES = {KIND_SCAFFOLD: "scaffold", KIND_HI: "hi", KIND_MERGED: "merged", KIND_POOLED: "pooled"}


@dataclass
class DualScaleTokens:
    """Both scales of one SigLIP pass over a padded R x R canvas.

    Attributes:
        hi: [B, N, D] hi-detail tokens, raster order, N = grid * grid.
        hi_boxes: [B, N, 4] (cx, cy, w, h) with w = h = 1 / grid.
        hi_real: [B, N] bool, True where the token overlaps the image (not wholly padding).
        scaffold: [B, S*S, D] average-pooled tokens, S = ceil(grid / 4).
        scaffold_boxes: [B, S*S, 4].
        scaffold_real: [B, S*S] bool, True where the cell overlaps the image.
        grid: G, hi-detail tokens per side.
        scaffold_grid: S, scaffold tokens per side.
    """

    hi: Tensor
    hi_boxes: Tensor
    hi_real: Tensor
    scaffold: Tensor
    scaffold_boxes: Tensor
    scaffold_real: Tensor
    grid: int
    scaffold_grid: int

    @property
    def batch_size(self) -> int:
        return self.hi.shape[0]

    @property
    def num_hi(self) -> int:
        return self.hi.shape[1]

    def index_batch(self, i: int) -> DualScaleTokens:
        """The i-th sample as a batch of one."""
        return DualScaleTokens(
            hi=self.hi[i : i + 1],
            hi_boxes=self.hi_boxes[i : i + 1],
            hi_real=self.hi_real[i : i + 1],
            scaffold=self.scaffold[i : i + 1],
            scaffold_boxes=self.scaffold_boxes[i : i + 1],
            scaffold_real=self.scaffold_real[i : i + 1],
            grid=self.grid,
            scaffold_grid=self.scaffold_grid,
        )


@dataclass
class TextContext:
    """What the text-relevance term needs, passed in as tensors (the model wiring lives elsewhere).

    Attributes:
        project: maps vision features [B, N, D] into the LLM embedding space [B, N, E]
            (LaViDa's ``mm_projector``).
        question: [B, T, E] LLM input embeddings of the question tokens (no template tokens).
        question_mask: [B, T] bool, True for real question tokens. A row with no True entry
            means "no question" for that sample (the saliency score is used instead).
        head: a loaded relevance head, or None (SHIRG's score as defined).
    """

    project: Callable[[Tensor], Tensor]
    question: Tensor
    question_mask: Tensor | None = None
    # a trained relevance head (shirg.tokens.relevance_head.RelevanceHead) SHIRG adds to its text term
    head: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None

    def mask(self) -> Tensor:
        if self.question_mask is not None:
            return self.question_mask.bool()
        return torch.ones(self.question.shape[:2], dtype=torch.bool, device=self.question.device)


@dataclass
class TokenSet:
    """The final visual token set a strategy hands to the projector.

    Attributes:
        features: [B, M, D] vision features (before the projector).
        boxes: [B, M, 4] (cx, cy, w, h) of each kept token on the canvas.
        kind: [B, M] long, provenance code (KIND_*).
        index: [B, M] long, index of the source token in its own grid: scaffold cell index for
            scaffold tokens, hi-detail index for hi tokens, the lowest member index for merged
            tokens, the pooled-grid index for pooled tokens.
        grid: G of the hi-detail grid the set was built from.
        scaffold_grid: S of the scaffold (0 when the scaffold is not included).
        strategy: the strategy's registry name.
    """

    features: Tensor
    boxes: Tensor
    kind: Tensor
    index: Tensor
    grid: int
    scaffold_grid: int
    strategy: str

    @property
    def num_tokens(self) -> int:
        return self.features.shape[1]

    def index_batch(self, i: int) -> TokenSet:
        """The i-th sample as a batch of one."""
        return TokenSet(
            features=self.features[i : i + 1],
            boxes=self.boxes[i : i + 1],
            kind=self.kind[i : i + 1],
            index=self.index[i : i + 1],
            grid=self.grid,
            scaffold_grid=self.scaffold_grid,
            strategy=self.strategy,
        )

    def with_scaffold(self, tokens: DualScaleTokens) -> TokenSet:
        """Prepend the scaffold tokens (raster order) to this set."""
        b, s2, _ = tokens.scaffold.shape
        device = tokens.scaffold.device
        kind = torch.full((b, s2), KIND_SCAFFOLD, dtype=torch.long, device=device)
        index = torch.arange(s2, device=device).expand(b, s2)
        return TokenSet(
            features=torch.cat([tokens.scaffold, self.features], dim=1),
            boxes=torch.cat([tokens.scaffold_boxes, self.boxes], dim=1),
            kind=torch.cat([kind, self.kind], dim=1),
            index=torch.cat([index, self.index], dim=1),
            grid=self.grid,
            scaffold_grid=tokens.scaffold_grid,
            strategy=self.strategy,
        )


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Gather along the token axis. x: [B, N, C] or [B, N]; idx: [B, M] -> [B, M, C] or [B, M]."""
    if x.dim() == 2:
        return torch.gather(x, 1, idx)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def hi_subset(tokens: DualScaleTokens, idx: Tensor, strategy: str) -> TokenSet:
    """A TokenSet made of the hi-detail tokens at indices idx [B, M] (already in output order)."""
    return TokenSet(
        features=gather_tokens(tokens.hi, idx),
        boxes=gather_tokens(tokens.hi_boxes, idx),
        kind=torch.full_like(idx, KIND_HI),
        index=idx,
        grid=tokens.grid,
        scaffold_grid=0,
        strategy=strategy,
    )
