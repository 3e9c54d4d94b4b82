"""Static selection with a coverage guarantee, and neighbour-aware 2 x 2 merging
(docs/method.md sections 3 and 4).

Everything is vectorized over the batch and token axes; a batch of B gives the same result as B
runs of one. Merged-away tokens stay in the tensors as "dead" entries (``alive`` False) so shapes
never depend on the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from shirg.errors import ConfigError
from shirg.tokens.dual_scale import cell_of_boxes
from shirg.tokens.types import KIND_HI, KIND_MERGED, DualScaleTokens, TokenSet, gather_tokens


@dataclass
class Candidates:
    """Hi-detail candidates for selection, all [B, N, ...]; dead entries are never selected.

    features [B, N, D], boxes [B, N, 4], area [B, N] (in hi tokens), score [B, N], real [B, N] bool,
    alive [B, N] bool, kind [B, N] long (KIND_HI or KIND_MERGED).
    """

    features: Tensor
    boxes: Tensor
    area: Tensor
    score: Tensor
    real: Tensor
    alive: Tensor
    kind: Tensor

    @classmethod
    def from_tokens(cls, tokens: DualScaleTokens, score: Tensor) -> Candidates:
        b, n = score.shape
        return cls(
            features=tokens.hi,
            boxes=tokens.hi_boxes,
            area=torch.ones(b, n, device=score.device),
            score=score,
            real=tokens.hi_real,
            alive=torch.ones(b, n, dtype=torch.bool, device=score.device),
            kind=torch.full((b, n), KIND_HI, dtype=torch.long, device=score.device),
        )

    def take(self, idx: Tensor, grid: int, strategy: str) -> TokenSet:
        """The candidates at idx [B, K] as a TokenSet."""
        return TokenSet(
            features=gather_tokens(self.features, idx),
            boxes=gather_tokens(self.boxes, idx),
            kind=gather_tokens(self.kind, idx),
            index=idx,
            grid=grid,
            scaffold_grid=0,
            strategy=strategy,
        )


def check_budget(k: int, num_tokens: int, scaffold_grid: int | None = None) -> None:
    """Raise a clear error when K cannot be honoured."""
    if k > num_tokens:
        raise ConfigError(f"K = {k} is larger than the {num_tokens} hi-detail tokens available; lower K")
    if k < 1:
        raise ConfigError(f"K must be at least 1, got {k}")
    if scaffold_grid is not None and k < scaffold_grid**2:
        raise ConfigError(
            f"K = {k} is smaller than the {scaffold_grid**2} coverage cells ({scaffold_grid} x {scaffold_grid}); "
            f"raise K to at least {scaffold_grid**2} or turn coverage off"
        )


def _descending_order(score: Tensor, tier: Tensor) -> Tensor:
    """Indices sorted by (tier desc, score desc, index asc). score, tier: [B, N] -> [B, N]."""
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    by_tier = torch.sort(tier.gather(1, order), dim=1, descending=True, stable=True).indices
    return order.gather(1, by_tier)


@torch.no_grad()
def covered_topk(
    score: Tensor,
    boxes: Tensor,
    real: Tensor,
    alive: Tensor,
    k: int,
    scaffold_grid: int | None,
) -> Tensor:
    """Pick K indices: the best real token of every coverage cell first, then the best of the rest.

    Args:
        score: [B, N] higher is better.
        boxes: [B, N, 4]; a token's cell is the scaffold cell holding its centre.
        real: [B, N] bool; padding tokens are only taken once real ones run out.
        alive: [B, N] bool; dead (merged-away) tokens are never taken.
        k: tokens to keep.
        scaffold_grid: S for the S x S coverage cells; None disables coverage.
    Returns:
        [B, K] long indices in ascending (raster) order. Ties go to the lower index.
    """
    b, n = score.shape
    check_budget(k, n, scaffold_grid)
    n_alive = alive.sum(dim=1)
    if bool((n_alive < k).any()):
        raise ConfigError(f"only {int(n_alive.min())} selectable tokens remain for K = {k}")
    tier = alive.long() * (1 + real.long())  # 2 real, 1 padding, 0 dead
    if scaffold_grid is not None:
        order = _descending_order(score, tier)
        cells = cell_of_boxes(boxes, scaffold_grid).gather(1, order)
        eligible = (alive & real).gather(1, order)
        pos = torch.arange(n, device=score.device).expand(b, n)
        pos = torch.where(eligible, pos, torch.full_like(pos, n))
        first = torch.full((b, scaffold_grid**2), n, dtype=torch.long, device=score.device)
        first = first.scatter_reduce(1, cells, pos, reduce="amin")
        covered = first < n  # cells lying wholly in padding (or emptied) are exempt
        winners = order.gather(1, first.clamp(max=n - 1))
        boost = torch.zeros(b, n, dtype=torch.long, device=score.device)
        boost.scatter_(1, winners, covered.long())
        tier = tier + 3 * boost
    keep = _descending_order(score, tier)[:, :k]
    return keep.sort(dim=1).values


def merge_neighbours(cand: Candidates, grid: int, k: int, eps: float = 0.05) -> Candidates:
    """Merge 2 x 2 blocks of hi tokens whose min-max-scaled score spread is below eps.

    Blocks are the non-overlapping 2 x 2 blocks of the G x G grid (a trailing odd row/column is
    never merged) and must be wholly real. They merge in order of increasing spread (ties: lower
    block index) and merging stops before the count of real tokens would fall below K, so at
    least K tokens always stay selectable and padding is never needed while real tokens remain.
    A merged block becomes one token at its lowest index:
    area-weighted mean feature, area-weighted centroid, union box, summed area, mean score.
    The other three members become dead. The merge decision uses scores only; the averaged
    features keep their autograd history, so training reaches the tower through merged tokens.
    """
    b, n, d = cand.features.shape
    gb = grid // 2
    if gb == 0 or eps <= 0:
        return cand
    g2 = 2 * gb

    def blocks(x: Tensor) -> Tensor:  # [B, N, *C] -> [B, gb*gb, 4, *C]
        tail = x.shape[2:]
        x = x.reshape(b, grid, grid, *tail)[:, :g2, :g2]
        x = x.reshape(b, gb, 2, gb, 2, *tail).transpose(2, 3)
        return x.reshape(b, gb * gb, 4, *tail)

    s = cand.score.float()
    real = cand.real & cand.alive
    big = torch.finfo(s.dtype).max
    lo = torch.where(real, s, torch.full_like(s, big)).amin(dim=1, keepdim=True)
    hi = torch.where(real, s, torch.full_like(s, -big)).amax(dim=1, keepdim=True)
    scaled = (s - lo) / (hi - lo).clamp(min=1e-12)
    sb = blocks(scaled)
    spread = sb.amax(dim=2) - sb.amin(dim=2)  # [B, gb*gb]
    eligible = blocks(real).all(dim=2) & (spread < eps)
    # Only real blocks merge, so the real count bounds the budget: padding must never be needed.
    budget = ((real.sum(dim=1) - k) // 3).clamp(min=0)  # [B]
    spread = torch.where(eligible, spread, torch.full_like(spread, float("inf")))
    order = torch.sort(spread, dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(gb * gb, device=s.device).expand(b, -1))
    merge = eligible & (rank < budget[:, None])  # [B, gb*gb]

    area_b = blocks(cand.area)  # [B, nb, 4]
    wsum = area_b.sum(dim=2)
    w = area_b / wsum[..., None]
    feat = (blocks(cand.features).float() * w[..., None]).sum(dim=2).to(cand.features.dtype)
    box_b = blocks(cand.boxes)  # [B, nb, 4, 4]
    centroid = (box_b[..., :2] * w[..., None]).sum(dim=2)
    x0 = (box_b[..., 0] - box_b[..., 2] / 2).amin(dim=2)
    x1 = (box_b[..., 0] + box_b[..., 2] / 2).amax(dim=2)
    y0 = (box_b[..., 1] - box_b[..., 3] / 2).amin(dim=2)
    y1 = (box_b[..., 1] + box_b[..., 3] / 2).amax(dim=2)
    box = torch.cat([centroid, torch.stack([x1 - x0, y1 - y0], dim=-1)], dim=-1)
    score = blocks(cand.score).mean(dim=2)

    # Index of each block's lowest member (its top-left token) in the hi grid.
    r = torch.arange(gb, device=s.device)
    rep = ((2 * r)[:, None] * grid + 2 * r[None, :]).reshape(-1)  # [nb]
    members = torch.stack([rep, rep + 1, rep + grid, rep + grid + 1], dim=1)  # [nb, 4]
    rep_b = rep.expand(b, -1)

    def put(x: Tensor, value: Tensor) -> Tensor:
        """Write value [B, nb, *C] at the representative index of each merged block."""
        if x.dim() == 2:
            return x.scatter(1, rep_b, torch.where(merge, value.to(x.dtype), x.gather(1, rep_b)))
        idx = rep_b[..., None].expand(-1, -1, x.shape[-1])
        return x.scatter(1, idx, torch.where(merge[..., None], value.to(x.dtype), x.gather(1, idx)))

    dead = torch.zeros(b, n, dtype=torch.bool, device=s.device)
    dead[:, members[:, 1:].reshape(-1)] = merge.repeat_interleave(3, dim=1)
    return Candidates(
        features=put(cand.features, feat),
        boxes=put(cand.boxes, box),
        area=put(cand.area, wsum),
        score=put(cand.score, score),
        real=cand.real,
        alive=cand.alive & ~dead,
        kind=put(cand.kind, torch.full_like(wsum, KIND_MERGED, dtype=torch.long)),
    )
