"""`shirg bench`: latency, memory and KV bytes of every visual mode, measured side by side in one run.

Per mode: visual tokens, prompt length, prefix KV bytes, and the median (min, max) over repeats,
after a warm-up, of each stage (preprocess, vision, select, project, prefill, denoise, total);
memory (CUDA: max_memory_allocated after a reset; CPU: process RSS sampled during the mode's runs),
and activation + KV memory (peak above the weights / above the RSS before the runs); selection time
as a percentage of the vision tower's. Ratios against ``lowres`` (the checklist's baseline) and
``full`` (the upper bound), and the checklist's targets checked on this run's numbers.
``--analytic`` prints the roofline model of the real 8B config instead (see shirg.bench_analytic).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from pathlib import Path

from shirg.bench_analytic import DEFAULT_MODES as ANALYTIC_MODES
from shirg.bench_analytic import GPUS
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
from shirg.io import atomic_write, write_json, write_text

HELP = "measure latency, memory and KV bytes of every mode side by side (or --analytic roofline)"
STAGES = ("preprocess", "vision", "select", "project", "prefill", "denoise", "total")
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


def synthetic_chart(width: int = 1000, height: int = 800):
    """A deterministic bar chart with small labels (PIL image): enough structure for selection to matter."""
    import torch
    from PIL import Image, ImageDraw

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


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _measure_mode(model, image, question: str, mode: str, gen: dict, repeats: int, device, weights_mb: float) -> dict:
    """Warm-up, then ``repeats`` timed answers; per-stage stats, memory, token counts."""

    from shirg.memory import PeakRss
    from shirg.model.inference import LAVIDA_MODES

    model.answer([image], [question], mode=mode, **gen)  # warm-up
    sampler = PeakRss() if device.type == "cpu" else contextlib.nullcontext()
    with sampler:
        runs = [model.answer([image], [question], mode=mode, **gen)[0].meta for _ in range(repeats)]
    last = runs[-1]
    times = {s: _stats([r["time_s"].get(s, 0.0) for r in runs]) for s in STAGES}
    row = {
        "mode": mode,
        "visual_tokens": last["visual_tokens"],
        "prompt_length": last["prompt_length"],
        "kv_cache_bytes": last["kv_cache_bytes"],
        "fallbacks": sum(1 for r in runs if r.get("fallback")),
        "time_s": times,
    }
    row |= {k: v for k, v in last.items() if k.endswith("_mb")}
    if device.type == "cuda":
        row["peak_mb"] = max(r["peak_gpu_mb"] for r in runs)
        row["act_kv_mb"] = row["peak_mb"] - weights_mb
    else:
        row["rss_before_mb"] = sampler.before / 2**20
        row["peak_mb"] = sampler.peak / 2**20
        row["act_kv_mb"] = (sampler.peak - sampler.before) / 2**20
    vision = times["vision"]["median"]
    if mode not in LAVIDA_MODES and vision > 0:
        row["select_pct_of_vision"] = 100 * times["select"]["median"] / vision
    return row


def run(args: argparse.Namespace) -> int:
    if args.analytic:
        from shirg.bench_analytic import run_analytic

        return run_analytic(args)
    from shirg.model.inference import MODES

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

    from shirg.vision.preprocess import load_image

    image = load_image(args.image) if args.image else synthetic_chart()
    model, source = load_model(args)
    weights_mb = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**20
    gen = {**generation_kwargs(args), "options": opts}
    if args.memory_snapshot:
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    from tqdm import tqdm

    rows = [_measure_mode(model, image, args.question, mode, gen, args.repeats, device, weights_mb)
            for mode in tqdm(modes, desc="modes", unit="mode")]
    if args.memory_snapshot:
        torch.cuda.memory._dump_snapshot(args.memory_snapshot)
        torch.cuda.memory._record_memory_history(enabled=None)
    by_mode = {r["mode"]: r for r in rows}
    for r in rows:
        for ref in ("lowres", "full"):
            if ref in by_mode:
                base = by_mode[ref]
                r[f"total_vs_{ref}"] = r["time_s"]["total"]["median"] / base["time_s"]["total"]["median"]
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
        "repeats": args.repeats,
        "resolution": opts.resolution,
        "image_size": list(image.size),
        "weights_mb": weights_mb,
        "memory_note": MEMORY_NOTE[device.type == "cuda"],
        "rows": rows,
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


MEMORY_NOTE = {
    False: "CPU: peak_mb = process RSS peak during the mode's timed runs (sampled every 5 ms from /proc/self/statm); "
           "act_kv_mb = that peak minus the RSS just before them (after gc + malloc_trim): activations + KV cache "
           "+ allocator growth; rss_mb / peak_rss_mb = current RSS and the process-lifetime peak after the last run",
    True: "CUDA: peak_mb = max over runs of torch.cuda.max_memory_allocated after a reset at the start of each "
          "answer; act_kv_mb = peak_mb - weights_mb",
}


def check_targets(result: dict) -> list[dict]:
    """The checklist's targets (issue 7) on this run's numbers: each value, limit and whether it is met."""
    by_mode = {r["mode"]: r for r in result["rows"]}
    gpu = result["device"] != "cpu"
    targets = []
    for r in result["rows"]:
        if "select_pct_of_vision" not in r or r["mode"] == "full":
            continue
        if gpu:
            value, limit, name = r["time_s"]["select"]["median"] * 1e3, 2.0, "select ms per image < 2 (GPU)"
        else:
            value, limit, name = r["select_pct_of_vision"], 2.0, "select < 2 % of vision (CPU)"
        targets.append({"target": f"{r['mode']}: {name}", "value": value, "limit": limit, "met": value < limit})
    shirg = by_mode.get("shirg")
    checks = (("total_vs_lowres", "latency shirg <= 1.35x lowres", 1.35),
              ("total_vs_full", "latency shirg <= 0.66x full", 0.66),
              ("act_kv_vs_lowres", "act+KV memory shirg <= 1.17x lowres", 1.17),
              ("act_kv_vs_full", "act+KV memory shirg <= 0.45x full", 0.45))
    for key, name, limit in checks:
        if shirg is not None and key in shirg:
            targets.append({"target": name, "value": shirg[key], "limit": limit, "met": shirg[key] <= limit})
    return targets


def markdown_table(result: dict) -> str:
    head = (f"{result['model']} on {result['device']} ({result['dtype']}, {result['torch_threads']} threads), "
            f"{result['steps']} steps, {result['gen_length']} answer tokens, KV {result['kv_cache']}, "
            f"median of {result['repeats']}; weights {result['weights_mb']:.0f} MiB")
    cols = ["mode", "visual", "prompt", "KV MiB", "peak MiB", "act+KV MiB", *(f"{s} ms" for s in STAGES),
            "total min-max ms", "select % vision", "x lowres", "x full", "act+KV x lowres", "act+KV x full"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        cells = [r["mode"], str(r["visual_tokens"]), str(r["prompt_length"]), f"{r['kv_cache_bytes'] / 2**20:.1f}",
                 f"{r['peak_mb']:.0f}", f"{r['act_kv_mb']:.1f}"]
        cells += [f"{r['time_s'][s]['median'] * 1e3:.1f}" for s in STAGES]
        total = r["time_s"]["total"]
        cells.append(f"{total['min'] * 1e3:.1f}-{total['max'] * 1e3:.1f}")
        cells.append(f"{r['select_pct_of_vision']:.2f}" if "select_pct_of_vision" in r else "-")
        cells += [f"{r[k]:.2f}" if k in r else "-"
                  for k in ("total_vs_lowres", "total_vs_full", "act_kv_vs_lowres", "act_kv_vs_full")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Memory: {result['memory_note']}."]
    if result["targets"]:
        lines += ["", "| target (checklist) | value | limit | met |", "|---|---|---|---|"]
        for t in result["targets"]:
            lines.append(f"| {t['target']} | {t['value']:.2f} | {t['limit']:.2f} | {'yes' if t['met'] else 'no'} |")
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
