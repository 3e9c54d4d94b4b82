"""Token selection: pure tensor functions over one SigLIP pass, no model code.

Public API (``from shirg.tokens import ...``):

- :func:`dual_scale` - hi-detail tokens + pooled scaffold from one tower output (``dual_scale.py``).
- :func:`shirg_scores` - the distance-aware relevance score and its terms (``scoring.py``).
- :func:`covered_topk`, :func:`merge_neighbours` - coverage-guaranteed top-K and 2 x 2 merging (``selection.py``).
- :class:`CoordinateEmbedding` - SHIRG's trained (cx, cy, w, h) embedding (``coords.py``).
- :func:`select_tokens`, :func:`register`, :func:`strategy_names`, :func:`strategy_spec` - the strategy
  registry (``registry.py``); strategies: ``shirg.py`` and the baselines in ``baselines.py``.
- :class:`ShirgOptions` - SHIRG's switches and defaults (``options.py``).
- :class:`DualScaleTokens`, :class:`TokenSet`, :class:`TextContext` - the data types (``types.py``).

Names resolve on first use (PEP 562), so ``import shirg.tokens.options`` (the CLI's defaults) stays
torch-free; resolving any of them also registers the built-in strategies.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "dual_scale": "dual_scale",
    "default_k": "dual_scale",
    "scaffold_size": "dual_scale",
    "shirg_scores": "scoring",
    "covered_topk": "selection",
    "merge_neighbours": "selection",
    "check_budget": "selection",
    "CoordinateEmbedding": "coords",
    "select_tokens": "registry",
    "register": "registry",
    "strategy_names": "registry",
    "strategy_spec": "registry",
    "text_strategies": "registry",
    "StrategySpec": "registry",
    "select_shirg": "shirg",
    "ShirgOptions": "options",
    "DEFAULT_WEIGHTS": "options",
    "DualScaleTokens": "types",
    "TokenSet": "types",
    "TextContext": "types",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'shirg.tokens' has no attribute {name!r}")
    importlib.import_module("shirg.tokens.builtin")  # every strategy registered before any is looked up
    return getattr(importlib.import_module(f"shirg.tokens.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
