"""Token selection: pure tensor functions over one SigLIP pass, no model code.

- :func:`dual_scale` - hi-detail tokens + pooled scaffold from one tower output (``dual_scale.py``).
- :func:`shirg_scores` - the distance-aware relevance score and its terms (``scoring.py``).
- :func:`covered_topk`, :func:`merge_neighbours` - coverage-guaranteed top-K and 2 x 2 merging (``selection.py``).
- :class:`CoordinateEmbedding` - SHIRG's trained (cx, cy, w, h) embedding (``coords.py``).
- :func:`select_tokens`, :func:`register`, :func:`strategy_names`, :func:`strategy_spec` - the strategy
  registry (``registry.py``, a leaf); the strategies: ``shirg.py`` and the baselines in ``baselines.py``,
  imported here by name (``builtin.py``) so each registers itself.
- :class:`DualScaleTokens`, :class:`TokenSet`, :class:`TextContext` - the data types (``types.py``).

SHIRG's switches and defaults (:class:`ShirgOptions`) live in the torch-free base module
:mod:`shirg.options`, which the CLI reads at start-up.
"""

from shirg.options import DEFAULT_WEIGHTS, ShirgOptions
from shirg.tokens import builtin  # noqa: F401 - registers every built-in strategy
from shirg.tokens.coords import CoordinateEmbedding
from shirg.tokens.dual_scale import default_k, dual_scale, scaffold_size
from shirg.tokens.registry import (
    StrategySpec,
    register,
    select_tokens,
    strategy_names,
    strategy_spec,
    text_strategies,
)
from shirg.tokens.scoring import shirg_scores
from shirg.tokens.selection import check_budget, covered_topk, merge_neighbours
from shirg.tokens.shirg import select_shirg
from shirg.tokens.types import DualScaleTokens, TextContext, TokenSet

__all__ = [
    "DEFAULT_WEIGHTS", "CoordinateEmbedding", "DualScaleTokens", "ShirgOptions", "StrategySpec", "TextContext",
    "TokenSet", "check_budget", "covered_topk", "default_k", "dual_scale", "merge_neighbours", "register",
    "scaffold_size", "select_shirg", "select_tokens", "shirg_scores", "strategy_names", "strategy_spec",
    "text_strategies",
]
