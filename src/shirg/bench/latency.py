"""Latency, memory and KV bytes of one visual mode at a time, measured the same way for every mode
(``shirg bench``): a warm-up, then ``repeats`` timed answers; per-stage medians, memory, token counts,
the project's targets checked on the numbers, a table and a stage plot."""

from __future__ import annotations

import contextlib
import statistics
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from shirg.io import atomic_write
from shirg.memory import PeakRss
from shirg.model.answer import HiresFailure
from shirg.model.options import LAVIDA_MODES

STAGES = ("preprocess", "vision", "select", "project", "prefill", "denoise", "total")


def synthetic_chart(width: int = 1000, height: int = 800):
    """A deterministic bar chart with small labels (PIL image): enough structure for selection to matter."""
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


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_mode(model, image, question: str, mode: str, gen: dict, repeats: int, device, weights_mb: float) -> dict:
    """Warm-up, then ``repeats`` timed answers; per-stage stats, memory, token counts. A failed
    high-resolution pass is a failure of the mode: the row is ``{"mode", "failed": reason}``."""
    sampler = PeakRss() if device.type == "cpu" else contextlib.nullcontext()
    try:
        model.answer([image], [question], mode=mode, **gen)  # warm-up
        with sampler:
            runs = [model.answer([image], [question], mode=mode, **gen)[0].meta for _ in range(repeats)]
    except HiresFailure as e:
        return {"mode": mode, "failed": next(iter(e.reasons.values()))}
    last = runs[-1]
    times = {s: stats([r["time_s"].get(s, 0.0) for r in runs]) for s in STAGES}
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




MEMORY_NOTE = {
    False: "CPU: peak_mb = process RSS peak during the mode's timed runs (sampled every 5 ms from /proc/self/statm); "
           "act_kv_mb = that peak minus the RSS just before them (after gc + malloc_trim): activations + KV cache "
           "+ allocator growth; rss_mb / peak_rss_mb = current RSS and the process-lifetime peak after the last run",
    True: "CUDA: peak_mb = max over runs of torch.cuda.max_memory_allocated after a reset at the start of each "
          "answer; act_kv_mb = peak_mb - weights_mb",
}


def check_targets(result: dict) -> list[dict]:
    """SHIRG's efficiency targets (docs/method.md section 9) on this run's numbers: each value, limit and
    whether it is met."""
    first = result.get("caches", ["prefix"])[0]
    rows = [r for r in result["rows"] if r.get("cache", first) == first]
    by_mode = {r["mode"]: r for r in rows}
    gpu = result["device"] != "cpu"
    targets = []
    for r in rows:
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
    cols = ["mode", "cache", "visual", "prompt", "KV MiB", "peak MiB", "act+KV MiB", *(f"{s} ms" for s in STAGES),
            "total min-max ms", "select % vision", "x lowres", "x full", "act+KV x lowres", "act+KV x full"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        cells = [r["mode"], r.get("cache", "prefix"), str(r["visual_tokens"]), str(r["prompt_length"]),
                 f"{r['kv_cache_bytes'] / 2**20:.1f}",
                 f"{r['peak_mb']:.0f}", f"{r['act_kv_mb']:.1f}"]
        cells += [f"{r['time_s'][s]['median'] * 1e3:.1f}" for s in STAGES]
        total = r["time_s"]["total"]
        cells.append(f"{total['min'] * 1e3:.1f}-{total['max'] * 1e3:.1f}")
        cells.append(f"{r['select_pct_of_vision']:.2f}" if "select_pct_of_vision" in r else "-")
        cells += [f"{r[k]:.2f}" if k in r else "-"
                  for k in ("total_vs_lowres", "total_vs_full", "act_kv_vs_lowres", "act_kv_vs_full")]
        lines.append("| " + " | ".join(cells) + " |")
    for mode, reason in (result.get("failed") or {}).items():
        lines.append(f"| {mode} | failed: {reason} |" + " |" * (len(cols) - 2))
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
