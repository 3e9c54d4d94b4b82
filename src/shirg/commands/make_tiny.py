"""`shirg make-tiny`: write a tiny random LaViDa checkpoint (exact key layout, sharded, tokenizer)."""

from __future__ import annotations

import argparse

HELP = "write a tiny random-weight checkpoint in LaViDa's exact layout (for trying the CLI without weights)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    from shirg.testing import write_tiny_lavida_checkpoint

    path = write_tiny_lavida_checkpoint(args.out, seed=args.seed, shards=args.shards)
    print(f"tiny random LaViDa checkpoint written to {path} (random weights: answers are meaningless)")
    return 0
