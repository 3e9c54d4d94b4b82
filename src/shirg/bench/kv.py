"""What each prefix-KV storage format costs and changes, against the native cache (``shirg bench-kv``).

For one visual mode and a set of prompts, every format is built from the same prefix and compared
with the native cache: cache bytes (prefix only, and with the answer slots' own K/V at compute
precision), max / mean absolute reconstruction error of K and V, answer-slot logit drift, greedy
answer agreement, and the per-step time of a cached denoising step.
"""

from __future__ import annotations

import statistics
import time

import torch

from shirg.bench.latency import synthetic_chart
from shirg.errors import ConfigError
from shirg.model.kv_cache import cache_factory
from shirg.model.lavida import LavidaModel
from shirg.model.options import LAVIDA_MODES, VisualOptions
from shirg.model.prompt import prompt_token_ids
from shirg.model.sampler import generate
from shirg.model.visual import hires_visual, lavida_visual, splice

FORMATS = "native,fp16,bf16,int8,fp8"


def prompts(n: int):
    """``n`` (synthetic chart, question) pairs, the same on every run."""
    questions = ["What is the highest value?", "Which bar is the smallest?", "What is the title?",
                 "How many bars are there?", "What is the value of the third bar?", "What is the unit?"]
    return [(synthetic_chart(700 + 60 * i, 500 + 40 * (i % 4)), questions[i % len(questions)]) for i in range(n)]


def check_formats(formats: list[str]) -> dict:
    """Format -> cache factory; unknown or unavailable formats, or no ``native``, fail here."""
    factories = {f: cache_factory(f) for f in formats}
    if "native" not in formats:
        raise ConfigError("--formats must include native: every format is compared against it")
    return factories


@torch.no_grad()
def measure_formats(model: LavidaModel, mode: str, opts: VisualOptions, formats: list[str], n_prompts: int,
                    gen_length: int, steps: int, step_repeats: int) -> list[dict]:
    """One row per format: bytes, reconstruction errors, logit drift, answer agreement, step time."""
    factories = check_formats(formats)
    opts.validate(mode)
    core, vocab = model.model, model.config.llm.vocab_size
    mask_id = model.config.llm.mask_token_id
    stats: dict[str, dict[str, list[float]]] = {f: {} for f in formats}
    answers: dict[str, list[list[int]]] = {f: [] for f in formats}
    bytes_: dict[str, int] = {}
    for image, question in prompts(n_prompts):
        if mode in LAVIDA_MODES:
            visual = lavida_visual(model, [image], mode)
        else:
            visual = hires_visual(model, [image], [question], mode, opts)
        ids = prompt_token_ids(question, model.tokenizer)
        embeds, key_mask = splice(model, [ids], visual)
        caches = {f: core.prefill(embeds, key_mask, cache_factory=factories[f]) for f in formats}
        native = caches["native"]
        probe = torch.full((1, gen_length), mask_id, device=model.device)
        ref_logits = core.forward_cached(core.embed(probe), native)[..., :vocab].float()
        for f, cache in caches.items():
            bytes_[f] = cache.nbytes()
            s = stats[f]
            for i in range(len(cache)):
                for got, want, name in zip(cache.layer(i), native.layer(i), ("k", "v"), strict=True):
                    err = (got.float() - want.float()).abs()
                    s.setdefault(f"{name}_max_abs_err", []).append(err.max().item())
                    s.setdefault(f"{name}_mean_abs_err", []).append(err.mean().item())
            logits = core.forward_cached(core.embed(probe), cache)[..., :vocab].float()
            s.setdefault("logit_max_abs_drift", []).append((logits - ref_logits).abs().max().item())
            s.setdefault("logit_rel_drift", []).append(
                ((logits - ref_logits).abs().max() / ref_logits.std(-1).mean()).item())

            def logits_fn(a, cache=cache):
                return core.forward_cached(core.embed(a), cache)[..., :vocab]

            out = generate(logits_fn, 1, gen_length, steps, gen_length, mask_id, device=model.device)
            answers[f].append(out[0].tolist())
            times = []
            for _ in range(step_repeats):
                t0 = time.perf_counter()
                core.forward_cached(core.embed(probe), cache)
                if model.device.type == "cuda":
                    torch.cuda.synchronize(model.device)
                times.append(time.perf_counter() - t0)
            s.setdefault("step_ms", []).append(statistics.median(times) * 1e3)
    d = model.config.llm
    answer_kv = 2 * d.n_layers * d.n_kv_heads * d.head_dim * gen_length * model.dtype.itemsize
    rows = []
    for f in formats:
        s = stats[f]
        agree = sum(a == b for a, b in zip(answers[f], answers["native"], strict=True)) / len(answers[f])
        row = {"format": f, "prefix_bytes": bytes_[f], "total_bytes": bytes_[f] + answer_kv,
               "bytes_vs_native": bytes_[f] / bytes_["native"], "answer_agreement": agree}
        row |= {k: max(v) if "max" in k else statistics.mean(v) for k, v in s.items() if k != "step_ms"}
        row["step_ms"] = statistics.median(s["step_ms"])
        row["step_overhead_vs_native"] = row["step_ms"] / statistics.median(stats["native"]["step_ms"])
        rows.append(row)
    return rows


def table(result: dict) -> str:
    cols = ["format", "prefix MiB", "with answer MiB", "x native", "K max err", "V max err", "K mean err", "V mean err",
            "logit drift (rel)", "agreement", "step ms", "step x native"]
    lines = [f"{result['model']} on {result['device']} ({result['dtype']}), mode {result['mode']}, "
             f"{result['prompts']} prompts, {result['gen_length']} answer tokens", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        lines.append("| " + " | ".join([
            r["format"], f"{r['prefix_bytes'] / 2**20:.2f}", f"{r['total_bytes'] / 2**20:.2f}",
            f"{r['bytes_vs_native']:.3f}",
            f"{r['k_max_abs_err']:.2e}", f"{r['v_max_abs_err']:.2e}", f"{r['k_mean_abs_err']:.2e}",
            f"{r['v_mean_abs_err']:.2e}", f"{r['logit_rel_drift']:.2e}", f"{r['answer_agreement']:.2f}",
            f"{r['step_ms']:.2f}", f"{r['step_overhead_vs_native']:.2f}"]) + " |")
    return "\n".join(lines)
