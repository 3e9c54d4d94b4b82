"""`shirg select`: run the tower, score and select, write an overlay PNG and a JSON record."""

from __future__ import annotations

import argparse
import logging

import torch

from shirg.errors import ConfigError
from shirg.io import write_json
from shirg.tokens.dual_scale import default_k
from shirg.tokens.registry import ShirgOptions, select_tokens, strategy_names
from shirg.tokens.scoring import DEFAULT_WEIGHTS
from shirg.tokens.types import KIND_NAMES
from shirg.vision.encode import encode_dual_scale
from shirg.vision.preprocess import load_image
from shirg.vision.siglip import load_vision_tower

log = logging.getLogger(__name__)


def parse_weights(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(f"--weights must be three comma-separated numbers like 0.7,-0.2,-0.1, got {text!r}") from e
    if len(values) != 3:
        raise ConfigError(f"--weights needs 3 values (sim, nbr, ctr), got {len(values)}: {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--question", default=None, help="question (needs a model for the text term)")
    p.add_argument("--strategy", default="shirg", help="selection strategy (default shirg)")
    p.add_argument("--resolution", type=int, default=672, help="canvas side R, a multiple of 14")
    p.add_argument("--k", type=int, default=None, help="hi-detail tokens kept (default round(G*G/3))")
    p.add_argument("--vision", required=True, help="LaViDa checkpoint folder or local SigLIP folder")
    p.add_argument("--out", required=True, help="overlay PNG to write")
    p.add_argument("--json", default=None, help="selection JSON to write")
    p.add_argument("--resize", default="pad", choices=["pad", "squash"])
    p.add_argument("--no-scaffold", action="store_true", help="do not prepend the scaffold tokens")
    p.add_argument("--no-merge", action="store_true", help="SHIRG: no 2 x 2 merging")
    p.add_argument("--no-coverage", action="store_true", help="SHIRG: no per-cell coverage guarantee")
    p.add_argument("--merge-eps", type=float, default=0.05)
    p.add_argument("--weights", default=",".join(str(w) for w in DEFAULT_WEIGHTS), help="sim,nbr,ctr weights")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--device", default="cpu")


def strategy_options(args: argparse.Namespace) -> dict:
    if args.strategy == "shirg":
        return {
            "options": ShirgOptions(
                weights=parse_weights(args.weights),
                source="saliency",
                coverage=not args.no_coverage,
                merge=not args.no_merge,
                merge_eps=args.merge_eps,
            )
        }
    if args.strategy == "random":
        return {"seed": args.seed}
    return {}


def run(args: argparse.Namespace) -> int:
    if args.strategy not in strategy_names():
        raise ConfigError(f"unknown strategy {args.strategy!r}; valid strategies: {', '.join(strategy_names())}")
    if args.question is not None and not args.question.strip():
        raise ConfigError("--question is empty; give a question or leave the option out")
    image = load_image(args.image)
    tower = load_vision_tower(args.vision, device=args.device)
    tokens, prepared = encode_dual_scale(tower, [image], args.resolution, args.resize)
    k = args.k if args.k is not None else default_k(tokens.grid)
    if args.strategy in ("shirg", "text-topk"):
        print(
            "note: no projector or question embeddings are loaded here, so the relevance term uses "
            "the query-agnostic saliency score" + (" and the question is ignored" if args.question else "")
        )
    with torch.no_grad():
        sel = select_tokens(args.strategy, tokens, k, None, scaffold=not args.no_scaffold, **strategy_options(args))
    from shirg.viz import draw_overlay

    draw_overlay(image, sel, 0, args.out, args.resolution, prepared[0].content_box)
    kinds = sel.kind[0].tolist()
    counts = {name: kinds.count(code) for code, name in KIND_NAMES.items() if code in kinds}
    print(f"{args.strategy}: grid {tokens.grid}x{tokens.grid}, kept {sel.num_tokens} tokens {counts}")
    print(f"overlay written to {args.out}")
    if args.json:
        write_json(
            args.json,
            {
                "strategy": args.strategy,
                "score_source": "saliency",
                "resolution": args.resolution,
                "grid": tokens.grid,
                "scaffold_grid": tokens.scaffold_grid if not args.no_scaffold else 0,
                "k": k,
                "num_tokens": sel.num_tokens,
                "content_box": list(prepared[0].content_box),
                "tokens": [
                    {"kind": KIND_NAMES[kd], "index": ix, "box": [round(v, 6) for v in bx]}
                    for kd, ix, bx in zip(kinds, sel.index[0].tolist(), sel.boxes[0].tolist(), strict=True)
                ],
            },
        )
        print(f"selection written to {args.json}")
    return 0
