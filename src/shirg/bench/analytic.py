"""`shirg bench --analytic`: a roofline model of LaViDa-LLaDA-8B, stage by stage, for every visual mode.

The numbers come from the real config (``shirg.presets.preset_config("lavida-8b")``) and a handful of
formulas, each named in its function's docstring. Conventions:

- FLOPs: a multiply-add is 2 FLOPs, so a linear layer costs 2 * params * tokens; attention of
  ``q`` query tokens against ``k`` key tokens costs 4 * q * k * width per layer (Q K^T and A V).
- Bytes moved: weights read once per stage (batch 1) plus prefix KV written (prefill) or read
  (every cached step). Activation traffic is left out, so every time here is a lower bound.
- Roofline time of a stage = max(FLOPs / peak FLOP/s, bytes / HBM bandwidth) on the named GPU.
- Memory: weights + prefix KV + the peak transient activations (SDPA without a materialized score
  matrix, no gradients). GB = 1e9 bytes, MiB = 2**20 bytes.
- Batch 1, bf16 weights and KV, one square image (e.g. 1000 x 1000): ``lavida`` then picks the
  (768, 768) pinpoint, base view + 2 x 2 tiles = 5 views, 196 + 28 * (28 + 1) = 1008 tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from shirg.bench.hardware import ANALYTIC_MODES, GPU, GPUS
from shirg.canvas import DEFAULT_RESOLUTION
from shirg.errors import ConfigError
from shirg.model.lavida import LavidaConfig
from shirg.model.options import MODES
from shirg.presets import preset_config
from shirg.tokens.registry import strategy_spec
from shirg.vision.preprocess import PATCH

DEFAULT_MODES = ANALYTIC_MODES

BF16 = 2  # bytes per value


QUESTION_TOKENS = 16  # question tokens SHIRG's text score compares against (cosine; negligible cost)

# The project's efficiency targets for SHIRG (docs/method.md) that the model is held against.
CLAIM_30_STEPS_S = 0.050
CLAIM_TOTAL_MEMORY = 8.9e9
TARGETS = (
    # (name, metric, reference mode, limit)
    ("latency shirg <= 1.35x lowres", "latency_cached", "lowres", 1.35),
    ("latency shirg <= 0.66x full", "latency_cached", "full", 0.66),
    ("memory shirg <= 1.17x lowres", "memory_total", "lowres", 1.17),
    ("memory shirg <= 1.17x lowres", "memory_act_kv", "lowres", 1.17),
    ("memory shirg <= 0.45x full", "memory_act_kv", "full", 0.45),
    ("memory shirg <= 0.45x full", "memory_total", "full", 0.45),
)


@dataclass(frozen=True)
class Geometry:
    """What one mode feeds through the model for one square image."""

    mode: str
    views: int  # SigLIP passes (batched)
    view_side: int  # pixels per view side
    scored_tokens: int  # tokens projected only to score them (SHIRG / text-topk text relevance)
    projected_tokens: int  # tokens through the projector
    visual_tokens: int  # tokens spliced into the prompt
    note: str


def mode_geometry(mode: str, resolution: int = 672, k: int | None = None) -> Geometry:
    """Token geometry of each mode (docs/lavida_facts.md, docs/method.md); strategies from the registry."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    grid = resolution // PATCH
    hi = grid * grid
    scaffold = math.ceil(grid / 4) ** 2
    k = k if k is not None else round(hi / 3)
    if mode == "lowres":
        return Geometry(mode, 1, 384, 0, 729, 196 + 1, "one 384 view, pooled 27->14, + 1 newline")
    if mode == "lavida":
        return Geometry(mode, 5, 384, 0, 5 * 729, 196 + 28 * 29, "square image: base + 2x2 tiles, unpad + newlines")
    if mode == "full":
        return Geometry(mode, 1, resolution, 0, hi, hi, f"all {grid}x{grid} tokens at {resolution}")
    spec = strategy_spec(mode)
    kept = scaffold + spec.kept_tokens(k)
    if spec.reads_question:
        return Geometry(mode, 1, resolution, hi, kept, kept,
                        f"scaffold {scaffold} + K {k}; all {hi} projected once more to score them")
    if spec.kept == "square":
        p = round(math.sqrt(k))
        return Geometry(mode, 1, resolution, 0, kept, kept, f"scaffold {scaffold} + {p}x{p}")
    return Geometry(mode, 1, resolution, 0, kept, kept, f"scaffold {scaffold} + K {k}")


