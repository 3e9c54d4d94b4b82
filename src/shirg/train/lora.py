"""What is trained: PEFT LoRA targets (anchored regexes), fully trained components, parameter groups.

Module names are those of :class:`shirg.model.lavida.LavidaModel`: ``model.mm_projector.{0,2}``,
``model.vision_tower.vision_tower.vision_model.encoder.layers.{i}.self_attn.{q,k,v}_proj``,
``model.transformer.blocks.{i}.{q_proj,...}``. PEFT matches a string ``target_modules`` with
``re.fullmatch``, so the regex is anchored at both ends: bare names such as "q_proj" would also
hit the LLaDA blocks.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
from torch import nn

from shirg.errors import ConfigError
from shirg.model.lavida import LavidaModel
from shirg.train.config import LoraSection, TrainConfig

log = logging.getLogger(__name__)

PROJECTOR = "model.mm_projector"
VISION_LAYERS = "model.vision_tower.vision_tower.vision_model.encoder.layers"
LLM_BLOCKS = "model.transformer.blocks"
UNUSED_VISION = "model.vision_tower.vision_tower.vision_model.post_layernorm."
COMPONENT_PREFIXES = {
    "coord": ("shirg.coord_embed.",),
    "vision": ("model.vision_tower.",),
    "projector": ("model.mm_projector.", "model.image_newline"),
    "llm": ("model.transformer.",),
}


def _alt(items) -> str:
    return "(?:" + "|".join(re.escape(str(i)) for i in items) + ")"


def target_regex(lora: LoraSection, n_llm_layers: int) -> str:
    """One anchored regex over LavidaModel module names; PEFT applies it with re.fullmatch."""
    parts = []
    if lora.projector:
        parts.append(re.escape(PROJECTOR) + r"\." + _alt(lora.projector))
    if lora.vision_layers and lora.vision_targets:
        parts.append(re.escape(VISION_LAYERS) + r"\." + _alt(lora.vision_layers) + r"\.self_attn\."
                     + _alt(lora.vision_targets))
    llm_layers = range(n_llm_layers) if lora.llm_layers == "all" else lora.llm_layers
    if llm_layers and lora.llm_targets:
        parts.append(re.escape(LLM_BLOCKS) + r"\." + _alt(llm_layers) + r"\." + _alt(lora.llm_targets))
    if not parts:
        raise ConfigError("LoRA is enabled but targets nothing: "
                          "set lora.projector, lora.vision_layers or lora.llm_layers")
    return "^(?:" + "|".join(parts) + ")$"


def matched_modules(model: nn.Module, regex: str) -> list[str]:
    """Names of the Linear modules the regex selects (PEFT's own matching: re.fullmatch)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(regex, n)]


def analytic_lora_count(model: LavidaModel, regex: str, rank: int) -> int:
    """rank * (in + out) for every targeted Linear(in, out)."""
    mods = dict(model.named_modules())
    return sum(rank * (mods[n].in_features + mods[n].out_features) for n in matched_modules(model, regex))


@dataclass
class TrainableModel:
    """The model being trained: ``peft`` (a PeftModel, or None without LoRA) and ``lavida`` (the
    LavidaModel inside, whose Linear layers carry the LoRA weights in place)."""

    lavida: LavidaModel
    peft: nn.Module | None
    regex: str | None
    targets: list[str]

    @property
    def module(self) -> nn.Module:
        return self.peft if self.peft is not None else self.lavida

    def named_trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.lavida.named_parameters() if p.requires_grad]

    def trainable_count(self) -> int:
        return sum(p.numel() for _, p in self.named_trainable())


def make_trainable(model: LavidaModel, cfg: TrainConfig) -> TrainableModel:
    """Freeze everything, add LoRA where the config says, unfreeze the fully trained components.

    Trainable weights are kept in fp32 (the frozen base may be bf16; autocast handles the mix).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model, regex, targets = None, None, []
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        regex = target_regex(cfg.lora, model.config.llm.n_layers)
        targets = matched_modules(model, regex)
        if not targets:
            raise ConfigError(f"the LoRA regex {regex} matches no Linear module of this model; check lora.* layers")
        lora_config = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=regex, bias="none")
        peft_model = get_peft_model(model, lora_config, autocast_adapter_dtype=True)
    for name, p in model.named_parameters():
        if any(name.startswith(pre) for c in cfg.trainable.components for pre in COMPONENT_PREFIXES[c]):
            # LaViDa reads the tower before its post-LN: those weights get no gradient, and DDP
            # (find_unused_parameters off) would fail waiting for one
            if "lora_" not in name and not name.startswith(UNUSED_VISION):
                p.requires_grad_(True)
    for _, p in model.named_parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32 and p.device.type != "meta":
            p.data = p.data.float()
    return TrainableModel(lavida=model, peft=peft_model, regex=regex, targets=targets)


def parameter_groups(tm: TrainableModel, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: LoRA weights at lr_lora; fully trained vision at lr_vision; the rest at lr_other.
    Biases and norm weights get no weight decay."""
    o = cfg.optim
    lr_vision = o.lr_vision if o.lr_vision is not None else o.lr_other
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in tm.named_trainable():
        kind = "lora" if "lora_" in name else "vision" if name.startswith("model.vision_tower.") else "other"
        decay = p.dim() >= 2
        buckets.setdefault((kind, decay), []).append(p)
    lrs = {"lora": o.lr_lora, "vision": lr_vision, "other": o.lr_other}
    return [{"params": ps, "lr": lrs[kind], "weight_decay": o.weight_decay if decay else 0.0, "name": f"{kind}"}
            for (kind, decay), ps in sorted(buckets.items())]


def describe(tm: TrainableModel) -> str:
    """Exact trainable count, broken down, and the LoRA target modules."""
    by: dict[str, int] = {}
    for name, p in tm.named_trainable():
        key = "lora" if "lora_" in name else next(
            (c for c, pres in COMPONENT_PREFIXES.items() if any(name.startswith(x) for x in pres)), "other")
        by[key] = by.get(key, 0) + p.numel()
    total = tm.trainable_count()
    everything = sum(p.numel() for p in tm.lavida.parameters())
    lines = [f"trainable parameters: {total:,} of {everything:,} ({100 * total / max(everything, 1):.3f} %); "
             + ", ".join(f"{k} {v:,}" for k, v in sorted(by.items()))]
    if tm.targets:
        lines.append(f"LoRA regex: {tm.regex}")
        lines.append(f"LoRA targets ({len(tm.targets)}): " + ", ".join(tm.targets))
    return "\n".join(lines)
