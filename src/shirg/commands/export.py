"""`shirg export`: merge a trained LoRA adapter into the base weights, as a plain LaViDa checkpoint."""

from __future__ import annotations

import argparse

HELP = ("merge a LoRA adapter (and SHIRG weights), or an intermediate training checkpoint, into a LaViDa "
        "checkpoint that loads without PEFT")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base LaViDa checkpoint folder")
    p.add_argument("--adapter", default=None, help="adapter folder written by `shirg train`")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="an intermediate training checkpoint (OUTPUT/checkpoints/step-N) instead of --adapter; "
                        "--model is then the checkpoint the run started from")
    p.add_argument("--out", required=True, help="new checkpoint folder (must not exist)")
    p.add_argument("--dtype", default=None, help="dtype written (default: the base checkpoint's torch_dtype)")
    p.add_argument("--device", default="cpu", help="device used for merging")


def run(args: argparse.Namespace) -> int:
    from shirg.train.adapter import export_merged

    out = export_merged(args.model, args.adapter, args.out, dtype=args.dtype, device=args.device,
                       checkpoint=args.checkpoint)
    print(f"wrote {out}")
    return 0
