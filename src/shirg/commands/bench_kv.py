"""`shirg bench-kv`: what each prefix-KV storage format costs and changes (shirg.bench.kv).

For one visual mode and a set of prompts, every format is built from the same prefix and compared
with the native cache: cache bytes (prefix only, and with the answer slots' own K/V at compute
precision), max / mean absolute reconstruction error of K and V, answer-slot logit drift, greedy
answer agreement, and the per-step time of a cached denoising step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shirg.commands._common import add_device_options, add_visual_options, load_model, visual_options
from shirg.io import write_json, write_text

HELP = "compare prefix-KV storage formats: bytes, reconstruction error, logit drift, agreement, step time"
FORMATS = "native,fp16,bf16,int8,fp8"  # shirg.bench.kv.FORMATS, repeated: --help stays torch-free


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="LaViDa checkpoint folder")
    src.add_argument("--preset", default=None, choices=["tiny", "cpu-small", "lavida-8b"], help="default tiny")
    p.add_argument("--mode", default="shirg")
    p.add_argument("--formats", default=FORMATS)
    p.add_argument("--prompts", type=int, default=8, help="number of (image, question) prompts")
    p.add_argument("--gen-length", type=int, default=16)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--step-repeats", type=int, default=10, help="cached steps timed per format")
    add_device_options(p)
    p.add_argument("--out", default=None, help="folder for kv.json and kv.md")
    add_visual_options(p)


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from shirg.bench.kv import check_formats, measure_formats, table

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    check_formats(formats)
    opts = visual_options(args)
    opts.validate(args.mode)
    model, source = load_model(args)
    rows = measure_formats(model, args.mode, opts, formats, args.prompts, args.gen_length, args.steps,
                           args.step_repeats)
    result = {"model": source, "device": str(model.device), "dtype": str(model.dtype).replace("torch.", ""),
              "mode": args.mode, "prompts": args.prompts, "gen_length": args.gen_length,
              "note": "bytes of the last prompt's cache; errors: max over prompts and layers (mean for mean_*)",
              "rows": rows}
    text = table(result)
    print(text)
    if args.out:
        write_json(Path(args.out) / "kv.json", result)
        write_text(Path(args.out) / "kv.md", text + "\n")
    return 0
