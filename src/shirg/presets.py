"""Model presets with random weights, for benchmarks: latency and memory do not depend on weight
values, so LaViDa-8B's exact shapes can be timed without downloading anything.

- ``tiny``: the test checkpoint's sizes (CI smoke runs).
- ``cpu-small``: LaViDa's real token geometry (patch 14; 384 views, 672 canvas, anyres) with
  reduced width and depth, so a CPU run finishes in minutes.
- ``lavida-8b``: LaViDa-LLaDA-8B exactly (SigLIP so400m with 26 layers, LLaDA 32 x 4096, vocab
  126464), built directly on the target device in the target dtype.
"""

from __future__ import annotations

import tempfile

import torch

from shirg.errors import ConfigError, resolve_device
from shirg.model.lavida import LavidaConfig, LavidaModel
from shirg.model.loading import load_tokenizer
from shirg.model.quantize import apply_weight_format, resolve_load
from shirg.testing import build_tiny_tokenizer, tiny_lavida_config
from shirg.vision.siglip import SO400M

LAVIDA_8B_LLM = dict(
    d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, rope_theta=500000.0,
    rms_norm_eps=1e-5, vocab_size=126464, embedding_size=126464, mask_token_id=126336, eos_token_id=126081,
    eot_token_id=126348,
)

PRESETS = {
    "tiny": {},
    "cpu-small": dict(
        d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, mlp_hidden_size=1536, mm_hidden_size=384,
        vision_config=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=6),
    ),
    "lavida-8b": dict(**LAVIDA_8B_LLM, mm_hidden_size=1152, vision_config=dict(SO400M)),
}


def preset_config(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    overrides = dict(PRESETS[name])
    if name != "lavida-8b":
        # the tiny tokenizer's special ids must stay inside the smaller vocabulary
        overrides.pop("mask_token_id", None)
    return tiny_lavida_config(**overrides)


@torch.no_grad()
def build_preset(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0, weight_format: str | None = None) -> LavidaModel:
    """A LavidaModel of the preset's shapes with N(0, 0.02) weights, made on ``device`` in ``dtype``;
    ``weight_format`` (see :mod:`shirg.model.quantize`) quantizes its language model's linears, and
    "bf16" / "int4" build in bfloat16 when ``dtype`` is None."""
    if weight_format not in (None, "float"):
        dtype = resolve_load(weight_format, device, dtype)
    elif dtype is None:
        dtype = torch.float32
    cfg = preset_config(name)
    config = LavidaConfig.from_dict(cfg)
    device = resolve_device(device)
    with torch.device("meta"):
        model = LavidaModel(config)
    # dtype first, still on meta: the 8B preset is allocated once, directly in bf16 on the device
    model = model.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    for pname, p in model.named_parameters():
        if "norm" in pname and pname.endswith("weight"):
            p.fill_(1.0)
        elif pname.endswith("bias") or "coord_out" in pname:
            p.zero_()
        else:
            p.normal_(0.0, 0.02, generator=gen)
    model.model.vision_tower.rebuild_buffers(device)
    with tempfile.TemporaryDirectory(prefix="shirg-tok-") as tok_dir:
        build_tiny_tokenizer(tok_dir)
        model.tokenizer = load_tokenizer(tok_dir)  # a fast tokenizer keeps everything in memory
    return apply_weight_format(model.eval(), weight_format)
