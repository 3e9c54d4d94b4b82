"""`shirg bench`: latency, memory and KV bytes of every visual mode, measured side by side in one run.

Per mode: visual tokens, prompt length, prefix KV bytes, and the median (min, max) over repeats,
after a warm-up, of each stage (preprocess, vision, select, project, prefill, denoise, total);
memory (CUDA: max_memory_allocated after a reset; CPU: process RSS sampled during the mode's runs),
and activation + KV memory (peak above the weights / above the RSS before the runs); selection time
as a percentage of the vision tower's. Ratios against ``lowres`` (the checklist's baseline) and
``full`` (the upper bound), and the checklist's targets checked on this run's numbers.
``--analytic`` prints the roofline model of the real 8B config instead (see shirg.bench.analytic).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shirg.bench.hardware import ANALYTIC_MODES, GPUS
from shirg.commands._common import (
    add_device_options,
    add_generation_options,
    add_visual_options,
    command_line,
    device_of,
    generation_kwargs,
    load_model,
    visual_options,
)
from shirg.errors import ConfigError
from shirg.io import write_json, write_text

HELP = "measure latency, memory and KV bytes of every mode side by side (or --analytic roofline)"
DEFAULT_MODES = "lowres,lavida,full,shirg"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="LaViDa checkpoint folder")
    src.add_argument("--preset", default=None, choices=["tiny", "cpu-small", "lavida-8b"],
                     help="random-weight model of a preset's shapes (default tiny)")
    p.add_argument("--modes", default=None,
                   help=f"comma-separated modes (default {DEFAULT_MODES}; --analytic: {ANALYTIC_MODES})")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image", default=None, help="image to use (default: a synthetic 1000 x 800 chart)")
    p.add_argument("--question", default="What is the value of the highest bar?")
    p.add_argument("--compare-cache", action="store_true",
                   help="measure every mode twice: with the prefix cache and with none (full recompute every step)")
    p.add_argument("--memory-snapshot", default=None, help="CUDA: write a PyTorch memory snapshot pickle here")
    p.add_argument("--analytic", action="store_true",
                   help="print the roofline model of the real LaViDa-8B config instead (no model is built)")
    p.add_argument("--gpu", default="h100", choices=sorted(GPUS), help="GPU for --analytic (default h100)")
    p.add_argument("--text-tokens", type=int, default=64,
                   help="--analytic: text tokens in the prompt besides the image (default 64: template + system "
                        "prompt + a short question)")
    p.add_argument("--out", default=None,
                   help="folder for bench.json, bench.md, bench.png (--analytic: analytic.json, analytic.md)")
    add_device_options(p)
    add_generation_options(p, steps=30)
    add_visual_options(p)
    from shirg.commands._bench_speed import add_speed_arguments

    add_speed_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.analytic:
        return run_analytic(args)
    from shirg.commands._bench_speed import run_speed, speed_requested

    if speed_requested(args):  # several weight formats, --batch, --samplers or --gpu-suite
        return run_speed(args)
    from shirg.model.options import MODES

    modes = [m.strip() for m in (args.modes or DEFAULT_MODES).split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}; valid modes: {', '.join(MODES)}")
    if args.repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    opts = visual_options(args)
    for m in modes:
        opts.validate(m)
    device = device_of(args)
    if args.memory_snapshot and device.type != "cuda":
        raise ConfigError(f"--memory-snapshot needs a CUDA device (this run is on {device.type}): PyTorch records "
                          "allocator history only for CUDA memory. Drop the flag or pass --device cuda.")
    import torch

    from shirg.bench.latency import (
        MEMORY_NOTE,
        check_targets,
        markdown_table,
        measure_mode,
        plot_stages,
        synthetic_chart,
    )
    from shirg.vision.preprocess import load_image

    image = load_image(args.image) if args.image else synthetic_chart()
    model, source = load_model(args)
    from shirg.model.quantize import weight_bytes

    weights_mb = weight_bytes(model) / 2**20  # looks inside quantized weights
    gen = {**generation_kwargs(args), "options": opts}
    if args.memory_snapshot:
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    from tqdm import tqdm

    caches = ["prefix", "none"] if args.compare_cache else [args.cache]
    runs = [(mode, c) for mode in modes for c in caches]
    measured = [{**measure_mode(model, image, args.question, mode, {**gen, "cache": c}, args.repeats, device,
                                weights_mb), "cache": c}
                for mode, c in tqdm(runs, desc="modes", unit="run")]
    rows = [r for r in measured if "failed" not in r]
    failed = {r["mode"] + ("" if len(caches) == 1 else f" ({r['cache']})"): r["failed"]
              for r in measured if "failed" in r}
    if args.memory_snapshot:
        torch.cuda.memory._dump_snapshot(args.memory_snapshot)
        torch.cuda.memory._record_memory_history(enabled=None)
    by_key = {(r["mode"], r["cache"]): r for r in rows}
    for r in rows:
        for ref in ("lowres", "full"):
            if (ref, r["cache"]) in by_key:  # ratios against the reference mode under the same cache
                base = by_key[(ref, r["cache"])]
                r[f"total_vs_{ref}"] = r["time_s"]["total"]["median"] / base["time_s"]["total"]["median"]
                if base["kv_cache_bytes"]:
                    r[f"kv_vs_{ref}"] = r["kv_cache_bytes"] / base["kv_cache_bytes"]
                if base["act_kv_mb"] > 0:
                    r[f"act_kv_vs_{ref}"] = r["act_kv_mb"] / base["act_kv_mb"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "command": command_line(args),
        "model": source,
        "device": device_name,
        "torch_threads": torch.get_num_threads(),
        "dtype": str(model.dtype).replace("torch.", ""),
        "steps": args.steps,
        "gen_length": args.gen_length,
        "kv_cache": args.kv_cache,
        "caches": caches,
        "repeats": args.repeats,
        "resolution": opts.resolution,
        "image_size": list(image.size),
        "weights_mb": weights_mb,
        "memory_note": MEMORY_NOTE[device.type == "cuda"],
        "rows": rows,
        "failed": failed,  # mode -> why its high-resolution pass failed (no fallback in a comparison)
    }
    result["targets"] = check_targets(result)
    table = markdown_table(result)
    print(table)
    if args.memory_snapshot:
        print(f"wrote memory snapshot {args.memory_snapshot} (open it at https://pytorch.org/memory_viz)")
    if args.out:
        out = Path(args.out)
        write_json(out / "bench.json", result)
        write_text(out / "bench.md", table + "\n")
        plot_stages(result, out / "bench.png")
        print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    return 0


def run_analytic(args: argparse.Namespace) -> int:
    """``shirg bench --analytic``: print the roofline table, write analytic.json / .md to --out."""
    from shirg.bench.analytic import analytic_report

    report, text = analytic_report(args.gpu, args.modes, args.resolution, args.steps, args.gen_length,
                                   getattr(args, "text_tokens", 64), getattr(args, "weight_format", None),
                                   getattr(args, "expected_steps", None))
    print(text)
    if args.out:
        out = Path(args.out)
        write_json(out / "analytic.json", report)
        write_text(out / "analytic.md", text + "\n")
        print(f"wrote {out / 'analytic.json'}, {out / 'analytic.md'}")
    return 0
