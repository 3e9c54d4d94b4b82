"""`shirg entitygrid`: generate the EntityGrid benchmark (images, questions, LLaVA training records).

The format and the question types are specified in docs/entitygrid.md. Deterministic from --seed:
use one seed for evaluation and other seeds for training data.
"""

from __future__ import annotations

import argparse

HELP = "generate the EntityGrid high-resolution benchmark (deterministic from --seed; see docs/entitygrid.md)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (images/, questions.jsonl, llava_train.json)")
    p.add_argument("--n", type=int, default=500, help="samples (one image and one question each; default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=1344, help="image side in pixels (default 1344)")
    p.add_argument("--grid", default="8x8", help="ROWSxCOLS (default 8x8)")
    p.add_argument("--occupancy", type=float, default=0.6, help="chance that a cell holds an entity")
    p.add_argument("--entity-scale", type=float, default=0.3, help="shape side as a fraction of the cell side")
    p.add_argument("--label-px", type=int, default=14, help="font size of the numbers in pixels (default 14)")
    p.add_argument("--train-records", default=None,
                   help="where to write the LLaVA-format records (default OUT/llava_train.json)")


def run(args: argparse.Namespace) -> int:
    from shirg.evaluate.entitygrid import EntityGridConfig, generate, parse_grid

    rows, cols = parse_grid(args.grid)
    cfg = EntityGridConfig(size=args.size, rows=rows, cols=cols, occupancy=args.occupancy,
                           entity_scale=args.entity_scale, label_px=args.label_px)
    meta = generate(args.out, args.n, args.seed, cfg, train_records=args.train_records, progress=True)
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    print(f"wrote {args.n} EntityGrid samples ({counts}) to {args.out}; training records: {meta['llava_records']}")
    return 0
