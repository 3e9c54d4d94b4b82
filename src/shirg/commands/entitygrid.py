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
    p.add_argument("--preset", default="default", choices=["default", "small"],
                   help="generator settings: default (1344 px, 8x8) or small (336 px, 3x3, digits 1-9: the bundled "
                        "small model's task); the options below override single values")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 1344)")
    p.add_argument("--grid", default=None, help="ROWSxCOLS (default 8x8)")
    p.add_argument("--occupancy", type=float, default=None, help="chance that a cell holds an entity (default 0.6)")
    p.add_argument("--entity-scale", type=float, default=None,
                   help="shape side as a fraction of the cell side (default 0.3)")
    p.add_argument("--label-px", type=int, default=None, help="font size of the numbers in pixels (default 14)")
    p.add_argument("--max-label", type=int, default=None, help="numbers are drawn from 1..N (default 99)")
    p.add_argument("--captions", action="store_true",
                   help="also write one dense caption per image into the training records (every cell's colour, "
                        "shape and number, row by row); never part of questions.jsonl")
    p.add_argument("--cells", type=int, default=0, metavar="N",
                   help="also write N training records per image, each about one cell drawn at random (\"Describe "
                        "the cell in row R, column C.\" -> \"red circle 5\" or \"empty\"); N >= ROWS*COLS: every "
                        "cell; never part of questions.jsonl")
    p.add_argument("--label-place", choices=("under", "inside"), default=None,
                   help="where the numbers are drawn: under each shape (default) or inside it, black on a white "
                        "tag at the shape's centre (the reading question then asks what is written 'on' it)")
    p.add_argument("--label-grid", type=int, default=None, metavar="PX",
                   help="move each entity (by at most PX/2) so its number is centred in a PX x PX square of the "
                        "image, e.g. 14: one patch of the 24 x 24 grid of a 336-px image (default 0: off)")
    p.add_argument("--label-jitter", type=int, default=None, metavar="PX",
                   help="with --label-grid: then move each entity by a random whole number of pixels in [-PX, PX] "
                        "per axis (default 0)")
    p.add_argument("--repeat-labels", action="store_true",
                   help="numbers drawn with repetition from 1..--max-label (e.g. digits on 4x4 or 5x5 grids)")
    p.add_argument("--lookalikes", type=int, default=None, metavar="N",
                   help="N look-alike distractors of the reading or recognition question's entity: same colour "
                        "(another shape) or same shape (another colour), another number (0-10; default 0)")
    p.add_argument("--background", choices=("white", "clutter"), default=None,
                   help="white (default) or clutter: a low-contrast texture of strokes and blobs (never digits)")
    p.add_argument("--stray-digits", type=int, default=None, metavar="N",
                   help="N stray numbers on free background, drawn like the entities' (black on a white tag) but on "
                        "no entity and never asked about: distractors a question-blind selection cannot tell from "
                        "the numbers that matter (0-400; default 0)")
    p.add_argument("--types", default=None, metavar="T1,T2",
                   help="question types to cycle through, comma-separated, from recognition, position, counting, "
                        "reading (default: all four); scenes stay those of the same seed, e.g. --types reading")
    p.add_argument("--train-records", default=None,
                   help="where to write the LLaVA-format records (default OUT/llava_train.json)")


def run(args: argparse.Namespace) -> int:
    from shirg.entitygrid import generate, parse_grid, preset_config
    from shirg.errors import ConfigError

    if args.cells < 0:
        raise ConfigError(f"--cells must be 0 or more, got {args.cells}")
    rows, cols = parse_grid(args.grid) if args.grid else (None, None)
    cfg = preset_config(args.preset, size=args.size, rows=rows, cols=cols, occupancy=args.occupancy,
                        entity_scale=args.entity_scale, label_px=args.label_px, max_label=args.max_label,
                        label_place=args.label_place, label_grid=args.label_grid,
                        label_jitter=args.label_jitter, repeat_labels=args.repeat_labels or None,
                        lookalikes=args.lookalikes, background=args.background,
                        stray_digits=args.stray_digits)
    meta = generate(args.out, args.n, args.seed, cfg, train_records=args.train_records, progress=True,
                    captions=args.captions, cells=args.cells,
                    types=args.types.split(",") if args.types is not None else None)
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    print(f"wrote {args.n} EntityGrid samples ({counts}) to {args.out}; training records: {meta['llava_records']}")
    return 0
