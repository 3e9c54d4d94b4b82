"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse

from shirg.errors import ConfigError
from shirg.tokens.scoring import DEFAULT_WEIGHTS


def parse_weights(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(f"--weights must be three comma-separated numbers like 0.7,-0.2,-0.1, got {text!r}") from e
    if len(values) != 3:
        raise ConfigError(f"--weights needs 3 values (sim, nbr, ctr), got {len(values)}: {text!r}")
    return values


def add_visual_options(p: argparse.ArgumentParser) -> None:
    """The high-resolution token options (SHIRG spec sections 1-5)."""
    g = p.add_argument_group("high-resolution token options")
    g.add_argument("--resolution", type=int, default=672, help="canvas side R, a multiple of 14 (default 672)")
    g.add_argument("--k", type=int, default=None, help="hi-detail tokens kept (default round(G*G/3): 768 at 672)")
    g.add_argument("--resize", default="pad", choices=["pad", "squash"])
    g.add_argument("--no-scaffold", action="store_true", help="do not prepend the pooled scaffold tokens")
    g.add_argument("--no-merge", action="store_true", help="SHIRG: no neighbour-aware 2 x 2 merging")
    g.add_argument("--no-coverage", action="store_true", help="SHIRG: no per-cell coverage guarantee")
    g.add_argument("--merge-eps", type=float, default=0.05)
    g.add_argument("--weights", default=",".join(str(w) for w in DEFAULT_WEIGHTS), help="signed sim,nbr,ctr weights")
    g.add_argument("--score", default="text", choices=["text", "saliency"], help="SHIRG relevance source")
    g.add_argument("--text-pool", default="max", choices=["max", "mean"])
    g.add_argument("--no-coords", action="store_true", help="SHIRG: no coordinate embedding")
    g.add_argument("--seed", type=int, default=0, help="seed of the random baseline and of sampling")


def visual_options(args: argparse.Namespace):
    from shirg.model.inference import VisualOptions

    return VisualOptions(
        resolution=args.resolution,
        k=args.k,
        scaffold=not args.no_scaffold,
        merge=not args.no_merge,
        merge_eps=args.merge_eps,
        coverage=not args.no_coverage,
        weights=parse_weights(args.weights),
        score=args.score,
        text_pool=args.text_pool,
        coords=not args.no_coords,
        seed=args.seed,
        resize=args.resize,
    )


def add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--gen-length", type=int, default=32, help="answer slots L (default 32)")
    g.add_argument("--steps", type=int, default=32, help="denoising steps (default 32)")
    g.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block (default min(32, L))")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--schedule", default="uniform", choices=["uniform", "shift"])
    g.add_argument("--kv-cache", default="native", choices=["native", "fp16", "bf16", "int8", "fp8"])


def generation_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        gen_length=args.gen_length,
        steps=args.steps,
        block_length=args.block_length or min(32, args.gen_length),
        temperature=args.temperature,
        schedule=args.schedule,
        seed=args.seed,
        kv_cache=args.kv_cache,
    )
