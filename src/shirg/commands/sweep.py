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
import dataclasses
import time
from pathlib import Path

from shirg.commands._common import (
    add_generation_options,
    add_visual_options,
    command_line,
    generation_kwargs,
    load_model,
    visual_options,
)
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
    add_generation_options(p)
    add_visual_options(p)
    p.set_defaults(gen_length=None, steps=None)


def run(args: argparse.Namespace) -> int:
    from shirg.evaluate import sweep
    from shirg.evaluate.data import load_samples, task_spec
    from shirg.evaluate.modes import build_modes
    from shirg.evaluate.runner import EvalSettings, evaluate, machine_info
    from shirg.evaluate.summary import SCORE_KEYS
    from shirg.tokens.dual_scale import scaffold_size

    spec = task_spec(args.task)
    budgets = sweep.parse_budgets(args.budgets)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not names or len(set(names)) != len(names) or args.reference in names:
        raise ConfigError(f"--strategies {args.strategies!r}: give distinct strategies, not the reference "
                          f"{args.reference}")
    metric = args.metric or ("acc_reading" if args.task == "entitygrid" else SCORE_KEYS[args.task][0])
    args.gen_length = args.gen_length or spec.gen_length
    args.steps = args.steps or args.gen_length
    base = visual_options(args)
    grid = base.resolution // 14
    cover = scaffold_size(grid) ** 2
    points = []
    for pct in budgets:
        k = sweep.budget_tokens(pct, grid)
        opts = dataclasses.replace(base, k=k, coverage=base.coverage and k >= cover)
        points.append({"percent": pct, "k": k, "coverage": opts.coverage, "modes": build_modes(names, opts)})
    if len({p["k"] for p in points}) != len(points):
        raise ConfigError(f"--budgets {args.budgets} give the same K twice on a {grid} x {grid} grid")
    reference = build_modes([args.reference], base)
    samples = load_samples(args.task, args.data, args.split, args.limit)
    from shirg.commands.eval import resolve_adapter

    adapter, weights = resolve_adapter(args.adapter)
    if args.preset and adapter:
        raise ConfigError("--adapter needs --model (a preset has random weights)")
    model, source = load_model(args, adapter=adapter, shirg_weights=weights)
    settings = EvalSettings(task=args.task, gen=generation_kwargs(args), warmup=args.warmup, reference=args.reference)
    out = Path(args.out)
    invocation = {"command": command_line(args), "model": source, "adapter": str(adapter) if adapter else None,
                  "data": str(args.data), "samples": len(samples), "world_size": 1,
                  "machine": machine_info(model.device), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    progress = not args.no_progress
    evaluate(model, samples, reference, out / sweep.REFERENCE_DIR, settings, overlays=0, progress=progress,
             invocation=invocation)
    for pt in points:
        evaluate(model, samples, pt["modes"], out / sweep.budget_dir(pt["k"]), settings, overlays=0,
                 progress=progress, invocation=invocation)
    table = sweep.collect(out, [{k: v for k, v in pt.items() if k != "modes"} for pt in points], names, metric,
                          args.reference)
    paths = sweep.write(table, out, grid * grid)
    print(sweep.markdown(table, grid * grid))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
