"""Speed measurements behind ``shirg bench``: weight formats, batch sizes and samplers side by side,
and the GPU suite's per-format loop and training run (:mod:`shirg.commands._bench_speed` is the CLI).

- weight formats: the same preset/checkpoint loaded once per format, every mode timed per format in
  one run: weight bytes, per-step and end-to-end time, ratios to the first format.
- batches: answers per second and per-answer latency per mode and batch size (a batch of different
  images and questions, so prompts of different lengths share one padded batch).
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from shirg.bench.analytic import GPUS, stage_floors
from shirg.bench.latency import synthetic_chart
from shirg.bench.suite import SUITE_FORMATS, SUITE_MODES, suite_markdown, suite_row, suite_targets
from shirg.errors import ConfigError
from shirg.io import write_json, write_text
from shirg.model.answer import answer
from shirg.model.lavida import LavidaConfig
from shirg.model.options import MODES
from shirg.model.quantize import check_weight_format, llm_linears, resolve_load, tensor_bytes, weight_bytes
from shirg.model.sampler import SAMPLERS
from shirg.presets import preset_config
from shirg.testing import write_tiny_lavida_checkpoint
from shirg.vision.preprocess import load_image

QUESTIONS = (
    "What is the value of the highest bar?",
    "Which region had the lowest revenue in the third quarter of the year shown in this chart?",
    "What is the title?",
    "How many bars are taller than the bar labelled with the smallest number, counting from the left side?",
)
SIZES = ((1000, 800), (640, 640), (800, 1200), (1200, 500))


def parse_formats(text: str | None, default: str = "float") -> list[str]:

    names = [f.strip() for f in (text or default).split(",") if f.strip()]
    if not names:
        raise ConfigError("--weight-format is empty; e.g. --weight-format float,int8")
    return [check_weight_format(n) for n in names]


def parse_batches(text: str | None) -> list[int]:
    try:
        sizes = [int(b) for b in (text or "1").split(",") if b.strip()]
    except ValueError as e:
        raise ConfigError(f"--batch must be comma-separated positive integers like 1,4,16, got {text!r}") from e
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--batch must be comma-separated positive integers like 1,4,16, got {text!r}")
    return sizes


def parse_samplers(text: str | None) -> list[str]:

    names = [s.strip() for s in (text or "fixed").split(",") if s.strip()]
    bad = [s for s in names if s not in SAMPLERS]
    if bad or not names:
        raise ConfigError(f"--samplers takes {', '.join(SAMPLERS)} (comma-separated), got {text!r}")
    return names


def batch_inputs(n: int, image=None) -> tuple[list, list[str]]:
    """``n`` different (image, question) pairs: synthetic charts of different sizes and aspect ratios
    (``image``, when given, for every sample) and questions of different lengths."""

    images = [image if image is not None else synthetic_chart(*SIZES[i % len(SIZES)]) for i in range(n)]
    return images, [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]


def measure(model, mode: str, batch: int, gen: dict, repeats: int, image=None) -> dict:
    """Warm-up, then ``repeats`` timed batched answers: median stage times, answers/s, latency."""
    images, questions = batch_inputs(batch, image)
    model.answer(images, questions, mode=mode, **gen)  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        metas = [a.meta for a in model.answer(images, questions, mode=mode, **gen)]
        runs.append((time.perf_counter() - t0, metas))
    wall = statistics.median(w for w, _ in runs)
    metas = [m[0] for _, m in runs]
    steps = statistics.median(max(x["steps_used"] for x in m) for _, m in runs)
    denoise = statistics.median(m["time_s"].get("denoise", 0.0) for m in metas)
    return {
        "mode": mode, "batch": batch, "repeats": repeats,
        "visual_tokens": statistics.mean(x["visual_tokens"] for x in runs[-1][1]),
        "steps_used": steps,
        "time_s": {k: statistics.median(m["time_s"].get(k, 0.0) for m in metas)
                   for k in ("vision", "prefill", "denoise", "total")},
        "step_ms": denoise / max(steps, 1) * 1e3,
        "latency_ms": wall * 1e3,  # every answer of a batch returns when the batch does
        "ms_per_answer": wall / batch * 1e3,
        "answers_per_s": batch / wall,
    }


def speed_markdown(result: dict) -> str:
    first = result["formats"][0]
    if len(result["samplers"]) > 1:
        first += f" {result['samplers'][0]}"
    head = (f"{next(iter(result['models'].values())).split(',')[0]} on {result['device']} "
            f"({result['torch_threads']} threads), {result['gen_length']} answer tokens, {result['steps']} steps "
            f"(fixed sampler), threshold {result['threshold']} (threshold sampler), median of {result['repeats']}; "
            f"ratios against {first} in this run")
    cols = ["weights", "dtype", "sampler", "mode", "batch", "weight MiB", "LLM linears MiB", f"linears x {first}",
            "steps", "step ms", f"step x {first}", "prefill ms", "latency ms", f"latency x {first}",
            "ms / answer", "answers/s"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        lines.append("| " + " | ".join([
            r["format"], r["dtype"], r["sampler"], r["mode"], str(r["batch"]), f"{r['weight_bytes'] / 2**20:.1f}",
            f"{r['llm_linear_bytes'] / 2**20:.1f}", f"{r['bytes_x_first']:.3f}", f"{r['steps_used']:g}",
            f"{r['step_ms']:.2f}", f"{r['step_x_first']:.2f}", f"{r['time_s']['prefill'] * 1e3:.1f}",
            f"{r['latency_ms']:.1f}", f"{r['total_x_first']:.2f}", f"{r['ms_per_answer']:.1f}",
            f"{r['answers_per_s']:.2f}"]) + " |")
    return "\n".join(lines)


def suite_caches() -> list[str]:
    """Cache settings the suite compares: ``prefix`` always; ``none`` where ``answer`` offers it."""


    params = inspect.signature(answer).parameters
    return ["none", "prefix"] if "cache" in params else ["prefix"]


def suite_format(model, cfg, fmt: str, modes, caches, steps: int, gen_length: int, repeats: int,
                 floor_gpu: str) -> list[dict]:
    """Suite rows of one loaded model: every cache setting and mode, a warm-up then ``repeats`` answers."""

    image, question = synthetic_chart(), "What is the value of the highest bar?"
    rows = []
    for cache in caches:
        for mode in modes:
            kw = dict(mode=mode, gen_length=gen_length, steps=steps, block_length=gen_length)
            if cache == "none":
                kw["cache"] = "none"
            model.answer([image], [question], **kw)  # warm-up (the only answer when repeats is 0)
            if repeats < 1:
                continue
            metas = [model.answer([image], [question], **kw)[0].meta for _ in range(repeats)]
            text_tokens = metas[-1]["prompt_length"] - metas[-1]["visual_tokens"]
            floors = stage_floors(cfg, mode, GPUS[floor_gpu], "bf16" if fmt == "float" else fmt, steps,
                                  gen_length, text_tokens)
            if cache == "none":  # every step runs the whole prompt: the prefill floor moves into each step
                floors["denoise_s"] = steps * (floors["prefill_s"] + floors["step_s"])
                floors["total_s"] = floors["total_s"] - steps * floors["step_s"] + floors["denoise_s"]
                floors["step_s"] += floors["prefill_s"]
            rows.append(suite_row(metas, floors, fmt, mode, cache))
    return rows


def suite_train(folder: Path, device, steps: int = 30, skip: int = 10) -> dict[str, float | None]:
    """samples/s of ``shirg train`` on a tiny checkpoint and 64 EntityGrid images, 30 steps, with the
    per-stage stopwatch on (``SHIRG_STAGE_TIMING=1``, synchronizing) and off (training's default); the mean of the
    logged rates after the first ``skip`` steps (None where a run failed)."""



    folder.mkdir(parents=True, exist_ok=True)
    ckpt = write_tiny_lavida_checkpoint(folder / "tiny", seed=0)
    data = folder / "data"
    env = dict(os.environ)
    if device.type == "cuda" and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = str(device.index or 0)
    subprocess.run([sys.executable, "-m", "shirg.cli", "entitygrid", "--preset", "small", "--n", "64", "--seed", "5",
                    "--out", str(data)], check=True, env=env, stdout=subprocess.DEVNULL)
    mix = folder / "mix.yaml"
    mix.write_text(f"sources:\n  - {{name: eg, json: {data / 'llava_train.json'}, image_root: {data}}}\n")
    config = {
        "model": {"path": str(ckpt), "dtype": "float32"},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "vision_layers": [0, 1]},
        "trainable": {"components": ["coord"]},
        "optim": {"lr_lora": 1e-3, "lr_other": 1e-3, "warmup_steps": 0, "schedule": "constant", "max_grad_norm": 1.0},
        "data": {"mode": "shirg", "resolutions": [336], "answer_length": 8, "mixture": str(mix)},
        "run": {"seed": 0, "batch_size": 8, "grad_accum": 1, "max_steps": steps, "checkpoint_every": 1000,
                "log_every": 1, "gradient_checkpointing": False, "mixed_precision": "no", "progress": False},
    }
    rates: dict[str, float | None] = {}
    for label, timing in (("with per-stage timing", "1"), ("without per-stage timing", "0")):
        run = folder / f"run-timing{timing}"
        cfg = {**config, "run": {**config["run"], "output_dir": str(run)}}
        path = folder / f"train-timing{timing}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        done = subprocess.run([sys.executable, "-m", "shirg.cli", "train", "--config", str(path)],
                              env={**env, "SHIRG_STAGE_TIMING": timing}, stdout=subprocess.DEVNULL)
        metrics = run / "metrics.jsonl"
        if done.returncode != 0 or not metrics.is_file():
            rates[label] = None
            continue
        logged = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        later = [r["samples_per_s"] for r in logged if r["step"] > skip]
        rates[label] = statistics.mean(later) if later else None
    return rates


def check_modes(text: str | None, default: str) -> list[str]:
    modes = [m.strip() for m in (text or default).split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"unknown mode(s) {', '.join(bad) or text!r}; valid modes: {', '.join(MODES)}")
    return modes


def speed_run(load, formats: list[str], modes: list[str], batches: list[int], samplers: list[str], gen: dict,
              threshold: float, repeats: int, device, image_path: str | None, command: str, out: str | None) -> int:
    """Every (format, mode, batch, sampler) timed; ``load(fmt)`` -> (model, description). Prints the
    table and writes bench_speed.json / .md to ``out``."""
    for fmt in formats:  # a format without a kernel here fails before any model is built
        resolve_load(fmt, device, gen.get("dtype"))
    image = load_image(image_path) if image_path else None
    gen = {k: v for k, v in gen.items() if k not in ("sampler", "threshold", "dtype")}
    rows, sources = [], {}
    for fmt in formats:
        model, sources[fmt] = load(fmt)
        info = {"format": fmt, "dtype": str(model.dtype).replace("torch.", ""),
                "weight_bytes": weight_bytes(model),
                "llm_linear_bytes": sum(tensor_bytes(lin.weight) for lin in llm_linears(model).values())}
        for mode in tqdm(modes, desc=f"{fmt} modes", unit="mode"):
            for b in batches:
                for smp in samplers:
                    g = {**gen, "sampler": smp, "threshold": threshold}
                    rows.append({**info, "sampler": smp, **measure(model, mode, b, g, repeats, image)})
        del model
    base: dict = {}
    for r in rows:  # the first row of the first format and sampler (a format may be listed twice)
        if r["format"] == formats[0] and r["sampler"] == samplers[0]:
            base.setdefault((r["mode"], r["batch"]), r)
    for r in rows:
        ref = base[(r["mode"], r["batch"])]
        r["bytes_x_first"] = r["llm_linear_bytes"] / ref["llm_linear_bytes"]
        r["step_x_first"] = r["step_ms"] / ref["step_ms"]
        r["total_x_first"] = r["latency_ms"] / ref["latency_ms"]
    result = {"command": command, "models": sources, "device": str(device),
              "torch_threads": torch.get_num_threads(), "formats": formats, "batches": batches,
              "steps": gen.get("steps"), "samplers": samplers, "threshold": threshold,
              "gen_length": gen.get("gen_length"), "repeats": repeats, "rows": rows}
    table = speed_markdown(result)
    print(table)
    if out:
        write_json(Path(out) / "bench_speed.json", result)
        write_text(Path(out) / "bench_speed.md", table + "\n")
        print(f"wrote {Path(out) / 'bench_speed.json'}, {Path(out) / 'bench_speed.md'}")
    return 0


def gpu_suite(load, device, weight_format: str | None, modes_text: str | None, repeats: int, out_dir: str | None,
              command: str) -> int:
    """The whole suite; about 5 minutes on one H100/H200 (one model build and quantization per format,
    4 modes x (1 warm-up + ``repeats``) answers each, two 30-step tiny training runs).
    ``load(fmt)`` builds the lavida-8b preset in bf16 with ``fmt`` weights."""
    if not torch.cuda.is_available():
        raise ConfigError("--gpu-suite needs a CUDA GPU (H100/H200) and this machine has none; "
                          "on CPU use shirg bench --preset cpu-small --weight-format float,int8")
    if device.type != "cuda":
        raise ConfigError(f"--gpu-suite runs on CUDA, not {device.type}; drop --device")
    out = Path(out_dir or "runs/gpu-suite")
    formats = parse_formats(weight_format, ",".join(SUITE_FORMATS))
    modes = check_modes(modes_text, ",".join(SUITE_MODES))
    caches = suite_caches()
    steps, gen_length = 30, 32
    name = torch.cuda.get_device_name(device)
    floor_gpu = "h200" if "H200" in name.upper() else "h100"
    cfg = LavidaConfig.from_dict(preset_config("lavida-8b"))
    rows, errors = [], {}
    for fmt in formats:
        torch.cuda.empty_cache()
        try:  # one format failing (a missing kernel, out of memory) must not lose the others' numbers
            model, _ = load(fmt)
            rows += suite_format(model, cfg, fmt, modes, caches, steps, gen_length, repeats, floor_gpu)
            # the allocator history (stack traces per allocation) would slow the timed answers: one more
            # shirg answer is recorded on its own
            torch.cuda.memory._record_memory_history(max_entries=100_000)
            suite_format(model, cfg, fmt, ["shirg"], ["prefix"], steps, gen_length, 0, floor_gpu)
            out.mkdir(parents=True, exist_ok=True)
            torch.cuda.memory._dump_snapshot(str(out / f"memory_snapshot_{fmt}.pickle"))
        except Exception as e:  # noqa: BLE001 - recorded in the result and the table
            errors[fmt] = f"{type(e).__name__}: {e}"
            print(f"[{fmt}] failed: {errors[fmt]}")
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
            model = None
            torch.cuda.empty_cache()
    train = suite_train(out / "train", device)
    result = {"command": command, "model": "preset lavida-8b (random weights)", "device": name,
              "floor_gpu": floor_gpu, "steps": steps, "gen_length": gen_length, "repeats": repeats,
              "caches": caches, "rows": rows, "train": train,
              "snapshots": [f"memory_snapshot_{f}.pickle" for f in formats if f not in errors]}
    result["errors"] = errors
    result["notes"] = ([] if "none" in caches else
                       ["Cache none is not compared: this version's answer() has no cache=none option."])
    result["notes"] += [f"{fmt} failed: {msg}" for fmt, msg in errors.items()]
    result["targets"] = suite_targets(rows)
    table = suite_markdown(result)
    print(table)
    write_json(out / "gpu_suite.json", result)
    write_text(out / "gpu_suite.md", table + "\n")
    print(f"wrote {out / 'gpu_suite.json'}, {out / 'gpu_suite.md'} and allocator snapshots (pytorch.org/memory_viz)")
    return 0


