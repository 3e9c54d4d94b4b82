"""`shirg train`: LoRA-adapt SHIRG (or fine-tune any component) with PEFT and accelerate.

One process: ``shirg train --config configs/train_shirg.yaml``. Many GPUs:
``accelerate launch --config_file configs/accelerate/ddp_8gpu.yaml -m shirg.cli train --config ...``.
"""

from __future__ import annotations

import argparse

from shirg.errors import ConfigError
from shirg.limits import positive_int

HELP = "train SHIRG's LoRA adapter and coordinate embedding (single process or under accelerate launch)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training YAML (see configs/train_shirg.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set lora.rank=32 (repeatable)")
    p.add_argument("--model", default=None, help="LaViDa checkpoint folder (overrides model.path)")
    p.add_argument("--output-dir", default=None, help="overrides run.output_dir")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in the output folder (or the one given)")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="resume although batch, learning rates or other exactness-relevant settings differ from the "
                        "checkpoint's (the run is then no longer exact; the changes are recorded)")
    p.add_argument("--stop-after", type=positive_int, default=None, metavar="N",
                   help="stop after N optimizer steps without finishing (as if interrupted; resume later)")
    p.add_argument("--dry-run", action="store_true", help="print the trainable parameters and targets, then exit")


def run(args: argparse.Namespace) -> int:
    from shirg.train.config import load_config

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.path={args.model}")
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        import shirg
        from shirg.train.lora import describe, make_trainable

        model = shirg.load(cfg.model.path)
        print(describe(make_trainable(model, cfg)))
        return 0
    from shirg.train.trainer import train

    if args.resume_with_changes and not args.resume:
        raise ConfigError("--resume-with-changes needs --resume")
    result = train(cfg, resume=args.resume, stop_after=args.stop_after, resume_with_changes=args.resume_with_changes)
    from accelerate import PartialState

    if PartialState().is_main_process:
        last = f"{result['losses'][-1]:.4f}" if result["losses"] else "n/a"
        print(f"trained {result['steps']} steps, last loss {last}, skipped images {result['skipped_images']}")
        for key in ("adapter", "model"):
            if key in result:
                print(f"{key}: {result[key]}")
    return 0
