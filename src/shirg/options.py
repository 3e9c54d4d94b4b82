"""SHIRG's switches and their defaults, in one dataclass. A base module (torch-free: the CLI reads
it at start-up); the token strategies and the model's VisualOptions take their defaults from here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from shirg.errors import ConfigError

DEFAULT_WEIGHTS = (0.7, -0.2, -0.1)  # signed (w_sim, w_nbr, w_ctr) of the distance-aware score
TEXT_POOLS = ("max", "mean")  # how Sim_i, and a learned relevance head, pool over the question tokens
# where Sim_i comes from: the question's text similarity through the projector, the query-agnostic
# saliency, or saliency plus a learned head's question term on the tower's features (no projection)
SCORE_SOURCES = ("text", "saliency", "head")
HEAD_INPUTS = ("projected", "tower")  # what a learned relevance head's token map reads
# what of gradient x input a distilled relevance target keeps: its magnitude, or the part that lowers the
# answer loss (the evidence for the answer)
ATTRIBUTIONS = ("abs", "support")


def check_head_source(head, score: str) -> None:
    """Score source "head" needs ``head`` to be a relevance head that reads the tower's features; a
    one-line ConfigError otherwise (other sources take any head, or none)."""
    if score == "head" and (head is None or head.reads != "tower"):
        have = "no relevance head is loaded" if head is None else "the loaded head reads projected tokens"
        raise ConfigError(f"score source 'head' needs a relevance head that reads the tower's features ({have}); "
                          "pass an adapter trained with data.relevance.reads: tower, or use score text or saliency")


def check_score_source(model, score: str) -> None:
    """Before any work: :func:`check_head_source` with the head ``model`` (a loaded LavidaModel) carries."""
    check_head_source(getattr(model, "relevance_head", None), score)


@dataclass
class ShirgOptions:
    """Every SHIRG switch and its default: the score weights and source, question pooling, the
    stride of the text term, per-cell coverage and neighbour-aware 2 x 2 merging (docs/method.md)."""

    weights: tuple[float, ...] = DEFAULT_WEIGHTS
    source: str = "text"
    text_pool: str = "max"
    coverage: bool = True
    merge: bool = True
    merge_eps: float = 0.05
    sim_stride: int = 1  # Sim on s x s average-pooled hi tokens (projector cost / s^2); 1: per token


def parse_weights(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(f"--weights must be three comma-separated numbers like 0.7,-0.2,-0.1, got {text!r}") from e
    if len(values) != 3:
        raise ConfigError(f"--weights needs 3 values (sim, nbr, ctr), got {len(values)}: {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--weights must be finite numbers, got {text!r}")
    return values


def check_sim_stride(stride: int, grid: int) -> int:
    """The text term's stride: an integer from 1 (per token) to the hi grid's side."""
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= max(1, grid):
        raise ConfigError(f"sim stride must be an integer from 1 (per token) to the hi grid's side {grid}, "
                          f"got {stride!r}")
    return stride
