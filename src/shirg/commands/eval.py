"""`shirg eval`: every visual mode on the same benchmark samples, resumable, data-parallel.

    shirg eval --model DIR --task chartqa --data DATA --modes lowres,lavida,full,shirg,uniform --out OUT
    accelerate launch --multi_gpu --num_processes 8 -m shirg.cli eval ...   # one shard per GPU, merged at the end
    shirg eval ... --ablation                                       # + SHIRG ablation variants

Writes OUT/predictions.jsonl (one line per mode and sample), summary.{md,csv,json},
score_vs_latency.png, score_vs_tokens.png and overlays.png. Rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from shirg.commands._common import (
    add_generation_options,
    add_revision_option,
    add_visual_options,
    add_weight_format_option,
    command_line,
    generation_kwargs,
    load_model,
    visual_options,
)
from shirg.errors import ConfigError
from shirg.evaluate.recipes import recipe_settings  # torch-free: plain settings tables
from shirg.limits import names_text, non_negative_int, positive_int

HELP = "evaluate modes side by side on ChartQA, DocVQA, TextVQA or EntityGrid (resumable, data-parallel)"
DEFAULT_MODES = "lowres,lavida,full,shirg"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="LaViDa checkpoint folder")
    src.add_argument("--preset", choices=["tiny", "cpu-small"], help="random-weight model (plumbing checks only)")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="trained adapter folder from `shirg train` (PEFT LoRA and/or shirg_weights.safetensors), "
                        "as `shirg answer --adapter`; a plain SHIRG weights .safetensors file is also accepted")
    p.add_argument("--shirg-weights", default=None,
                   help="SHIRG weights (coordinate embedding) safetensors file; wins over the adapter's own")
    p.add_argument("--task", required=True, help="chartqa | docvqa | textvqa | entitygrid")
    p.add_argument("--data", required=True, help="benchmark folder (original release or Hugging Face parquet layout)")
    p.add_argument("--split", default=None, help="parquet split (default: test for chartqa, validation otherwise)")
    p.add_argument("--modes", type=names_text, default=DEFAULT_MODES,
                   help=f"comma-separated modes (default {DEFAULT_MODES})")
    p.add_argument("--ablation", "--preset-ablation", dest="ablation", action="store_true",
                   help="add the SHIRG ablations (no coverage / merge / coords, each score term off, nbr sign flipped)")
    p.add_argument("--reference", default=None, metavar="MODE",
                   help="the mode every other mode is compared with, sample by sample: paired difference with "
                        "its 95 %% interval and the exact McNemar p in the summary (default: full; a run "
                        "without full then has no paired differences)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="first N samples only (the same N for every mode)")
    p.add_argument("--out", required=True, help="output folder (reused to resume)")
    p.add_argument("--batch-size", type=positive_int, default=1,
                   help="samples per answer() call (1 gives clean latencies)")
    p.add_argument("--warmup", type=non_negative_int, default=1,
                   help="discarded answers per mode before timing (default 1)")
    p.add_argument("--overlays", type=non_negative_int, default=3, help="samples in the overlay grid (0: none)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first sample that cannot be answered (default: record its error in "
                        "predictions.jsonl, count it as failed, go on)")
    p.add_argument("--no-evidence", action="store_true", help="EntityGrid: skip evidence recall")
    p.add_argument("--recipe", default=None, choices=["lavida-paper"],
                   help="lavida-paper: every generation setting as LaViDa's published evaluation of the task "
                        "(cache none, uniform one-token steps, eval-time prompt ids and decoding, pooling on); "
                        "it wins over the generation flags (docs/lavida_recipe.md)")
    p.add_argument("--prompt-suffix", default=None, help="text appended to every question (default: lmms-eval's)")
    p.add_argument("--device", default=None, help="default: cuda (this rank's GPU) when available, else cpu")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--no-progress", action="store_true")
    add_weight_format_option(p)
    add_generation_options(p)
    add_visual_options(p)
    add_revision_option(p)
    p.set_defaults(gen_length=None, steps=None)


def resolve_adapter(adapter: str | None, shirg_weights: str | None = None) -> tuple[Path | None, Path | None]:
    """(adapter folder, SHIRG weights file) for :func:`shirg.load`.

    A folder is an adapter written by ``shirg train`` (LoRA layers and/or SHIRG weights, applied as
    ``shirg answer --adapter`` does); a file is taken as plain SHIRG weights (the older form)."""
    weights = Path(shirg_weights) if shirg_weights else None
    if weights is not None and not weights.is_file():
        raise ConfigError(f"--shirg-weights {weights} is not a file")
    if adapter is None:
        return None, weights
    from shirg.model.adapter import RELEVANCE_HEAD
    from shirg.model.loading import SHIRG_WEIGHTS
    from shirg.train.adapter import ADAPTER_CONFIG

    path = Path(adapter)
    if path.is_dir():
        if not any((path / f).is_file() for f in (ADAPTER_CONFIG, SHIRG_WEIGHTS, RELEVANCE_HEAD)):
            raise ConfigError(f"--adapter {path} holds none of {ADAPTER_CONFIG} (a PEFT LoRA adapter), "
                              f"{SHIRG_WEIGHTS} and {RELEVANCE_HEAD}; pass the adapter folder written by "
                              "`shirg train`")
        return path, weights
    if path.is_file():
        if weights is not None:
            raise ConfigError(f"--adapter {path} is a SHIRG weights file and --shirg-weights is given too; "
                              "pass one of them")
        return None, path
    raise ConfigError(f"--adapter {path} does not exist")


def describe_adapter(folder: Path | None, weights: Path | None) -> dict | None:
    """What run.json records about the adapter: folder, LoRA config (if any), SHIRG weights file."""
    if folder is None and weights is None:
        return None
    info: dict = {"path": str(folder) if folder else None, "lora": None, "shirg_weights": None}
    if folder is not None:
        import json

        from shirg.model.loading import SHIRG_WEIGHTS
        from shirg.train.adapter import ADAPTER_CONFIG

        cfg = folder / ADAPTER_CONFIG
        if cfg.is_file():
            raw = json.loads(cfg.read_text())
            info["lora"] = {k: raw.get(k) for k in ("r", "lora_alpha", "target_modules", "peft_type")}
        if (folder / SHIRG_WEIGHTS).is_file():
            info["shirg_weights"] = str(folder / SHIRG_WEIGHTS)
    if weights is not None:
        info["shirg_weights"] = str(weights)
    return info


class _Dist:
    """The process group of a data-parallel launch: rank, world size, device, barrier."""

    def __init__(self) -> None:
        import torch
        import torch.distributed as dist

        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device("cuda", self.local_rank) if cuda else torch.device("cpu")
        self.barrier = dist.barrier


def distributed() -> tuple[int, int, _Dist | None]:
    """(rank, world size, group) under `accelerate launch --multi_gpu` / torchrun, else (0, 1, None).

    torch.distributed is used directly (NCCL on GPUs, gloo on CPUs): accelerate's launcher sets the
    same environment, and its state object does not form a CPU group without MPI."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    group = _Dist()
    return group.rank, group.world, group


