"""The GPU suite's table assembly (``shirg bench --preset lavida-8b --gpu-suite``): measured stage
times and memory next to their roofline floors (:func:`shirg.bench.analytic.stage_floors`)."""

from __future__ import annotations

from dataclasses import asdict

from shirg.bench.analytic import GPUS

SUITE_FORMATS = ("bf16", "int8", "int4")
SUITE_MODES = ("lowres", "lavida", "full", "shirg")
SUITE_STAGES = ("vision", "select", "project", "prefill", "denoise", "total")


# ----------------------------------------------------------------------------- GPU suite: table assembly


def suite_row(meta_runs: list[dict], floors: dict, fmt: str, mode: str, cache: str) -> dict:
    """One suite row from the ``answer()`` metas of the timed runs: median ms per stage, each next to
    its floor (``x floor`` = measured / floor), peak memory (max over runs)."""
    import statistics

    row = {"format": fmt, "mode": mode, "cache": cache, "runs": len(meta_runs),
           "visual_tokens": meta_runs[-1]["visual_tokens"], "prompt_length": meta_runs[-1]["prompt_length"],
           "steps_used": meta_runs[-1].get("steps_used", meta_runs[-1].get("steps"))}
    for s in SUITE_STAGES:
        ms = statistics.median(r["time_s"].get(s, 0.0) for r in meta_runs) * 1e3
        floor = floors[f"{s}_s"] * 1e3
        row[f"{s}_ms"] = ms
        row[f"{s}_floor_ms"] = floor
        row[f"{s}_x_floor"] = ms / floor if floor > 0 else None
    steps = max(1, int(row["steps_used"] or 1))
    row["step_ms"] = row["denoise_ms"] / steps
    row["step_floor_ms"] = floors["step_s"] * 1e3
    row["step_x_floor"] = row["step_ms"] / row["step_floor_ms"]
    peaks = [r["peak_gpu_mb"] for r in meta_runs if r.get("peak_gpu_mb") is not None]
    row["peak_mb"] = max(peaks) if peaks else None
    row["memory_floor_mb"] = floors["memory_bytes"] / 2**20
    return row


def suite_targets(rows: list[dict]) -> list[dict]:
    """The issue's GPU goals on the suite's rows."""
    out = []
    for r in rows:
        if r["mode"] == "shirg" and r["format"] == "int4" and r["cache"] == "prefix":
            after = r["prefill_ms"] + r["denoise_ms"]
            out.append({"target": "shirg int4: 32 tokens <= 50 ms after the image is encoded (prefill + denoise)",
                        "value": after, "limit": 50.0, "met": after <= 50.0})
            if r["peak_mb"] is not None:
                gb = r["peak_mb"] * 2**20 / 1e9
                out.append({"target": "shirg int4: total memory <= 8.9 GB (max_memory_allocated)",
                            "value": gb, "limit": 8.9, "met": gb <= 8.9})
        if r["format"] == "bf16" and r["cache"] == "prefix":
            out.append({"target": f"{r['mode']} bf16: cached step within 1.3x of its roofline floor",
                        "value": r["step_x_floor"], "limit": 1.3, "met": r["step_x_floor"] <= 1.3})
    return out


def suite_markdown(result: dict) -> str:
    head = (f"GPU suite on {result['device']}: {result['model']}, {result['steps']} steps x {result['gen_length']} "
            f"answer tokens, median of {result['repeats']}; floors: roofline on {result['floor_gpu']} "
            "(shirg.bench.analytic)")
    cols = ["weights", "cache", "mode", "visual", "prompt"]
    for s in SUITE_STAGES:
        cols += [f"{s} ms", "floor", "x"]
    cols += ["step ms", "step floor", "step x", "peak MiB", "memory floor MiB"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    for r in result["rows"]:
        cells = [r["format"], r["cache"], r["mode"], str(r["visual_tokens"]), str(r["prompt_length"])]
        for s in SUITE_STAGES:
            cells += [f(r[f"{s}_ms"]), f(r[f"{s}_floor_ms"], ".2f"), f(r[f"{s}_x_floor"], ".2f")]
        cells += [f(r["step_ms"], ".2f"), f(r["step_floor_ms"], ".2f"), f(r["step_x_floor"], ".2f"),
                  f(r["peak_mb"], ".0f"), f(r["memory_floor_mb"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("train"):
        lines += ["", "| shirg train (tiny config) | samples/s |", "|---|---|"]
        for name, rate in result["train"].items():
            lines.append(f"| {name} | {f(rate, '.2f')} |")
    if result.get("targets"):
        lines += ["", "| goal | value | limit | met |", "|---|---|---|---|"]
        for t in result["targets"]:
            lines.append(f"| {t['target']} | {t['value']:.2f} | {t['limit']:.2f} | {'yes' if t['met'] else 'no'} |")
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines)


def gpu_dict(name: str) -> dict:
    return asdict(GPUS[name])
