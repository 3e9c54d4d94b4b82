"""Budget-matched baselines (docs/method.md section 6), each a registered strategy.

Every strategy has the signature of :func:`shirg.tokens.shirg.select_shirg`::

    fn(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet

and returns only the hi-detail-derived tokens ([B, K, D]; [B, P*P, D] for ``pool``); the scaffold is
prepended by ``select_tokens``. All run under no_grad, are vectorized over the batch (loops run over
merge / pruning / greedy steps, never over tokens), keep dtype and device of the inputs and give a
batch of B the same result as B runs of one.

Padding (shared by every strategy that selects or merges): the candidate pool of a sample is its
real tokens; only when it has fewer than K real tokens are its lowest-index padding tokens added,
just enough to reach K. Padding is therefore never kept while real tokens remain, and merging
strategies never mix padding into image tokens.

Strategies:
  uniform    K tokens at a regular stride over the real tokens.
  pool       bilinear resize of the G x G grid to P x P, P = round(sqrt(K)) (budget approximate).
  random     K real tokens drawn uniformly with a seeded generator.
  text-topk  top-K by text relevance alone (saliency without a question), no coverage.
  saint      similarity-graph redundancy pruning (Jeddi et al., arXiv 2503.11549).
  tome       bipartite soft matching, size-weighted (Bolya et al., arXiv 2210.09461).
  visionzip  dominant + contextual tokens (Yang et al., arXiv 2412.04467).
  divprune   max-min diversity, greedy (Alvar et al., arXiv 2503.02175).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from shirg.errors import ConfigError
from shirg.tokens.dual_scale import grid_boxes
from shirg.tokens.registry import register
from shirg.tokens.scoring import TEXT_POOLS, relevance, saliency
from shirg.tokens.selection import check_budget
from shirg.tokens.types import (
    KIND_HI,
    KIND_MERGED,
    KIND_POOLED,
    DualScaleTokens,
    TextContext,
    TokenSet,
    gather_tokens,
    hi_subset,
)

VISIONZIP_DOMINANT = 54 / 64  # VisionZip's default split: 54 dominant + 10 contextual of 64 tokens


# ------------------------------------------------------------------------------------------ helpers


def _options(strategy: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated by ``given``; unknown keys raise a ConfigError that names the valid ones."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) if defaults else "none (it takes no options)"
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for strategy {strategy!r}; valid options: {valid}"
        )
    return {**defaults, **given}


def _fraction(strategy: str, name: str, value: Any) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{strategy} option {name} must lie in (0, 1], got {value}")
    return value


def candidate_pool(tokens: DualScaleTokens, k: int) -> Tensor:
    """[B, N] bool: the real tokens, plus the lowest-index padding tokens a sample needs to reach K."""
    real = tokens.hi_real.bool()
    missing = (k - real.sum(dim=1, keepdim=True)).clamp(min=0)
    pad_rank = torch.cumsum((~real).long(), dim=1)  # 1-based rank among padding tokens
    return real | (~real & (pad_rank <= missing))


def _stride_positions(count: Tensor, k: int) -> Tensor:
    """Positions floor((i + 0.5) * count / k), i < k, in exact integer arithmetic. count: [B] -> [B, k]."""
    i = torch.arange(k, device=count.device)
    return ((2 * i + 1)[None, :] * count[:, None]) // (2 * k)


def _members_first(mask: Tensor) -> Tensor:
    """Indices [B, N] that list the True entries of mask [B, N] first, each group in raster order."""
    return torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices


def _stride_pick(mask: Tensor, k: int) -> Tensor:
    """K indices at a regular stride over the True entries of mask (at least K per row), ascending."""
    order = _members_first(mask)
    return order.gather(1, _stride_positions(mask.sum(dim=1), k))


def _top_k(score: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices [B, K] of the K best scores among mask (ties: lower index), in ascending order."""
    s = score.float().masked_fill(~mask, float("-inf"))
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    return order[:, :k].sort(dim=1).values


def _cosine(x: Tensor) -> Tensor:
    """Pairwise cosine similarity, float32. x: [B, N, D] -> [B, N, N]."""
    h = F.normalize(x.float(), dim=-1)
    return h @ h.transpose(1, 2)