def run(args: argparse.Namespace) -> int:
    from shirg.evaluate.data import has_answers, load_samples, task_spec
    from shirg.evaluate.modes import ABLATIONS, build_modes
    from shirg.evaluate.runner import EvalSettings, evaluate, machine_info

    spec = task_spec(args.task)
    if args.recipe:
        for key, value in recipe_settings(args.recipe, args.task).items():
            setattr(args, key, value)
    names = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.ablation:
        names += [m for m in ("shirg", *ABLATIONS) if m not in names]
    args.gen_length = args.gen_length or spec.gen_length
    args.steps = args.steps or args.gen_length
    modes = build_modes(names, visual_options(args))
    if args.reference is not None and args.reference not in {m.name for m in modes}:
        raise ConfigError(f"--reference {args.reference} is not one of the modes run "
                          f"({', '.join(m.name for m in modes)}); add it to --modes or pick one of them")
    gen = generation_kwargs(args)  # checked before the run folder is touched
    if args.batch_size < 1 or args.warmup < 0:
        raise ConfigError("--batch-size must be >= 1 and --warmup >= 0")
    samples = load_samples(args.task, args.data, args.split, args.limit)
    scored = args.task == "entitygrid" or has_answers(samples)
    if not scored and args.task not in ("docvqa", "textvqa"):
        raise ConfigError(f"{args.data}: no sample has an answer, and {args.task} has no submission format")
    adapter, weights = resolve_adapter(args.adapter, args.shirg_weights)
    if args.preset and (adapter or weights):
        raise ConfigError("--adapter / --shirg-weights need --model (a preset has random weights)")
    rank, world, state = distributed()
    if not args.device and state is not None:
        args.device = str(state.device)  # this rank's GPU under a data-parallel launch
    model, source = load_model(args, adapter=adapter, shirg_weights=weights)
    device = model.device
    settings = EvalSettings(task=args.task, gen=gen, batch_size=args.batch_size,
                            warmup=args.warmup, evidence=not args.no_evidence, prompt_suffix=args.prompt_suffix,
                            weight_format=args.weight_format, reference=args.reference or "full",
                            strict=args.strict)
    invocation = {"command": command_line(args), "recipe": args.recipe,
                  "model": source, "adapter": describe_adapter(adapter, weights), "data": str(args.data),
                  "samples": len(samples), "world_size": world, "machine": machine_info(device),
                  "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    summary = evaluate(model, samples, modes, args.out, settings, rank=rank, world=world,
                       barrier=state.barrier if state is not None else None, overlays=args.overlays,
                       progress=not args.no_progress, invocation=invocation, score=scored)
    if state is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    if summary is not None and "submissions" in summary:
        print(f"{args.data}: this split has no answers, so nothing was scored; wrote the evaluation server's "
              f"submission files {', '.join(summary['submissions'])} and predictions.jsonl in {args.out}")
    elif summary is not None:
        from shirg.evaluate.summary import markdown

        print(markdown(summary, f"{args.task}: {len(samples)} samples"))
        print(f"wrote {Path(args.out) / 'predictions.jsonl'}, summary.md/.csv/.json and plots in {args.out}")
    return 0
