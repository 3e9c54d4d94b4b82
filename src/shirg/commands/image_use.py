"""`shirg image-use`: does a (partly) trained model read the image? Per-answer-slot loss and accuracy
with each sample's own image against the next sample's image (see shirg/train/probe.py)."""

from __future__ import annotations

import argparse

HELP = "per-answer-slot loss with true vs other samples' images: does a trained model use the image?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="LaViDa checkpoint folder (e.g. a stage's OUTPUT/model)")
    p.add_argument("--records", required=True, help="LLaVA-format training records (JSON list or JSON lines)")
    p.add_argument("--image-root", default=None, help="folder the records' image paths are relative to "
                                                      "(default: the records file's folder)")
    p.add_argument("--match", default="", help="only records whose question contains this text (e.g. 'written')")
    p.add_argument("--n", type=int, default=128, help="records probed: a seeded shuffle's first N (default 128)")
    p.add_argument("--mode", default="lowres", help="visual mode (lowres, full, shirg, ...; default lowres)")
    p.add_argument("--resolution", type=int, default=336, help="canvas of the high-resolution modes (default 336)")
    p.add_argument("--slots", type=int, default=8, help="answer slots (answer + end token + padding; default 8)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that picks the N records")
    p.add_argument("--json", default=None, help="also write the result here (atomically)")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import random
    from pathlib import Path

    import shirg
    from shirg.errors import ConfigError
    from shirg.io import write_json
    from shirg.train.data import read_records, records_to_samples
    from shirg.train.probe import image_use

    if args.n < 2:
        raise ConfigError(f"--n must be at least 2, got {args.n}")
    records = [r for r in read_records(args.records)
               if any(args.match in t.get("value", "") for t in r.get("conversations", [])[:1])]
    if not records:
        raise ConfigError(f"no record of {args.records} has a question containing {args.match!r}")
    random.Random(args.seed).shuffle(records)
    root = Path(args.image_root) if args.image_root else Path(args.records).resolve().parent
    samples = records_to_samples(records, root)[: args.n]
    model = shirg.load(args.model)
    res = image_use(model, samples, mode=args.mode, slots=args.slots, resolution=args.resolution,
                    batch_size=args.batch_size, progress=not args.no_progress)
    res.update(model=str(args.model), records=str(args.records), match=args.match)
    print(f"{res['n']} samples, mode {args.mode}, question contains {args.match!r}; every answer slot masked")
    print("| slot | CE true | CE rolled | acc true | acc rolled |")
    print("|---|---|---|---|---|")
    for k in range(args.slots):
        print(f"| {k} | {res['ce_true'][k]:.3f} | {res['ce_rolled'][k]:.3f} | {100 * res['acc_true'][k]:.1f} | "
              f"{100 * res['acc_rolled'][k]:.1f} |")
    print(f"mean CE over slots: true {res['mean_ce_true']:.4f}, rolled {res['mean_ce_rolled']:.4f}")
    if args.json:
        write_json(args.json, res)
    return 0
