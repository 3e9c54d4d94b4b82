"""`shirg select`: run the tower, score and select, write an overlay PNG and a JSON record."""

from __future__ import annotations

import argparse
import logging

from shirg.commands._common import add_device_options, add_visual_options, device_of, visual_options
from shirg.errors import ConfigError
from shirg.io import write_json
from shirg.limits import check_text

HELP = "see which visual tokens a strategy keeps (PNG overlay + JSON)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--question", default=None, help="question for the text-relevance term (needs --model)")
    p.add_argument("--strategy", default="shirg", help="selection strategy (default shirg)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="LaViDa checkpoint folder: its projector and question embeddings score text")
    src.add_argument("--vision", help="LaViDa checkpoint or local SigLIP folder: tower only, saliency score")
    p.add_argument("--adapter", default=None, help="a `shirg train` adapter folder for --model: its LoRA and "
                   "relevance head take part in the text and head scores (with --question; saliency reads the "
                   "plain tower)")
    p.add_argument("--out", required=True, help="overlay PNG to write")
    p.add_argument("--json", default=None, help="selection JSON to write")
    add_device_options(p)
    add_visual_options(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from shirg.tokens import select_tokens, strategy_names, text_strategies
    from shirg.tokens.types import KIND_NAMES
    from shirg.vision.encode import encode_dual_scale
    from shirg.vision.preprocess import load_image
    from shirg.vision.siglip import load_vision_tower

    if args.strategy not in strategy_names():
        raise ConfigError(f"unknown strategy {args.strategy!r}; valid strategies: {', '.join(strategy_names())}")
    if args.question is not None:
        check_text(args.question, "--question")
    opts = visual_options(args)
    image = load_image(args.image)
    device = device_of(args)
    uses_text = args.strategy in text_strategies()
    text = None
    if args.adapter and not args.model:
        raise ConfigError("--adapter needs --model (the checkpoint it was trained on)")
    if args.model and args.question and opts.score in ("text", "head") and uses_text:
        # the text term (and a head) needs the projector and the LLM's input embeddings: load the whole model
        import shirg
        from shirg.model.visual import question_context

        model = shirg.load(args.model, device=device, dtype=getattr(args, "dtype", None), adapter=args.adapter)
        tower = model.model.vision_tower
        text = question_context(model, [args.question])
    else:
        # only the vision tensors are read, even from a 16 GB LaViDa checkpoint
        tower = load_vision_tower(args.model or args.vision, device=device)
    score_source = opts.score if text is not None else "saliency"
    if uses_text and text is None:
        if not args.model:
            reason = "no model (--model) is loaded"
        elif not args.question:
            reason = "no question was given"
        else:
            reason = "--score saliency was asked for"
        print(f"note: {reason}, so the relevance term uses the query-agnostic saliency score")
    opts.score = score_source
    tokens, prepared = encode_dual_scale(tower, [image], opts.resolution, opts.resize)
    k = opts.budget()
    with torch.no_grad():
        extra = opts.strategy_options(args.strategy)
        sel = select_tokens(args.strategy, tokens, k, text, scaffold=opts.scaffold, **extra)
    from shirg.vision.overlay import draw_overlay

    draw_overlay(image, sel, 0, args.out, opts.resolution, prepared[0].content_box)
    kinds = sel.kind[0].tolist()
    counts = {name: kinds.count(code) for code, name in KIND_NAMES.items() if code in kinds}
    print(f"{args.strategy}: grid {tokens.grid}x{tokens.grid}, kept {sel.num_tokens} tokens {counts}")
    print(f"overlay written to {args.out}")
    if args.json:
        write_json(
            args.json,
            {
                "strategy": args.strategy,
                "score_source": score_source,
                "question": args.question,
                "resolution": opts.resolution,
                "grid": tokens.grid,
                "scaffold_grid": tokens.scaffold_grid if opts.scaffold else 0,
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