@dataclass
class Groups:
    """Running groups of hi tokens for the merging baselines, all [B, M, ...] (M shrinks as tokens merge).

    total [B, M, D] float32 sum of member features; size [B, M] members (= area in hi tokens);
    centre [B, M, 2] sum of member centres; lo / hi [B, M, 2] union-box corners;
    first [B, M] lowest member index; alive [B, M] bool.
    Sums use scatter_add: exact order on CPU; on CUDA the order of a group's additions may vary,
    so merged features can differ in the last bits between runs there.
    """

    total: Tensor
    size: Tensor
    centre: Tensor
    lo: Tensor
    hi: Tensor
    first: Tensor
    alive: Tensor

    @classmethod
    def from_tokens(cls, tokens: DualScaleTokens, alive: Tensor) -> Groups:
        boxes = tokens.hi_boxes.float()
        b, n, _ = boxes.shape
        return cls(
            total=tokens.hi.float(),
            size=torch.ones(b, n, device=boxes.device),
            centre=boxes[..., :2].clone(),
            lo=boxes[..., :2] - boxes[..., 2:] / 2,
            hi=boxes[..., :2] + boxes[..., 2:] / 2,
            first=torch.arange(n, device=boxes.device).expand(b, n).clone(),
            alive=alive.clone(),
        )

    def mean(self) -> Tensor:
        """Size-weighted mean feature of every group: [B, M, D]."""
        return self.total / self.size[..., None]

    def absorb(self, src: Tensor, dst: Tensor) -> None:
        """Merge every group where src [B, M] is True into group dst [B, M] (dst never itself a src)."""

        def add(x: Tensor) -> Tensor:
            x_src = torch.where(src.view(*src.shape, *([1] * (x.dim() - 2))), x, torch.zeros_like(x))
            idx = dst.view(*dst.shape, *([1] * (x.dim() - 2))).expand_as(x)
            return x.scatter_add(1, idx, x_src)

        def reduce(x: Tensor, neutral: float, how: str) -> Tensor:
            x_src = torch.where(src[..., None], x, torch.full_like(x, neutral))
            return x.scatter_reduce(1, dst[..., None].expand_as(x), x_src, reduce=how)

        self.total = add(self.total)
        self.size = add(self.size)
        self.centre = add(self.centre)
        self.lo = reduce(self.lo, float("inf"), "amin")
        self.hi = reduce(self.hi, float("-inf"), "amax")
        first_src = torch.where(src, self.first, torch.full_like(self.first, torch.iinfo(torch.long).max))
        self.first = self.first.scatter_reduce(1, dst, first_src, reduce="amin")
        self.alive = self.alive & ~src

    def compact(self) -> None:
        """Move alive groups to the front (keeping their order) and drop the dead tail."""
        m = int(self.alive.sum(dim=1).max())
        idx = _members_first(self.alive)[:, :m]
        for name in ("total", "size", "centre", "lo", "hi", "first", "alive"):
            x = getattr(self, name)
            setattr(self, name, gather_tokens(x, idx))

    def take(self, idx: Tensor, tokens: DualScaleTokens, strategy: str) -> TokenSet:
        """The groups at idx [B, K] (output order) as a TokenSet."""
        size = self.size.gather(1, idx)
        centroid = gather_tokens(self.centre, idx) / size[..., None]
        extent = gather_tokens(self.hi, idx) - gather_tokens(self.lo, idx)
        boxes = torch.cat([centroid, extent], dim=-1).clamp(0.0, 1.0)
        kind = torch.where(size > 1, KIND_MERGED, KIND_HI).long()
        return TokenSet(
            features=gather_tokens(self.mean(), idx).to(tokens.hi.dtype),
            boxes=boxes.to(tokens.hi_boxes.dtype),
            kind=kind,
            index=self.first.gather(1, idx),
            grid=tokens.grid,
            scaffold_grid=0,
            strategy=strategy,
        )


def _alternate(alive_first: Tensor) -> tuple[Tensor, Tensor]:
    """ToMe's alternating split of compacted groups (alive ones first): A = even, B = odd positions."""
    pos = torch.arange(alive_first.shape[1], device=alive_first.device)
    in_a = alive_first & (pos % 2 == 0)
    in_b = alive_first & (pos % 2 == 1)
    return in_a, in_b


def _step_count(excess: Tensor, in_a: Tensor, fraction: float) -> Tensor:
    """Tokens removed this step: ceil(fraction * |A|), never more than the excess over K. [B]."""
    n_a = in_a.sum(dim=1)
    return torch.minimum(excess, torch.ceil(n_a.float() * fraction).long().clamp(min=1))


