"""Modes and their options: which modes exist and what a high-resolution mode may be told.

``MODES`` derives from the strategy registry: LaViDa's own layouts, ``full`` (every hi-detail
token) and one mode per registered strategy. The SHIRG defaults live in
:class:`shirg.options.ShirgOptions`; :class:`VisualOptions` takes its defaults from there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import shirg.tokens.builtin  # noqa: F401 - registers every built-in strategy before MODES is read
from shirg.errors import ConfigError
from shirg.options import SCORE_SOURCES, TEXT_POOLS, ShirgOptions, check_sim_stride
from shirg.tokens.dual_scale import default_k, scaffold_size
from shirg.tokens.registry import strategy_names, strategy_spec
from shirg.tokens.scoring import check_weights
from shirg.tokens.selection import check_budget
from shirg.vision.preprocess import PATCH, check_resolution

# LaViDa's own visual layouts: anyres views; one padded view (pooled, a newline); LaViDa's lmms-eval
# single view (729 tokens, unpooled, no newline)
LAVIDA_MODES = ("lavida", "lowres", "lavida-pad")
HIRES_MODES = ("full", *strategy_names())  # one SigLIP pass at R x R, then all tokens or a strategy
MODES = LAVIDA_MODES[:2] + HIRES_MODES + LAVIDA_MODES[2:]  # lavida-pad last: the long-standing order first
CACHE_MODES = ("prefix", "none")
POOL_CHOICES = ("auto", "on", "off")

_SHIRG = ShirgOptions()
# VisualOptions field -> ShirgOptions field, where the names differ
_SHIRG_NAMES = {"score": "source"}


def reads_question(mode: str) -> bool:
    """Whether ``mode`` scores the visual tokens against the question."""
    return mode in strategy_names() and strategy_spec(mode).reads_question


@dataclass
class VisualOptions:
    """Options of the high-resolution modes (ignored by ``lavida`` / ``lowres``).

    The SHIRG switches (``weights`` ... ``merge_eps``) default to :class:`ShirgOptions`' values.
    ``patch``-dependent numbers (the grid G = R / patch) take the tower's patch size as an argument.
    """

    resolution: int = 672
    k: int | None = None  # default round(G*G / 3)
    scaffold: bool = True
    merge: bool = _SHIRG.merge
    merge_eps: float = _SHIRG.merge_eps
    coverage: bool = _SHIRG.coverage
    weights: tuple[float, ...] = _SHIRG.weights
    score: str = _SHIRG.source
    text_pool: str = _SHIRG.text_pool
    sim_stride: int = _SHIRG.sim_stride
    coords: bool = True
    seed: int = 0
    resize: str = "pad"

    def grid(self, patch: int = PATCH) -> int:
        return self.resolution // patch

    def budget(self, patch: int = PATCH) -> int:
        return self.k if self.k is not None else default_k(self.grid(patch))

    def shirg_options(self) -> ShirgOptions:
        names = {f.name for f in fields(ShirgOptions)}
        given = {_SHIRG_NAMES.get(f.name, f.name): getattr(self, f.name) for f in fields(self)
                 if _SHIRG_NAMES.get(f.name, f.name) in names}
        given["weights"] = tuple(given["weights"])
        return ShirgOptions(**given)

    def validate(self, mode: str, patch: int = PATCH) -> None:
        """Fail before any work, naming the valid choices."""
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if mode in LAVIDA_MODES:
            return
        check_resolution(self.resolution)
        if self.merge_eps < 0:
            raise ConfigError(f"merge eps must be >= 0 (0 turns merging off), got {self.merge_eps}")
        grid = self.grid(patch)
        check_weights(self.weights)
        if self.score not in SCORE_SOURCES:
            raise ConfigError(f"unknown score source {self.score!r}; choose one of {', '.join(SCORE_SOURCES)}")
        if self.text_pool not in TEXT_POOLS:
            raise ConfigError(f"unknown text pooling {self.text_pool!r}; choose one of {', '.join(TEXT_POOLS)}")
        check_sim_stride(self.sim_stride, grid)
        if mode != "full":
            spec = strategy_spec(mode)
            cover = scaffold_size(grid) if (spec.options is ShirgOptions and self.coverage) else None
            check_budget(self.budget(patch), grid * grid, cover)

    def strategy_options(self, mode: str) -> dict:
        """The keyword options strategy ``mode`` takes, read from its registration."""
        spec = strategy_spec(mode)
        out = {name: getattr(self, name) for name in spec.option_fields}
        if spec.options is ShirgOptions:
            out["options"] = self.shirg_options()
        elif spec.options is not None:
            raise ConfigError(f"strategy {mode!r} takes {spec.options.__name__}, which VisualOptions cannot fill")
        return out
