"""`shirg sweep`: every strategy at several budgets of the high-detail tokens; table and plot.

    shirg sweep --model DIR [--adapter DIR] --data DIR --budgets 5,10,20,33 \\
        --strategies shirg,shirg-saliency,uniform,visionzip,saint,divprune --out OUT

Runs the reference mode once (OUT/reference) and every strategy at K = each budget's share of the
G x G high-detail tokens (OUT/k<K>), each folder a resumable `shirg eval` folder; then writes
OUT/sweep.{md,csv,json} and OUT/sweep.png (score vs visual tokens, one line per strategy with its
95 % interval band). Rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import time

from shirg.commands._common import (
    add_generation_options,
    add_visual_options,
    command_line,
    generation_kwargs,
    load_model,
    visual_options,
)
from shirg.commands.eval import resolve_adapter
from shirg.errors import ConfigError

HELP = "budget sweep: every strategy at K = 5/10/20/33 % of the high-detail tokens; table + plot with intervals"
DEFAULT_STRATEGIES = "shirg,shirg-saliency,uniform,visionzip,saint,divprune"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="LaViDa checkpoint folder")
    src.add_argument("--preset", choices=["tiny", "cpu-small"], help="random-weight model (plumbing checks only)")
    p.add_argument("--adapter", default=None, metavar="DIR", help="adapter folder from `shirg train` (every mode)")
    p.add_argument("--task", default="entitygrid", help="chartqa | docvqa | textvqa | entitygrid (default)")
    p.add_argument("--data", required=True, help="benchmark folder")
    p.add_argument("--split", default=None)
    p.add_argument("--budgets", default="5,10,20,33",
                   help="percent of the G x G high-detail tokens (default 5,10,20,33)")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help=f"comma-separated strategies or SHIRG ablations (default {DEFAULT_STRATEGIES})")
    p.add_argument("--reference", default="full", metavar="MODE", help="compared with, paired (default full)")
    p.add_argument("--metric", default=None,
                   help="score of the table (default: acc_reading for entitygrid, else the task's first score)")
    p.add_argument("--limit", type=int, default=None, help="first N samples only")
    p.add_argument("--out", required=True, help="output folder (reused to resume)")
    p.add_argument("--warmup", type=int, default=0, help="discarded answers per mode before timing (default 0)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--swap-questions", action="store_true",
                   help="control: each sample is asked the next sample's question (its own image and evidence)")
    p.add_argument("--selection-only", action="store_true",
                   help="EntityGrid: no answers, only what each strategy keeps (visual tokens, evidence recall, "
                        "queried patch kept); the table's default metric becomes queried_patch_kept")
    add_generation_options(p)
    add_visual_options(p)
    p.set_defaults(gen_length=None, steps=None)


def run(args: argparse.Namespace) -> int:
    from shirg.evaluate import sweep

    spec = sweep.task_spec(args.task)
    budgets = sweep.parse_budgets(args.budgets)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not names or len(set(names)) != len(names) or args.reference in names:
        raise ConfigError(f"--strategies {args.strategies!r}: give distinct strategies, not the reference "
                          f"{args.reference}")
    if args.selection_only and args.task != "entitygrid":
        raise ConfigError("--selection-only needs --task entitygrid (its evidence boxes)")
    metric = args.metric or ("queried_patch_kept" if args.selection_only else sweep.default_metric(args.task))
    args.gen_length = args.gen_length or spec.gen_length
    args.steps = args.steps or args.gen_length
    base = visual_options(args)
    grid = base.resolution // 14
    points = sweep.plan(names, base, budgets, grid)
    reference = sweep.build_modes([args.reference], base)
    samples = sweep.load_samples(args.task, args.data, args.split, args.limit)
    if args.swap_questions:
        samples = sweep.swap_questions(samples)
    adapter, weights = resolve_adapter(args.adapter)
    if args.preset and adapter:
        raise ConfigError("--adapter needs --model (a preset has random weights)")
    model, source = load_model(args, adapter=adapter, shirg_weights=weights)
    settings = sweep.EvalSettings(task=args.task, gen=generation_kwargs(args), warmup=args.warmup,
                                  reference=args.reference)
    invocation = {"command": command_line(args), "model": source, "adapter": str(adapter) if adapter else None,
                  "data": str(args.data), "samples": len(samples), "world_size": 1,
                  "machine": sweep.machine_info(model.device), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    table = sweep.run_sweep(model, samples, points, reference, args.out, settings, names, metric,
                            progress=not args.no_progress, invocation=invocation,
                            selection_only=args.selection_only)
    paths = sweep.write(table, args.out, grid * grid)
    print(sweep.markdown(table, grid * grid))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
