"""Strategy registry: one name per way of turning dual-scale tokens into a visual token set.

A strategy is ``fn(tokens, k, text, **options) -> TokenSet`` returning the K (or budget-matched)
hi-detail-derived tokens; :func:`select_tokens` prepends the scaffold when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shirg.errors import ConfigError
from shirg.tokens.scoring import DEFAULT_WEIGHTS, shirg_scores
from shirg.tokens.selection import Candidates, check_budget, covered_topk, merge_neighbours
from shirg.tokens.types import DualScaleTokens, TextContext, TokenSet

Strategy = Callable[..., TokenSet]
TEXT_STRATEGIES = ("shirg", "text-topk")  # strategies that read the question (take a TextContext)
STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return deco


def get_strategy(name: str) -> Strategy:
    _load_builtin()
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; valid strategies: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


def strategy_names() -> list[str]:
    _load_builtin()
    return sorted(STRATEGIES)


def _load_builtin() -> None:
    # Baselines register themselves on import; imported lazily to keep this module import-light.
    from shirg.tokens import baselines  # noqa: F401


@dataclass
class ShirgOptions:
    """Every SHIRG switch in one place (spec sections 2-4)."""

    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    source: str = "text"
    text_pool: str = "max"
    coverage: bool = True
    merge: bool = True
    merge_eps: float = 0.05


@register("shirg")
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
    terms = shirg_scores(tokens, text, opts.weights, opts.source, opts.text_pool)
    cand = Candidates.from_tokens(tokens, terms.score)
    if opts.merge:
        cand = merge_neighbours(cand, tokens.grid, k, opts.merge_eps)
    idx = covered_topk(cand.score, cand.boxes, cand.real, cand.alive, k, cover_grid)
    return cand.take(idx, tokens.grid, "shirg")


def select_tokens(
    name: str,
    tokens: DualScaleTokens,
    k: int,
    text: TextContext | None = None,
    scaffold: bool = True,
    **options,
) -> TokenSet:
    """Run strategy ``name`` and (by default) prepend the scaffold: [scaffold S*S, raster] + [kept, raster]."""
    if tokens.num_hi == 0:
        raise ConfigError("no hi-detail tokens to select from (empty input)")
    out = get_strategy(name)(tokens, k, text, **options)
    return out.with_scaffold(tokens) if scaffold else out
