"""`shirg answer`: answer a question about an image with a LaViDa checkpoint, in any visual mode."""

from __future__ import annotations

import argparse

from shirg.commands._common import (
    add_device_options,
    add_generation_options,
    add_visual_options,
    add_weight_format_option,
    generation_kwargs,
    load_model,
    visual_options,
)
from shirg.io import write_json
from shirg.limits import check_text, names_text

HELP = "answer a question about an image (any visual mode: lavida, lowres, full, shirg, baselines)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="LaViDa checkpoint folder (config.json, safetensors, tokenizer)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--mode", type=names_text, default="lavida",
                   help="visual mode (default lavida); several: comma-separated")
    p.add_argument("--shirg-weights", default=None, help="SHIRG weights (coordinate embedding) safetensors file")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="trained adapter folder from `shirg train` (LoRA + SHIRG weights)")
    add_device_options(p)
    add_weight_format_option(p)
    p.add_argument("--json", default=None, help="write answers and metadata as JSON")
    add_generation_options(p)
    add_visual_options(p)


def run(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    opts = visual_options(args)
    gen = generation_kwargs(args)
    for m in modes:
        opts.validate(m)
    check_text(args.question, "--question")
    from shirg.vision.preprocess import load_image

    image = load_image(args.image)  # fail on a bad image before the (slow) model load
    model, _ = load_model(args, adapter=args.adapter, shirg_weights=args.shirg_weights)
    records = []
    for m in modes:
        ans = model.answer([image], [args.question], mode=m, options=opts, fallback="lavida", **gen)[0]
        meta = ans.meta
        times = " ".join(f"{k} {v * 1e3:.0f}ms" for k, v in meta["time_s"].items())
        note = f"  [fell back to lavida: {meta['fallback_reason']}]" if meta.get("fallback") else ""
        print(f"[{m}] {ans.text}{note}")
        print(f"    visual tokens {meta['visual_tokens']}, prompt {meta['prompt_length']}, {times}")
        records.append({"mode": m, "question": args.question, "image": str(args.image), **ans.to_dict()})
    if args.json:
        write_json(args.json, records if len(records) > 1 else records[0])
    return 0
