"""Options and helpers shared by several sub-commands.

Nothing here imports torch or transformers at module level: ``shirg --help`` builds every
sub-command's parser, and start-up should stay fast.
"""

from __future__ import annotations

import argparse

from shirg.canvas import DEFAULT_RESOLUTION, canvas_resolution  # DEFAULT_RESOLUTION: also bench --analytic
from shirg.errors import ConfigError
from shirg.limits import (
    add_limit_options,
    check_canvas_resolution,
    finite_float,
    positive_int,
    resolution_int,
    seed_int,
)
from shirg.options import SCORE_SOURCES, TEXT_POOLS, ShirgOptions, check_score_source, parse_weights

_SHIRG = ShirgOptions()  # the flags' defaults: SHIRG's, from one dataclass


def add_visual_options(p: argparse.ArgumentParser) -> None:
    """The high-resolution token options (docs/method.md sections 1-5)."""
    g = p.add_argument_group("high-resolution token options")
    g.add_argument("--resolution", type=resolution_int, default=None,
                   help="canvas side R, a multiple of 14 (default: the checkpoint's shirg_resolution, else 672)")
    g.add_argument("--k", type=positive_int, default=None,
                   help="hi-detail tokens kept (default round(G*G/3): 768 at 672)")
    g.add_argument("--resize", default="pad", choices=["pad", "squash"])
    g.add_argument("--no-scaffold", action="store_true", help="do not prepend the pooled scaffold tokens")
    g.add_argument("--no-merge", action="store_true", help="SHIRG: no neighbour-aware 2 x 2 merging")
    g.add_argument("--no-coverage", action="store_true", help="SHIRG: no per-cell coverage guarantee")
    g.add_argument("--merge-eps", type=finite_float, default=_SHIRG.merge_eps)  # >= 0: VisualOptions.validate
    g.add_argument("--weights", default=None, help="signed sim,nbr,ctr weights (default SHIRG's "
                   f"{','.join(f'{w:g}' for w in _SHIRG.weights)})")
    g.add_argument("--score", default=_SHIRG.source, choices=SCORE_SOURCES, help="SHIRG relevance source")
    g.add_argument("--text-pool", default=_SHIRG.text_pool, choices=TEXT_POOLS)
    g.add_argument("--sim-stride", type=positive_int, default=_SHIRG.sim_stride,
                   help="SHIRG: the text term on the means of s x s cells of the hi grid, s^2 times fewer "
                        "projections (default 1: per token)")
    g.add_argument("--no-coords", action="store_true", help="SHIRG: no coordinate embedding")
    g.add_argument("--seed", type=seed_int, default=0, help="seed of the random baseline and of sampling")
    add_limit_options(p)


def default_resolution(model_dir: str | None) -> int:
    """The checkpoint's ``shirg_resolution`` (config.json) when it has one, else 672 (LaViDa's SHIRG)."""
    if not model_dir:
        return DEFAULT_RESOLUTION
    import json
    from pathlib import Path

    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return DEFAULT_RESOLUTION  # the model load reports a missing or broken config properly
    if not isinstance(config, dict):
        return DEFAULT_RESOLUTION
    try:
        return check_canvas_resolution(canvas_resolution(config))
    except (TypeError, ValueError, ConfigError) as e:
        raise ConfigError(f"{path}: shirg_resolution {config.get('shirg_resolution')!r} is not a usable canvas "
                          f"side ({e}); fix it or pass --resolution") from None


def visual_options(args: argparse.Namespace):
    from shirg.model.options import VisualOptions

    resolution = args.resolution if args.resolution is not None else default_resolution(getattr(args, "model", None))
    return VisualOptions(
        resolution=resolution,
        k=args.k,
        scaffold=not args.no_scaffold,
        merge=not args.no_merge,
        merge_eps=args.merge_eps,
        coverage=not args.no_coverage,
        weights=parse_weights(args.weights) if args.weights is not None else _SHIRG.weights,
        score=args.score,
        text_pool=args.text_pool,
        sim_stride=args.sim_stride,
        coords=not args.no_coords,
        seed=args.seed,
        resize=args.resize,
    )