def _rank_top(score: Tensor, mask: Tensor, r: Tensor) -> Tensor:
    """[B, M] bool: the r[b] highest scores among mask (ties: lower position)."""
    s = score.masked_fill(~mask, float("-inf"))
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    positions = torch.arange(s.shape[1], device=s.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return mask & (rank < r[:, None])


# ---------------------------------------------------------------------------------------- baselines


@register("uniform", help="K tokens at a regular stride")
@torch.no_grad()
def select_uniform(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """K tokens at a regular stride over the real tokens in raster order.

    Token i of the output is the floor((i + 0.5) * n_real / K)-th real token. With fewer than K real
    tokens, all of them are kept plus the lowest-index padding tokens. [B, N, D] -> [B, K, D].
    """
    _options("uniform", options, {})
    check_budget(k, tokens.num_hi)
    return hi_subset(tokens, _stride_pick(candidate_pool(tokens, k), k), "uniform")


@register("pool", kept="square", help="bilinear resize of the grid to round(sqrt(K)) squared")
@torch.no_grad()
def select_pool(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """Bilinear resize of the G x G grid to P x P, P = round(sqrt(K)).

    The budget is approximate: P * P tokens come out (784 for K = 768, G = 48 -> P = 28). Uses
    F.interpolate(mode="bilinear", align_corners=False), no antialiasing, as LaViDa's pooling does.
    Resampled tokens cover padding like any other part of the canvas. Boxes are those of the P x P
    grid, kind KIND_POOLED, index the pooled-grid index. [B, N, D] -> [B, P*P, D].
    """
    _options("pool", options, {})
    check_budget(k, tokens.num_hi)
    b, n, d = tokens.hi.shape
    g = tokens.grid
    p = max(1, min(g, round(math.sqrt(k))))
    grid = tokens.hi.float().transpose(1, 2).reshape(b, d, g, g)
    pooled = F.interpolate(grid, size=(p, p), mode="bilinear", align_corners=False)
    device = tokens.hi.device
    return TokenSet(
        features=pooled.reshape(b, d, p * p).transpose(1, 2).to(tokens.hi.dtype),
        boxes=grid_boxes(p, device, tokens.hi_boxes.dtype).expand(b, p * p, 4),
        kind=torch.full((b, p * p), KIND_POOLED, dtype=torch.long, device=device),
        index=torch.arange(p * p, device=device).expand(b, p * p),
        grid=g,
        scaffold_grid=0,
        strategy="pool",
    )


@register("random", option_fields=("seed",), help="K tokens drawn with a seeded generator")
@torch.no_grad()
def select_random(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """K real tokens drawn uniformly without replacement, raster order.

    Options: seed (int, default 0). The draw is one CPU torch.Generator seeded with ``seed`` giving a
    priority per grid position (the K highest real ones are kept), shared by every sample, so the
    result depends on the seed and the sample only, not on the device or the batch it sits in.
    """
    opts = _options("random", options, {"seed": 0})
    check_budget(k, tokens.num_hi)
    gen = torch.Generator(device="cpu").manual_seed(int(opts["seed"]))
    priority = torch.rand(tokens.num_hi, generator=gen).to(tokens.hi.device)
    priority = priority.expand(tokens.batch_size, -1)
    return hi_subset(tokens, _top_k(priority, candidate_pool(tokens, k), k), "random")


@register("text-topk", reads_question=True, option_fields=("text_pool",), help="top-K by text relevance alone")
@torch.no_grad()
def select_text_topk(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """Top-K hi tokens by text relevance Sim_i alone: no neighbour or centre term, no coverage.

    Sim_i = max_j cos(projector(H_i), q_j) over the question tokens (option text_pool = "max" or
    "mean"); saliency 1 - cos(H_i, mean H) when text is None or a sample has no question.
    Ties go to the lower index; output in raster order. [B, N, D] -> [B, K, D].
    """
    opts = _options("text-topk", options, {"text_pool": "max"})
    if opts["text_pool"] not in TEXT_POOLS:
        raise ConfigError(f"unknown text_pool {opts['text_pool']!r}; choose one of {', '.join(TEXT_POOLS)}")
    check_budget(k, tokens.num_hi)
    score, _ = relevance(tokens, text, opts["text_pool"])
    return hi_subset(tokens, _top_k(score, candidate_pool(tokens, k), k), "text-topk")


@register("saint", help="similarity-graph redundancy pruning (SAINT)")
@torch.no_grad()
def select_saint(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """SAINT, "Similarity-Aware Token Pruning: Your VLM but Faster" (Jeddi et al., arXiv 2503.11549).

    Graph-based redundancy pruning, applied once to the tower's output (SAINT's "ViT-only" mode run
    as a single pre-LLM stage). Each step splits the surviving tokens, in raster order, into two
    alternating sets A (even positions) and B (odd positions); every token of A gets an edge to its
    most similar token of B (cosine of L2-normalized features) whose weight is its redundancy; the
    r most redundant A tokens are dropped (pruned, not merged: SAINT finds dropping beats merging).
    Steps repeat until exactly K tokens remain; survivors are output in raster order.

    Deviations, because a fixed budget K is needed here: SAINT keeps every A -> B edge whose
    similarity passes a threshold tau, sets r by a vote (the A tokens with at least k such edges)
    and ranks A tokens by edge count and mean edge similarity; here the edge is the single nearest
    B token, its similarity is the redundancy, and each step drops
    r = min(ceil(step_fraction * |A|), N_alive - K) tokens (option step_fraction, default 0.5) so
    exactly K remain. SAINT emits [kept A, B]; here survivors keep raster order (layout is
    information, docs/method.md section 3). Ties drop the lower position first. [B, N, D] -> [B, K, D].
    """
    opts = _options("saint", options, {"step_fraction": 0.5})
    fraction = _fraction("saint", "step_fraction", opts["step_fraction"])
    check_budget(k, tokens.num_hi)
    alive = candidate_pool(tokens, k)
    keep = _members_first(alive)[:, : int(alive.sum(dim=1).max())]  # token index per position
    alive = alive.gather(1, keep)
    feats = F.normalize(gather_tokens(tokens.hi, keep).float(), dim=-1)
    while True:
        excess = alive.sum(dim=1) - k
        if int(excess.max()) <= 0:
            break
        in_a, in_b = _alternate(alive)
        sim = feats @ feats.transpose(1, 2)
        redundancy = sim.masked_fill(~in_b[:, None, :], float("-inf")).amax(dim=-1)
        drop = _rank_top(redundancy, in_a, _step_count(excess, in_a, fraction))
        alive = alive & ~drop
        m = int(alive.sum(dim=1).max())
        order = _members_first(alive)[:, :m]
        keep, alive, feats = keep.gather(1, order), alive.gather(1, order), gather_tokens(feats, order)
    return hi_subset(tokens, keep[:, :k], "saint")


@torch.no_grad()
def tome_merge(tokens: DualScaleTokens, k: int, step_fraction: float = 0.5) -> Groups:
    """Repeated bipartite soft matching down to exactly K groups per sample (ToMe, arXiv 2210.09461).

    Each step: alternate the alive groups (raster order of their position) into A (even) and B (odd);
    every A group's edge goes to its most similar B group (cosine of the size-weighted mean features);
    the r = min(ceil(step_fraction * |A|), N_alive - K) strongest edges merge their A group into the
    B group: features averaged weighted by size (ToMe's proportional merge), sizes add, centroid
    area-weighted, box the union, index the lowest member. Returns the Groups, alive ones first, in
    their position order (which is not necessarily raster order of the lowest member).
    """
    alive = candidate_pool(tokens, k)
    groups = Groups.from_tokens(tokens, alive)
    groups.compact()
    while True:
        excess = groups.alive.sum(dim=1) - k
        if int(excess.max()) <= 0:
            break
        in_a, in_b = _alternate(groups.alive)
        sim = _cosine(groups.mean()).masked_fill(~in_b[:, None, :], float("-inf"))
        best, dst = sim.max(dim=-1)
        src = _rank_top(best, in_a, _step_count(excess, in_a, step_fraction))
        groups.absorb(src, dst)
        groups.compact()
    return groups


@register("tome", help="bipartite soft matching, size-weighted (ToMe)")
@torch.no_grad()
def select_tome(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """ToMe, "Token Merging: Your ViT But Faster" (Bolya et al., arXiv 2210.09461), applied once to the
    tower's output: repeated bipartite soft matching with size-weighted averaging down to exactly K
    tokens (see :func:`tome_merge`; option step_fraction, default 0.5, caps each step at that
    fraction of set A, as ToMe caps r at 50 % of the tokens). ToMe matches on attention keys inside
    the ViT; here the features themselves are the metric. Output in raster order of each group's
    lowest member index; kind KIND_MERGED for groups of two or more. [B, N, D] -> [B, K, D].
    """
    opts = _options("tome", options, {"step_fraction": 0.5})
    fraction = _fraction("tome", "step_fraction", opts["step_fraction"])
    check_budget(k, tokens.num_hi)
    groups = tome_merge(tokens, k, fraction)
    n = tokens.num_hi
    first = torch.where(groups.alive, groups.first, torch.full_like(groups.first, n))
    idx = torch.sort(first, dim=1, stable=True).indices[:, :k]
    return groups.take(idx, tokens, "tome")


@register("visionzip", help="dominant + contextual tokens (VisionZip)")
@torch.no_grad()
def select_visionzip(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """VisionZip, "Longer is Better but Not Necessary in Vision Language Models" (Yang et al.,
    arXiv 2412.04467): dominant tokens plus contextual tokens merged from the rest.

    - Dominant: the K_dom = round(K * dominant_fraction) most salient tokens (default 54/64, VisionZip's
      54 dominant : 10 contextual). VisionZip ranks by the [CLS] attention a token receives; SigLIP has
      no [CLS] and the hi tokens come without attention maps, so saliency 1 - cos(H_i, mean H)
      (scoring.saliency) stands in. Ties: lower index.
    - Contextual: K_ctx = K - K_dom targets taken at a regular stride (floor((i + 0.5) * n_rest / K_ctx))
      over the remaining tokens in raster order; every other remaining token joins its most similar
      target (cosine); each group becomes its size-weighted mean, centroid and union box, index its
      lowest member, kind KIND_MERGED (KIND_HI for a target nobody joined).
    Output: exactly K tokens, dominant (raster) then contextual (raster order of the targets).
    [B, N, D] -> [B, K, D].
    """
    opts = _options("visionzip", options, {"dominant_fraction": VISIONZIP_DOMINANT})
    fraction = _fraction("visionzip", "dominant_fraction", opts["dominant_fraction"])
    check_budget(k, tokens.num_hi)
    k_dom = min(k, max(1, round(k * fraction)))
    k_ctx = k - k_dom
    pool = candidate_pool(tokens, k)
    dominant = _top_k(saliency(tokens.hi.float()), pool, k_dom)
    out = hi_subset(tokens, dominant, "visionzip")
    if k_ctx == 0:
        return out

    rest = pool.scatter(1, dominant, False)
    targets = _stride_pick(rest, k_ctx)  # [B, K_ctx], ascending
    is_target = torch.zeros_like(rest).scatter(1, targets, True)
    groups = Groups.from_tokens(tokens, rest)
    h = F.normalize(tokens.hi.float(), dim=-1)
    sim = h @ gather_tokens(h, targets).transpose(1, 2)  # [B, N, K_ctx]
    dst = targets.gather(1, sim.argmax(dim=-1))  # [B, N] index of the chosen target
    groups.absorb(rest & ~is_target, dst)
    ctx = groups.take(targets, tokens, "visionzip")
    return TokenSet(
        features=torch.cat([out.features, ctx.features], dim=1),
        boxes=torch.cat([out.boxes, ctx.boxes], dim=1),
        kind=torch.cat([out.kind, ctx.kind], dim=1),
        index=torch.cat([out.index, ctx.index], dim=1),
        grid=tokens.grid,
        scaffold_grid=0,
        strategy="visionzip",
    )


@register("divprune", help="max-min diversity, greedy (DivPrune)")
@torch.no_grad()
def select_divprune(tokens: DualScaleTokens, k: int, text: TextContext | None = None, **options) -> TokenSet:
    """DivPrune, "Diversity-based Visual Token Pruning for Large Multimodal Models" (Alvar et al.,
    arXiv 2503.02175): the Max-Min Diversity Problem solved greedily on cosine distance 1 - cos.

    Start from the token whose nearest other token is farthest (largest minimum distance: the most
    isolated token, DivPrune's initialisation), then repeatedly add the token whose minimum distance
    to the chosen set is largest. Ties: lower index. Output in raster order. [B, N, D] -> [B, K, D].
    """
    _options("divprune", options, {})
    check_budget(k, tokens.num_hi)
    pool = candidate_pool(tokens, k)
    b, n = pool.shape
    dist = 1.0 - _cosine(tokens.hi)  # [B, N, N]
    eye = torch.eye(n, dtype=torch.bool, device=pool.device)
    excluded = eye[None] | ~pool[:, None, :]
    nearest = dist.masked_fill(excluded, float("inf")).amin(dim=-1)
    chosen = torch.zeros_like(pool)
    rows = torch.arange(b, device=pool.device)
    pick = nearest.masked_fill(~pool, float("-inf")).argmax(dim=1)
    min_dist = torch.full((b, n), float("inf"), device=pool.device)
    for _ in range(k):
        chosen[rows, pick] = True
        min_dist = torch.minimum(min_dist, dist[rows, pick])
        pick = min_dist.masked_fill(chosen | ~pool, float("-inf")).argmax(dim=1)
    idx = _members_first(chosen)[:, :k].sort(dim=1).values
    return hi_subset(tokens, idx, "divprune")
