"""`shirg bench`: latency, memory and KV bytes of every visual mode, measured side by side in one run.

Per mode: visual tokens, prompt length, prefix KV bytes, and the median (min, max) over repeats,
after a warm-up, of each stage (preprocess, vision, select, project, prefill, denoise, total);
memory (CUDA: max_memory_allocated after a reset; CPU: process RSS). Ratios against ``lowres``
(the checklist's baseline) and ``full`` (the upper bound). ``--analytic`` prints the roofline
model of the real 8B config instead (see shirg.bench_analytic).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from PIL import Image

from shirg.commands._common import add_visual_options, visual_options
from shirg.errors import ConfigError
from shirg.io import atomic_write, write_json, write_text

HELP = "measure latency, memory and KV bytes of every mode side by side (or --analytic roofline)"
STAGES = ("preprocess", "vision", "select", "project", "prefill", "denoise", "total")
DEFAULT_MODES = "lowres,lavida,full,shirg"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="LaViDa checkpoint folder")
    src.add_argument("--preset", default=None, choices=["tiny", "cpu-small", "lavida-8b"],
                     help="random-weight model of a preset's shapes (default tiny)")
    p.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated modes (default {DEFAULT_MODES})")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--kv-cache", default="native", choices=["native", "fp16", "bf16", "int8", "fp8"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image", default=None, help="image to use (default: a synthetic 1000 x 800 chart)")
    p.add_argument("--question", default="What is the value of the highest bar?")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--memory-snapshot", default=None, help="CUDA: write a PyTorch memory snapshot pickle here")
    p.add_argument("--analytic", action="store_true", help="print the roofline model of LaViDa-8B instead")
    p.add_argument("--gpu", default="h100", help="GPU for --analytic (h100, h200, a100)")
    p.add_argument("--out", default=None, help="folder for bench.json, bench.md and bench.png")
    add_visual_options(p)


def synthetic_chart(width: int = 1000, height: int = 800) -> Image.Image:
    """A deterministic bar chart with small labels: enough structure for selection to matter."""
    from PIL import ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    g = torch.Generator().manual_seed(0)
    bars = (torch.rand(12, generator=g) * 0.8 + 0.1).tolist()
    for i, v in enumerate(bars):
        x0 = 60 + i * 75
        draw.rectangle([x0, height - 60 - v * (height - 120), x0 + 50, height - 60], fill=(40, 90, 200))
        draw.text((x0 + 5, height - 50), f"{v * 100:.1f}", fill="black")
    draw.text((20, 15), "Quarterly revenue by region (million USD)", fill="black")
    return img


def _load_model(args):
    if args.model:
        import shirg

        return shirg.load(args.model, device=args.device, dtype=args.dtype), f"checkpoint {args.model}"
    from shirg.model.loading import _dtype
    from shirg.presets import build_preset

    preset = args.preset or "tiny"
    dtype = _dtype(args.dtype, torch.device(args.device))
    return build_preset(preset, args.device, dtype), f"preset {preset} (random weights)"


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(args: argparse.Namespace) -> int:
    if args.analytic:
        from shirg.bench_analytic import run_analytic

        return run_analytic(args)
    from shirg.model.inference import MODES

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}; valid modes: {', '.join(MODES)}")
    if args.repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    opts = visual_options(args)
    for m in modes:
        opts.validate(m)
    device = torch.device(args.device)
    model, source = _load_model(args)
    image = Image.open(args.image).convert("RGB") if args.image else synthetic_chart()
    gen = dict(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length or min(32, args.gen_length),
               kv_cache=args.kv_cache, options=opts)
    if args.memory_snapshot and device.type == "cuda":
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    from tqdm import tqdm

    rows = []
    for mode in tqdm(modes, desc="modes", unit="mode"):
        model.answer([image], [args.question], mode=mode, **gen)  # warm-up
        runs = [model.answer([image], [args.question], mode=mode, **gen)[0].meta for _ in range(args.repeats)]
        last = runs[-1]
        row = {
            "mode": mode,
            "visual_tokens": last["visual_tokens"],
            "prompt_length": last["prompt_length"],
            "kv_cache_bytes": last["kv_cache_bytes"],
            "fallbacks": sum(1 for r in runs if r.get("fallback")),
            "time_s": {s: _stats([r["time_s"].get(s, 0.0) for r in runs]) for s in STAGES},
        }
        row |= {k: v for k, v in last.items() if k.endswith("_mb")}
        rows.append(row)
    if args.memory_snapshot and device.type == "cuda":
        torch.cuda.memory._dump_snapshot(args.memory_snapshot)
        torch.cuda.memory._record_memory_history(enabled=None)
    by_mode = {r["mode"]: r for r in rows}
    for r in rows:
        for ref in ("lowres", "full"):
            if ref in by_mode:
                base = by_mode[ref]["time_s"]["total"]["median"]
                r[f"total_vs_{ref}"] = r["time_s"]["total"]["median"] / base
                r[f"kv_vs_{ref}"] = r["kv_cache_bytes"] / by_mode[ref]["kv_cache_bytes"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "model": source,
        "device": device_name,
        "torch_threads": torch.get_num_threads(),
        "dtype": str(model.dtype).replace("torch.", ""),
        "steps": args.steps,
        "gen_length": args.gen_length,
        "kv_cache": args.kv_cache,
        "repeats": args.repeats,
        "resolution": opts.resolution,
        "image_size": list(image.size),
        "rows": rows,
    }
    table = markdown_table(result)
    print(table)
    if args.out:
        out = Path(args.out)
        write_json(out / "bench.json", result)
        write_text(out / "bench.md", table + "\n")
        plot_stages(result, out / "bench.png")
        print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}")
    return 0


def markdown_table(result: dict) -> str:
    head = (f"{result['model']} on {result['device']} ({result['dtype']}, {result['torch_threads']} threads), "
            f"{result['steps']} steps, {result['gen_length']} answer tokens, KV {result['kv_cache']}, "
            f"median of {result['repeats']}")
    cols = ["mode", "visual", "prompt", "KV MiB", *(f"{s} ms" for s in STAGES), "x lowres", "x full"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        cells = [r["mode"], str(r["visual_tokens"]), str(r["prompt_length"]), f"{r['kv_cache_bytes'] / 2**20:.1f}"]
        cells += [f"{r['time_s'][s]['median'] * 1e3:.1f}" for s in STAGES]
        cells += [f"{r[k]:.2f}" if k in r else "-" for k in ("total_vs_lowres", "total_vs_full")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_stages(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 4), dpi=110)
    bottom = [0.0] * len(rows)
    for stage in STAGES[:-1]:
        vals = [r["time_s"][stage]["median"] * 1e3 for r in rows]
        ax.bar([r["mode"] for r in rows], vals, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("ms (median)")
    ax.set_title(f"{result['model']} on {result['device']}: {result['steps']} steps", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