def add_generation_options(p: argparse.ArgumentParser, steps: int = 32) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--gen-length", type=positive_int, default=32, help="answer slots L (default 32)")
    g.add_argument("--steps", type=positive_int, default=steps, help=f"denoising steps (default {steps})")
    g.add_argument("--block-length", type=positive_int, default=None,
                   help="semi-autoregressive block (default min(32, L))")
    g.add_argument("--temperature", type=finite_float, default=0.0)  # >= 0: the sampler checks
    g.add_argument("--schedule", default="uniform", choices=["uniform", "shift"])
    g.add_argument("--shift", type=finite_float, default=3.0,
                   help="shift schedule a, a float (default 3 as in LaViDa's sampler; its eval scripts pass 0.33)")
    g.add_argument("--predict-mask", action="store_true",
                   help="let the mask id be predicted (LLaDA / LaViDa: such a slot stays masked); default: forbidden")
    g.add_argument("--kv-cache", default="native", choices=["native", "fp16", "bf16", "int8", "fp8"])
    g.add_argument("--sampler", default="fixed", choices=["fixed", "threshold"],
                   help="fixed: --steps split by --schedule; threshold: commit every slot of the block whose "
                        "confidence >= --threshold each step, at least one (Fast-dLLM); steps vary")
    g.add_argument("--threshold", type=finite_float, default=0.9, help="confidence threshold of --sampler threshold")
    g.add_argument("--prompt-style", default="shirg", choices=["shirg", "lavida-eval"],
                   help="lavida-eval: the prompt ids LaViDa's evaluation builds (drops the newline after the "
                        "image when the tokenizer adds no BOS)")
    g.add_argument("--decode", default="shirg", choices=["shirg", "lavida-eval"],
                   help="lavida-eval: decode every answer slot skipping special tokens, as LaViDa's lmms-eval model")
    g.add_argument("--pool", default="auto", choices=["auto", "on", "off"],
                   help="lavida/lowres: LaViDa's 27->14 pooling per view; auto follows the checkpoint config")
    g.add_argument("--cache", default="prefix", choices=["prefix", "none"],
                   help="prefix: prompt run once, steps on the answer slots (default); none: the whole "
                        "sequence every step, the prompt attending to the answer (LaViDa's published evals)")


def check_generation(gen: dict) -> dict:
    """The sampler's own rules, checked before any model is loaded or output written (the sampler checks
    them again): gen length a multiple of the block, steps split evenly over the blocks, temperature >= 0."""
    length, block, steps = gen["gen_length"], gen["block_length"], gen["steps"]
    if block < 1 or length % block:
        raise ConfigError(f"gen_length {length} must be a positive multiple of block_length {block}")
    if gen.get("sampler", "fixed") == "fixed" and steps % (length // block):
        raise ConfigError(f"steps {steps} must split evenly over {length // block} blocks (gen_length {length} / "
                          f"block_length {block}); use a multiple of {length // block}")
    if gen["temperature"] < 0:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy) and steps >= 1, got {gen['temperature']} and {steps}")
    return gen


def generation_kwargs(args: argparse.Namespace) -> dict:
    return check_generation(dict(
        gen_length=args.gen_length,
        steps=args.steps,
        block_length=args.block_length if args.block_length is not None else min(32, args.gen_length),
        temperature=args.temperature,
        schedule=args.schedule,
        shift=args.shift,
        predict_mask=args.predict_mask,
        seed=args.seed,
        kv_cache=args.kv_cache,
        # only when used: runs recorded before the option existed keep comparing equal
        **({"sampler": "threshold", "threshold": args.threshold}
           if getattr(args, "sampler", "fixed") == "threshold" else {}),
        cache=args.cache,
        prompt_style=args.prompt_style,
        decode=args.decode,
        pool=args.pool,
    ))


def add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bf16 on CUDA, fp32 on CPU)")
    add_revision_option(p)


def add_revision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--revision", default=None,
                   help="branch, tag or commit when --model is a Hugging Face id (a local folder always wins)")


def add_weight_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weight-format", default="float", choices=["float", "bf16", "int8", "int4"],
                   help="language-model weights: float (as loaded), bf16, int8 or int4 (torchao weight-only, "
                        "quantized at load; bf16/int4 compute in bfloat16)")


def device_of(args: argparse.Namespace):
    """The torch.device the command runs on ("auto": CUDA when available)."""
    import torch

    from shirg.errors import resolve_device

    if args.device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(args.device)


def load_model(args: argparse.Namespace, adapter=None, shirg_weights=None):
    """``--model DIR`` (a checkpoint, optionally with an adapter) or ``--preset NAME`` (random weights),
    with ``--weight-format`` where the command has it.

    Returns (model, a one-line description of where the weights came from).
    """
    from shirg.errors import resolve_dtype

    device = device_of(args)
    weight_format = getattr(args, "weight_format", None) or "float"
    if weight_format == "float":
        dtype = resolve_dtype(getattr(args, "dtype", None), device)
    else:  # the format picks bfloat16 where it needs it; an explicit --dtype is checked against it
        dtype = getattr(args, "dtype", None)
    suffix = f", {weight_format} weights" if weight_format != "float" else ""
    if getattr(args, "model", None):
        import shirg

        model = shirg.load(args.model, device=device, dtype=dtype, shirg_weights=shirg_weights, adapter=adapter,
                           weight_format=weight_format, revision=getattr(args, "revision", None))
        check_score_source(model, getattr(args, "score", None))
        return model, f"checkpoint {args.model}" + (f" + adapter {adapter}" if adapter else "") + suffix
    from shirg.presets import build_preset

    preset = getattr(args, "preset", None) or "tiny"
    return build_preset(preset, device, dtype, weight_format=weight_format), f"preset {preset} (random weights){suffix}"


def command_line(args: argparse.Namespace) -> str:
    """The exact invocation, for run metadata (``cli.main`` stores the argv it parsed)."""
    import shlex
    import sys

    return "shirg " + " ".join(shlex.quote(a) for a in getattr(args, "_argv", sys.argv[1:]))
