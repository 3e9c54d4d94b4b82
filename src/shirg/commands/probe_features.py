"""`shirg probe-features`: which EntityGrid attributes (colour, shape, number, grid row and column) a
linear probe decodes from each entity patch's features, at the tower's output and at the projector's
(what the language model receives); see shirg/evaluate/features.py."""

from __future__ import annotations

import argparse

HELP = "linear probes of colour / shape / number / row / column per patch from the tower's and projector's features"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="LaViDa checkpoint folder")
    p.add_argument("--data", required=True, help="`shirg entitygrid` folder (its questions.jsonl holds the scenes)")
    p.add_argument("--n", type=int, default=96, help="images probed: the folder's first N (default 96)")
    p.add_argument("--fit", type=int, default=None,
                   help="images the probes are fitted on (the first ones; default two thirds); the rest are scored")
    p.add_argument("--resolution", type=int, default=336, help="canvas the tower reads (default 336)")
    p.add_argument("--json", default=None, help="also write the result here (atomically)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import shirg
    from shirg.errors import ConfigError
    from shirg.evaluate.features import markdown, probe, read_scenes
    from shirg.io import write_json

    records = read_scenes(args.data, args.n)
    if args.n < 3:
        raise ConfigError(f"--n must be at least 3, got {args.n}")
    model = shirg.load(args.model)
    result = probe(model, records, Path(args.data), resolution=args.resolution, fit=args.fit)
    result.update(model=str(args.model), data=str(args.data))
    print(markdown(result))
    if args.json:
        write_json(args.json, result)
    return 0