# ----------------------------------------------------------------------------- parameters and bytes


def llm_params(llm) -> dict[str, int]:
    """LLaDA parameters. Per block: 4 d^2 (q, k, v, out; k/v are d x kv_width) + 3 d f (gate, up,
    down) + 2 d (two RMSNorm weights); plus wte and the untied LM head (E x d each) and ln_f (d)."""
    d, f = llm.d_model, llm.mlp_hidden_size
    kv_width = llm.n_kv_heads * (d // llm.n_heads)
    matmuls = 2 * d * d + 2 * d * kv_width + 3 * d * f
    parts = {
        "blocks": llm.n_layers * (matmuls + 2 * d),
        "embedding": llm.embedding_size * d,
        "lm_head": llm.embedding_size * d,
        "final_norm": d,
    }
    parts["total"] = sum(parts.values())
    parts["block_matmuls"] = llm.n_layers * matmuls  # the weights that cost FLOPs (norms are elementwise)
    return parts


def vision_params(vc) -> int:
    """SigLIP tower as LaViDa keeps it: patch conv (3 p^2 h + h), position table (n h), per layer
    4 (h^2 + h) attention + (2 h f + f + h) MLP + 4 h LayerNorms, and post-LN (2 h)."""
    h, f, p = vc.hidden_size, vc.intermediate_size, vc.patch_size
    n = (vc.image_size // p) ** 2
    layer = 4 * (h * h + h) + 2 * h * f + f + h + 4 * h
    return 3 * p * p * h + h + n * h + vc.num_hidden_layers * layer + 2 * h


def projector_params(mm_hidden: int, d: int) -> int:
    """mlp2x_gelu: Linear(mm_hidden -> d) + Linear(d -> d), with biases."""
    return mm_hidden * d + d + d * d + d


def kv_bytes_per_token(llm, bytes_per_value: int = BF16) -> int:
    """Prefix KV per token = layers x 2 (K and V) x kv_width x bytes (32 x 2 x 4096 x 2 B = 0.5 MiB)."""
    return llm.n_layers * 2 * llm.n_kv_heads * (llm.d_model // llm.n_heads) * bytes_per_value


# ----------------------------------------------------------------------------- FLOPs per stage


@dataclass
class Cost:
    flops: float
    bytes: float

    def seconds(self, gpu: GPU) -> float:
        """Roofline: max(FLOPs / peak, bytes / bandwidth)."""
        return max(self.flops / gpu.peak_flops, self.bytes / gpu.bandwidth)


def linear_flops(params: int, tokens: int) -> float:
    """2 FLOPs per weight per token."""
    return 2.0 * params * tokens


def attention_flops(layers: int, q_tokens: int, kv_tokens: int, width: int) -> float:
    """Q K^T plus A V: 2 * q * k * width each, per layer."""
    return 4.0 * layers * q_tokens * kv_tokens * width


def vision_cost(vc, views: int, side: int) -> Cost:
    """SigLIP on ``views`` images of side x side: linear layers 2 * params * tokens plus the quadratic
    attention term 4 * layers * N^2 * h per view; weights read once for the batch."""
    n = (side // vc.patch_size) ** 2
    h, f, layers = vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers
    matmul = 3 * vc.patch_size**2 * h + layers * (4 * h * h + 2 * h * f)
    flops = views * (linear_flops(matmul, n) + attention_flops(layers, n, n, h))
    return Cost(flops, vision_params(vc) * BF16)


def llm_cost(cfg, q_tokens: int, kv_tokens: int, head_tokens: int, kv_io_tokens: int) -> Cost:
    """LLaDA blocks over ``q_tokens`` attending to ``kv_tokens``; LM head on ``head_tokens``.
    Bytes: block weights, the LM head if used, and ``kv_io_tokens`` of prefix KV written or read."""
    llm = cfg.llm
    p = llm_params(llm)
    flops = linear_flops(p["block_matmuls"], q_tokens) + attention_flops(llm.n_layers, q_tokens, kv_tokens, llm.d_model)
    flops += linear_flops(p["lm_head"], head_tokens)
    weights = p["blocks"] + p["final_norm"] + (p["lm_head"] if head_tokens else 0)
    return Cost(flops, weights * BF16 + kv_io_tokens * kv_bytes_per_token(llm))


def activation_bytes(cfg, geo: Geometry, prefix: int, answer: int, cached: bool) -> dict[str, float]:
    """Peak transient activations per stage, bf16, no grad, SDPA (no materialized score matrix):
    a transformer layer holds residual + normed input (2 width) + its MLP's live tensors
    (SigLIP: fc1 out + GELU out = 2 f; LLaDA: gate, up, silu(gate) * up = 3 f) for every token;
    a denoising step also holds fp32 logits and their softmax (2 x answer x vocab x 4 B)."""
    vc, llm = cfg.vision, cfg.llm
    n = (geo.view_side // vc.patch_size) ** 2
    vision = geo.views * n * (2 * vc.hidden_size + 2 * vc.intermediate_size) * BF16
    layer = 2 * llm.d_model + 3 * llm.mlp_hidden_size
    step_tokens = answer if cached else prefix + answer
    return {
        "vision": vision,
        "prefill": prefix * layer * BF16,
        "step": step_tokens * layer * BF16 + 2 * answer * llm.vocab_size * 4,
    }


# ----------------------------------------------------------------------------- the model of one mode


def analyze_mode(cfg, geo: Geometry, gpu: GPU, steps: int, answer: int, text_tokens: int) -> dict:
    """Every stage's FLOPs, bytes and roofline seconds, memory split and totals for one mode."""
    llm = cfg.llm
    d = llm.d_model
    proj = projector_params(cfg.mm_hidden_size, d)
    prefix = geo.visual_tokens + text_tokens
    stages = {
        "vision": vision_cost(cfg.vision, geo.views, geo.view_side),
        "select": Cost(linear_flops(proj, geo.scored_tokens) + 2.0 * geo.scored_tokens * QUESTION_TOKENS * d,
                       proj * BF16 if geo.scored_tokens else 0),
        "project": Cost(linear_flops(proj, geo.projected_tokens), proj * BF16),
        "prefill": llm_cost(cfg, prefix, prefix, 0, prefix),
        "step_cached": llm_cost(cfg, answer, prefix + answer, answer, prefix),
        "step_uncached": llm_cost(cfg, prefix + answer, prefix + answer, answer, 0),
    }
    sec = {k: c.seconds(gpu) for k, c in stages.items()}
    front = sec["vision"] + sec["select"] + sec["project"]
    kv = prefix * kv_bytes_per_token(llm)
    weights = weight_bytes(cfg)
    act = activation_bytes(cfg, geo, prefix, answer, cached=True)
    act_uncached = activation_bytes(cfg, geo, prefix, answer, cached=False)
    return {
        "mode": geo.mode,
        "geometry": asdict(geo),
        "prefix_tokens": prefix,
        "stages": {k: {"flops": c.flops, "bytes": c.bytes, "seconds": sec[k],
                       "bound": _bound(c, gpu)}
                   for k, c in stages.items()},
        "latency_cached_s": front + sec["prefill"] + steps * sec["step_cached"],
        "latency_uncached_s": front + steps * sec["step_uncached"],
        "kv_bytes": kv,
        "activation_bytes": max(act.values()),
        "activation_bytes_uncached": max(act_uncached.values()),
        "weight_bytes": weights,
        "memory_total_bytes": weights + kv + max(act.values()),
        "memory_act_kv_bytes": kv + max(act.values()),
    }


def _bound(cost: Cost, gpu: GPU) -> str:
    if not cost.flops and not cost.bytes:
        return "-"
    return "compute" if cost.flops / gpu.peak_flops >= cost.bytes / gpu.bandwidth else "memory"


def weight_bytes(cfg) -> int:
    """All weights in bf16: LLaDA + SigLIP + projector + image_newline (SHIRG's 0.15 M coordinate
    embedding is left out: it is not part of LaViDa)."""
    d = cfg.llm.d_model
    params = llm_params(cfg.llm)["total"] + vision_params(cfg.vision) + projector_params(cfg.mm_hidden_size, d) + d
    return params * BF16


def step_floor_s(cfg, gpu: GPU) -> dict[str, float]:
    """Lower bound of one cached step: the weights it must stream (every block + ln_f + LM head; the
    embedding table is a gather of a few rows) / bandwidth; and the spec's round version, all LLaDA
    weights (16.03 GB) / bandwidth."""
    p = llm_params(cfg.llm)
    streamed = (p["blocks"] + p["final_norm"] + p["lm_head"]) * BF16
    return {"step_weight_bytes": streamed, "step_floor_s": streamed / gpu.bandwidth,
            "llm_weight_bytes": p["total"] * BF16, "llm_weights_over_bandwidth_s": p["total"] * BF16 / gpu.bandwidth}


def analyze(cfg, modes: list[str], gpu: GPU, steps: int, answer: int, text_tokens: int, resolution: int = 672) -> dict:
    """The whole report: per-mode rows, the checklist's claims and targets with verdicts."""
    rows = [analyze_mode(cfg, mode_geometry(m, resolution), gpu, steps, answer, text_tokens) for m in modes]
    by_mode = {r["mode"]: r for r in rows}
    for r in rows:
        for ref in ("lowres", "full"):
            if ref in by_mode:
                base = by_mode[ref]
                r[f"latency_cached_vs_{ref}"] = r["latency_cached_s"] / base["latency_cached_s"]
                r[f"latency_uncached_vs_{ref}"] = r["latency_uncached_s"] / base["latency_uncached_s"]
                r[f"memory_total_vs_{ref}"] = r["memory_total_bytes"] / base["memory_total_bytes"]
                r[f"memory_act_kv_vs_{ref}"] = r["memory_act_kv_bytes"] / base["memory_act_kv_bytes"]
    floor = step_floor_s(cfg, gpu)
    weights = weight_bytes(cfg)
    spec_ms = floor["llm_weights_over_bandwidth_s"] * 1e3
    claims = [{
        "claim": f"{steps} cached steps in {CLAIM_30_STEPS_S * 1e3:.0f} ms",
        "claimed_s": CLAIM_30_STEPS_S,
        "floor_s": steps * floor["step_floor_s"],
        "floor_spec_s": steps * floor["llm_weights_over_bandwidth_s"],
        "below_floor": CLAIM_30_STEPS_S < steps * floor["step_floor_s"],
        "why": (f"each cached step streams {floor['step_weight_bytes'] / 1e9:.2f} GB of weights: "
                f">= {floor['step_floor_s'] * 1e3:.2f} ms per step on {gpu.name} "
                f"(all {floor['llm_weight_bytes'] / 1e9:.2f} GB of LLaDA: {spec_ms:.2f} ms)"),
    }]
    if "shirg" in by_mode:
        s = by_mode["shirg"]
        room = CLAIM_TOTAL_MEMORY - s["kv_bytes"] - s["activation_bytes"]
        bits = 8 * room / (weights / BF16)
        claims.append({
            "claim": f"{CLAIM_TOTAL_MEMORY / 1e9:.1f} GB total memory (shirg)",
            "claimed_bytes": CLAIM_TOTAL_MEMORY,
            "weight_bytes": weights,
            "kv_bytes": s["kv_bytes"],
            "activation_bytes": s["activation_bytes"],
            "total_bytes": s["memory_total_bytes"],
            "possible_in_bf16": s["memory_total_bytes"] <= CLAIM_TOTAL_MEMORY,
            "max_bits_per_weight": bits,
            "why": f"bf16 weights alone are {weights / 1e9:.2f} GB; fitting needs <= {bits:.1f} bits per weight",
        })
    targets = []
    if "shirg" in by_mode:
        for name, metric, ref, limit in TARGETS:
            if ref not in by_mode:
                continue
            ratio = by_mode["shirg"][f"{metric}_vs_{ref}"]
            targets.append({"target": name, "metric": metric, "limit": limit, "predicted": ratio,
                            "met": ratio <= limit, "why": _target_why(metric, ratio, limit, by_mode, ref)})
    return {
        "model": "LaViDa-LLaDA-8B (shirg.presets 'lavida-8b' config), batch 1, bf16 weights and KV",
        "gpu": asdict(gpu),
        "steps": steps,
        "gen_length": answer,
        "text_tokens": text_tokens,
        "resolution": resolution,
        "image": "square (e.g. 1000 x 1000): lavida uses the (768, 768) pinpoint, 5 views, 1008 tokens",
        "params": {"llm": llm_params(cfg.llm), "vision": vision_params(cfg.vision),
                   "projector": projector_params(cfg.mm_hidden_size, cfg.llm.d_model)},
        "weight_bytes": weights,
        "kv_bytes_per_token": kv_bytes_per_token(cfg.llm),
        **floor,
        "rows": rows,
        "claims": claims,
        "targets": targets,
    }


def _target_why(metric: str, ratio: float, limit: float, by_mode: dict, ref: str) -> str:
    s, r = by_mode["shirg"], by_mode[ref]
    if metric == "latency_cached":
        if ratio > limit:
            return (f"every cached step streams all weights in both modes; without the cache the ratio would be "
                    f"{s[f'latency_uncached_vs_{ref}']:.2f}")
        return f"{s['latency_cached_s'] * 1e3:.0f} vs {r['latency_cached_s'] * 1e3:.0f} ms"
    if metric == "memory_total":
        return f"weights {s['weight_bytes'] / 1e9:.2f} GB dominate both modes"
    return (f"KV {s['kv_bytes'] / 2**20:.0f} vs {r['kv_bytes'] / 2**20:.0f} MiB, "
            f"activations {s['activation_bytes'] / 2**20:.0f} vs {r['activation_bytes'] / 2**20:.0f} MiB")


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    gpu = report["gpu"]
    out = [
        f"Roofline of {report['model']} on {gpu['name']} ({gpu['peak_flops'] / 1e12:.0f} TFLOP/s bf16 dense, "
        f"{gpu['bandwidth'] / 1e12:.2f} TB/s): {report['steps']} steps, {report['gen_length']} answer slots, "
        f"{report['text_tokens']} text tokens in the prompt, {report['image']}. Lower bounds (activation traffic "
        "left out).",
        "",
        f"Weights {report['weight_bytes'] / 1e9:.2f} GB in bf16 (LLaDA {report['llm_weight_bytes'] / 1e9:.2f} GB, "
        f"{report['params']['llm']['total']:,} params); prefix KV {report['kv_bytes_per_token'] / 2**20:.2f} MiB "
        f"per token; a cached step streams {report['step_weight_bytes'] / 1e9:.2f} GB of weights.",
        "",
    ]
    cols = ["mode", "visual", "prefix", "vision ms", "select ms", "project ms", "prefill ms", "step ms (cache)",
            "step ms (no cache)", f"{report['steps']} steps + rest ms (cache)", "no cache ms", "KV MiB",
            "act MiB", "total GB", "lat x lowres", "lat x full", "act+KV x lowres", "act+KV x full"]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report["rows"]:
        st = r["stages"]
        cells = [r["mode"], str(r["geometry"]["visual_tokens"]), str(r["prefix_tokens"])]
        cells += [f"{st[s]['seconds'] * 1e3:.2f}" for s in ("vision", "select", "project", "prefill",
                                                            "step_cached", "step_uncached")]
        cells += [f"{r['latency_cached_s'] * 1e3:.1f}", f"{r['latency_uncached_s'] * 1e3:.1f}",
                  f"{r['kv_bytes'] / 2**20:.0f}", f"{r['activation_bytes'] / 2**20:.0f}",
                  f"{r['memory_total_bytes'] / 1e9:.2f}"]
        cells += [f"{r[k]:.2f}" if k in r else "-" for k in ("latency_cached_vs_lowres", "latency_cached_vs_full",
                                                            "memory_act_kv_vs_lowres", "memory_act_kv_vs_full")]
        out.append("| " + " | ".join(cells) + " |")
    names = ("vision", "select", "project", "prefill", "step_cached", "step_uncached")
    out += ["", "FLOPs and bytes moved per stage (GFLOP / GB; a step is one denoising step):", "",
            "| mode | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for r in report["rows"]:
        out.append(f"| {r['mode']} | " + " | ".join(_flops_cell(r["stages"][s]) for s in names) + " |")
    out += ["", "(c) compute-bound, (m) memory-bound on this GPU.", "",
            "| checklist claim | physics | verdict |", "|---|---|---|"]
    for c in report["claims"]:
        if "floor_s" in c:
            verdict = "below the physical floor" if c["below_floor"] else "possible"
            out.append(f"| {c['claim']} | floor {c['floor_s'] * 1e3:.0f} ms ({c['why']}; spec: "
                       f"{c['floor_spec_s'] * 1e3:.1f} ms) | {verdict} |")
        else:
            verdict = "possible" if c["possible_in_bf16"] else "impossible without weight quantization"
            out.append(f"| {c['claim']} | weights {c['weight_bytes'] / 1e9:.2f} GB + KV {c['kv_bytes'] / 1e9:.2f} GB"
                       f" + activations {c['activation_bytes'] / 1e9:.2f} GB = {c['total_bytes'] / 1e9:.2f} GB "
                       f"({c['why']}) | {verdict} |")
    if report["targets"]:
        out += ["", "| checklist target | measure | roofline ratio | verdict | why |", "|---|---|---|---|---|"]
        for t in report["targets"]:
            verdict = "met" if t["met"] else "not met"
            out.append(f"| {t['target']} | {t['metric']} | {t['predicted']:.2f} | {verdict} | {t['why']} |")
    return "\n".join(out)


def _flops_cell(stage: dict) -> str:
    if stage["bound"] == "-":
        return "-"
    return f"{stage['flops'] / 1e9:,.0f} / {stage['bytes'] / 1e9:.2f} ({stage['bound'][0]})"


# ----------------------------------------------------------------------------- weight formats
# Roofline per weight format (the conventions above: batch 1, lower bounds,
# activation traffic left out). Only the language model's linears change format (what
# :mod:`shirg.model.quantize` quantizes); the embedding table, norms, tower and projector stay bf16.
# Bytes per linear weight:
#
# - bf16: 2.
# - int8: 1 + one fp32 scale and one int8 zero point per output row (5 / in_features).
# - int4: 0.5 + a bf16 scale and a bf16 zero per group of 128 weights (4 / 128).
#
# A cached denoising step streams every block's linears, the final norm and the LM head once; its
# floor is those bytes plus the prefix KV it reads, over the HBM bandwidth (FLOPs are ~1000x below the
# compute roof at 32 answer slots). The GPU suite measures the same stages on the real shapes and
# puts each measured time next to its floor.

INT4_GROUP = 128
ANALYTIC_FORMATS = ("bf16", "int8", "int4")


def linear_bytes_per_weight(fmt: str, in_features: int) -> float:
    """Bytes one weight of an ``in_features``-wide linear takes in ``fmt`` (see the module docstring)."""
    if fmt in ("bf16", "float"):
        return BF16
    if fmt == "int8":
        return 1.0 + 5.0 / in_features
    if fmt == "int4":
        return 0.5 + 2 * BF16 / INT4_GROUP
    raise ConfigError(f"unknown weight format {fmt!r}; valid formats: {', '.join(ANALYTIC_FORMATS)}")


def llm_linear_bytes(llm, fmt: str) -> dict[str, float]:
    """Bytes of the block linears and of the LM head in ``fmt`` (each linear at its own input width)."""
    d, f = llm.d_model, llm.mlp_hidden_size
    kv_width = llm.n_kv_heads * (d // llm.n_heads)
    # (params, in_features) of each block linear: q, k, v, out, gate, up (input d), down (input f)
    per_block = [(d * d, d), (d * kv_width, d), (d * kv_width, d), (d * d, d), (d * f, d), (d * f, d), (f * d, f)]
    blocks = llm.n_layers * sum(p * linear_bytes_per_weight(fmt, k) for p, k in per_block)
    head = llm.embedding_size * d * linear_bytes_per_weight(fmt, d)
    return {"blocks": blocks, "lm_head": head}


def model_weight_bytes(cfg, fmt: str) -> float:
    """Every weight of LaViDa with the LLM linears in ``fmt`` and the rest in bf16."""
    llm = cfg.llm
    p = llm_params(llm)
    lin = llm_linear_bytes(llm, fmt)
    norms = llm.n_layers * 2 * llm.d_model + p["final_norm"]
    rest = p["embedding"] + norms + vision_params(cfg.vision) + projector_params(cfg.mm_hidden_size, llm.d_model)
    return lin["blocks"] + lin["lm_head"] + (rest + llm.d_model) * BF16  # + image_newline


def llm_cost_fmt(cfg, fmt: str, q_tokens: int, kv_tokens: int, head_tokens: int, kv_io_tokens: int) -> Cost:
    """:func:`llm_cost` with the linears' bytes in ``fmt``."""
    llm = cfg.llm
    p = llm_params(llm)
    lin = llm_linear_bytes(llm, fmt)
    flops = linear_flops(p["block_matmuls"], q_tokens) + attention_flops(llm.n_layers, q_tokens, kv_tokens, llm.d_model)
    flops += linear_flops(p["lm_head"], head_tokens)
    norms = (llm.n_layers * 2 * llm.d_model + p["final_norm"]) * BF16
    weights = lin["blocks"] + norms + (lin["lm_head"] if head_tokens else 0)
    return Cost(flops, weights + kv_io_tokens * kv_bytes_per_token(llm))


def stage_floors(cfg, mode: str, gpu: GPU, fmt: str, steps: float, answer: int, text_tokens: int,
                 resolution: int = 672) -> dict[str, float]:
    """Roofline seconds of every stage of one answer in ``mode`` with ``fmt`` weights (``denoise`` is
    ``steps`` cached steps; ``total`` their sum) and the memory floor (weights + KV + activations)."""
    geo = mode_geometry(mode, resolution)
    d = cfg.llm.d_model
    proj = projector_params(cfg.mm_hidden_size, d)
    prefix = geo.visual_tokens + text_tokens
    costs = {
        "vision": vision_cost(cfg.vision, geo.views, geo.view_side),
        "select": Cost(linear_flops(proj, geo.scored_tokens), proj * BF16 if geo.scored_tokens else 0),
        "project": Cost(linear_flops(proj, geo.projected_tokens), proj * BF16),
        "prefill": llm_cost_fmt(cfg, fmt, prefix, prefix, 0, prefix),
        "step": llm_cost_fmt(cfg, fmt, answer, prefix + answer, answer, prefix),
    }
    sec = {k: c.seconds(gpu) for k, c in costs.items()}
    sec["denoise"] = steps * sec["step"]
    sec["total"] = sum(sec[k] for k in ("vision", "select", "project", "prefill", "denoise"))
    kv = prefix * kv_bytes_per_token(cfg.llm)
    act = max(activation_bytes(cfg, geo, prefix, answer, cached=True).values())
    weights = model_weight_bytes(cfg, fmt)
    return {**{f"{k}_s": v for k, v in sec.items()}, "weight_bytes": weights, "kv_bytes": kv,
            "activation_bytes": act, "memory_bytes": weights + kv + act, "prefix_tokens": prefix}


def format_verdicts(cfg, formats, gpus, steps: int, expected_steps: float, answer: int, text_tokens: int,
                    resolution: int = 672, mode: str = "shirg") -> list[dict]:
    """Per weight format and GPU: can ``steps`` cached steps fit in 50 ms, and the whole answer in 8.9 GB?

    The step claim is judged on the denoising floor alone (``steps`` x step floor) and, at
    ``expected_steps`` (e.g. what the threshold sampler takes), the same floor scaled; memory on the
    ``mode`` answer's weights + KV + activations.
    """
    rows = []
    for fmt in formats:
        for name in gpus:
            gpu = GPUS[name]
            fl = stage_floors(cfg, mode, gpu, fmt, steps, answer, text_tokens, resolution)
            step = fl["step_s"]
            rows.append({
                "format": fmt, "gpu": name, "gpu_name": gpu.name, "mode": mode,
                "step_floor_s": step,
                "steps": steps, "steps_floor_s": steps * step,
                "steps_possible": steps * step <= CLAIM_30_STEPS_S,
                "expected_steps": expected_steps, "expected_steps_floor_s": expected_steps * step,
                "expected_steps_possible": expected_steps * step <= CLAIM_30_STEPS_S,
                "answer_floor_s": fl["total_s"] - fl["denoise_s"] + expected_steps * step,
                # after the image is encoded: the prefill and the denoising steps
                "after_encoding_floor_s": fl["prefill_s"] + expected_steps * step,
                "after_encoding_possible": fl["prefill_s"] + expected_steps * step <= CLAIM_30_STEPS_S,
                "weight_bytes": fl["weight_bytes"], "memory_bytes": fl["memory_bytes"],
                "memory_possible": fl["memory_bytes"] <= CLAIM_TOTAL_MEMORY,
            })
    return rows


def verdicts_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    steps, expected, mode = rows[0]["steps"], rows[0]["expected_steps"], rows[0]["mode"]
    same = math.isclose(steps, expected)
    cols = ["weights", "GPU", "weights GB", "step floor ms", f"{steps} steps floor ms", f"{steps} steps <= 50 ms"]
    if not same:
        cols += [f"{expected:g} steps floor ms", f"{expected:g} steps <= 50 ms"]
    cols += [f"prefill + {expected:g} steps ms", "<= 50 ms", f"{mode} answer floor ms", f"{mode} total GB",
             "total <= 8.9 GB"]
    lines = [f"Per weight format ({mode}, batch 1; LLM linears in the format, the rest bf16): is the checklist "
             "physically possible?", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    yes = {True: "possible", False: "below the floor"}
    fits = {True: "possible", False: "impossible"}
    for r in rows:
        cells = [r["format"], r["gpu"], f"{r['weight_bytes'] / 1e9:.2f}", f"{r['step_floor_s'] * 1e3:.2f}",
                 f"{r['steps_floor_s'] * 1e3:.1f}", yes[r["steps_possible"]]]
        if not same:
            cells += [f"{r['expected_steps_floor_s'] * 1e3:.1f}", yes[r["expected_steps_possible"]]]
        cells += [f"{r['after_encoding_floor_s'] * 1e3:.1f}", yes[r["after_encoding_possible"]],
                  f"{r['answer_floor_s'] * 1e3:.1f}", f"{r['memory_bytes'] / 1e9:.2f}", fits[r["memory_possible"]]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def analytic_report(
    gpu: str = "h100",
    modes: str | None = None,
    resolution: int | None = None,
    steps: int = 30,
    gen_length: int = 32,
    text_tokens: int = 64,
    weight_formats: str | None = None,
    expected_steps: int | None = None,
) -> tuple[dict, str]:
    """The roofline of LaViDa-8B per mode on ``gpu`` plus the per-weight-format verdicts on H100/H200:
    (report dict, Markdown text). Comma-separated ``modes`` / ``weight_formats`` (defaults: all)."""
    gpu_name = (gpu or "h100").lower()
    if gpu_name not in GPUS:
        raise ConfigError(f"unknown GPU {gpu!r}; valid GPUs: {', '.join(GPUS)}")
    mode_list = [m.strip() for m in (modes or DEFAULT_MODES).split(",") if m.strip()]
    resolution = resolution or DEFAULT_RESOLUTION  # no checkpoint here: LaViDa-8B at SHIRG's canvas
    geometries = [mode_geometry(m, resolution) for m in mode_list]  # validates every mode first
    if steps < 1 or gen_length < 1:
        raise ConfigError(f"--steps ({steps}) and --gen-length ({gen_length}) must be at least 1")
    cfg = LavidaConfig.from_dict(preset_config("lavida-8b"))
    report = analyze(cfg, [g.mode for g in geometries], GPUS[gpu_name], steps, gen_length, text_tokens, resolution)
    formats = [f.strip() for f in (weight_formats or ",".join(ANALYTIC_FORMATS)).split(",")]
    formats = ["bf16" if f == "float" else f for f in formats if f]
    expected = expected_steps or steps
    if expected <= 0:
        raise ConfigError(f"--expected-steps must be positive, got {expected}")
    report["formats"] = format_verdicts(cfg, formats, ("h100", "h200"), steps, expected, gen_length, text_tokens,
                                        resolution)
    return report, markdown(report) + "\n\n" + verdicts_markdown(report["formats"])
