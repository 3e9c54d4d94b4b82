"""Strategy registry: one name per way of turning dual-scale tokens into a visual token set.

A leaf: it imports no strategy. Each strategy module registers itself with its metadata::

    @register("uniform", help="K tokens at a regular stride")
    def select_uniform(tokens, k, text=None, **options) -> TokenSet: ...

and :mod:`shirg.tokens.builtin` imports every built-in strategy by name. A strategy is
``fn(tokens, k, text, **options) -> TokenSet`` returning the K (or budget-matched) hi-detail-derived
tokens; :func:`select_tokens` prepends the scaffold when asked. Everything that lists modes (the
model's ``MODES``, the CLI, the benchmarks, the report) reads this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shirg.errors import ConfigError

Strategy = Callable[..., Any]  # (DualScaleTokens, k, TextContext | None, **options) -> TokenSet


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy and what callers need to know about it.

    ``reads_question``: it takes the question (a TextContext) and scores the hi tokens against it.
    ``options``: its options dataclass, passed as ``options=`` (None: it takes none).
    ``option_fields``: keyword options it takes, by name (e.g. ``seed``).
    ``kept``: how many hi-detail-derived tokens it keeps for budget K: ``"k"`` or ``"square"``
    (``round(sqrt(K))**2``, a resized grid).
    """

    name: str
    fn: Strategy
    reads_question: bool = False
    options: type | None = None
    option_fields: tuple[str, ...] = ()
    kept: str = "k"
    help: str = ""

    def kept_tokens(self, k: int) -> int:
        return round(k**0.5) ** 2 if self.kept == "square" else k


STRATEGIES: dict[str, StrategySpec] = {}


def register(name: str, *, reads_question: bool = False, options: type | None = None,
             option_fields: tuple[str, ...] = (), kept: str = "k", help: str = "") -> Callable[[Strategy], Strategy]:
    """Register ``fn`` under ``name`` with its metadata (a decorator)."""
    if kept not in ("k", "square"):
        raise ConfigError(f"kept must be 'k' or 'square', got {kept!r}")

    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = StrategySpec(name, fn, reads_question, options, tuple(option_fields), kept, help)
        return fn

    return deco


def strategy_spec(name: str) -> StrategySpec:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; valid strategies: {', '.join(strategy_names())}")
    return STRATEGIES[name]


def get_strategy(name: str) -> Strategy:
    return strategy_spec(name).fn


def strategy_names() -> list[str]:
    """Registered strategies, in registration order."""
    return list(STRATEGIES)


def text_strategies() -> tuple[str, ...]:
    """Strategies that read the question."""
    return tuple(n for n, s in STRATEGIES.items() if s.reads_question)


def select_tokens(name: str, tokens, k: int, text=None, scaffold: bool = True, **options):
    """Run strategy ``name`` and (by default) prepend the scaffold: [scaffold S*S, raster] + [kept, raster].

    tokens: DualScaleTokens; text: TextContext or None. Returns a TokenSet.
    """
    if tokens.num_hi == 0:
        raise ConfigError("no hi-detail tokens to select from (empty input)")
    out = get_strategy(name)(tokens, k, text, **options)
    return out.with_scaffold(tokens) if scaffold else out
